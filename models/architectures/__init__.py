"""Generators and critics by name. An architecture is one file with a `Generator` and a
`Critic` class, plus one line in ARCHITECTURES.

Generator(arch, n_features, n_conditions, image_shape): forward(z [N, latent_dim], a [N, C] |
None) -> x [N, F]; attributes latent_dim, n_features, n_conditions.
Critic(arch, n_features, n_conditions, image_shape, out_dim): forward(x [N, F], a [N, C] |
None) -> [N, out_dim], raw (no final activation).
"""

from __future__ import annotations

from typing import NamedTuple

from torch import nn

from models.architectures import dcgan, mlp, resmlp
from models.architectures.layers import apply_spectral_norm
from models.spec import ArchitectureSpec, auto_latent_dim


class Architecture(NamedTuple):
    generator: type[nn.Module]
    critic: type[nn.Module]


ARCHITECTURES: dict[str, Architecture] = {
    "mlp": Architecture(mlp.Generator, mlp.Critic),
    "resmlp": Architecture(resmlp.Generator, resmlp.Critic),
    "dcgan": Architecture(dcgan.Generator, dcgan.Critic),
}

__all__ = ["ARCHITECTURES", "Architecture", "build_critic", "build_generator"]


def _lookup(name: str) -> Architecture:
    if name not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {name!r}; known: {sorted(ARCHITECTURES)}")
    return ARCHITECTURES[name]


def build_generator(
    spec: ArchitectureSpec,
    n_features: int,
    n_conditions: int,
    image_shape: tuple[int, int, int] | None = None,
) -> nn.Module:
    if spec.latent_dim is None:  # null: as many noise dimensions as features
        spec = spec.model_copy(update={"latent_dim": auto_latent_dim(n_features, n_conditions)})
    return _lookup(spec.name).generator(spec, n_features, n_conditions, image_shape)


def build_critic(
    spec: ArchitectureSpec,
    n_features: int,
    n_conditions: int,
    image_shape: tuple[int, int, int] | None = None,
    out_dim: int = 1,
) -> nn.Module:
    critic = _lookup(spec.name).critic(spec, n_features, n_conditions, image_shape, out_dim)
    return apply_spectral_norm(critic) if spec.critic.spectral_norm else critic
