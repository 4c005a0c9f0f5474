"""Fully connected G and D: `depth` hidden layers of `width` units (Linear -> norm -> act ->
dropout). Conditioning concatenates a to the input of both nets (Mirza & Osindero 2014)."""

from __future__ import annotations

from torch import Tensor, nn

from models.architectures.layers import activation, dropout, norm1d, with_condition
from models.spec import ArchitectureSpec, NetSpec


def hidden_stack(net: NetSpec, n_in: int) -> nn.Sequential:
    """[N, n_in] -> [N, width]."""
    assert net.norm is not None  # filled when the ArchitectureSpec is validated
    layers: list[nn.Module] = []
    for i in range(net.depth):
        # A batch norm removes any bias added before it, so such a Linear has none.
        layers.append(nn.Linear(n_in if i == 0 else net.width, net.width, bias=net.norm != "batch"))
        layers += [norm1d(net.norm, net.width), activation(net.activation), dropout(net.dropout)]
    return nn.Sequential(*layers)


class Generator(nn.Module):
    def __init__(
        self,
        arch: ArchitectureSpec,
        n_features: int,
        n_conditions: int,
        image_shape: tuple[int, int, int] | None = None,
    ) -> None:
        super().__init__()
        assert arch.latent_dim is not None  # filled by build_generator
        self.latent_dim, self.n_features, self.n_conditions = arch.latent_dim, n_features, n_conditions
        self.body = hidden_stack(arch.generator, arch.latent_dim + n_conditions)
        # Linear output: the features are standardised, not bounded (also for flattened images).
        self.head = nn.Linear(arch.generator.width, n_features)

    def forward(self, z: Tensor, a: Tensor | None = None) -> Tensor:
        # z [N, latent_dim], a [N, C] -> [N, F]
        return self.head(self.body(with_condition(z, a, self.n_conditions)))


class Critic(nn.Module):
    def __init__(
        self,
        arch: ArchitectureSpec,
        n_features: int,
        n_conditions: int,
        image_shape: tuple[int, int, int] | None = None,
        out_dim: int = 1,
    ) -> None:
        super().__init__()
        self.n_features, self.n_conditions, self.out_dim = n_features, n_conditions, out_dim
        self.body = hidden_stack(arch.critic, n_features + n_conditions)
        self.head = nn.Linear(arch.critic.width, out_dim)

    def forward(self, x: Tensor, a: Tensor | None = None) -> Tensor:
        # x [N, F], a [N, C] -> [N, out_dim], raw
        return self.head(self.body(with_condition(x, a, self.n_conditions)))
