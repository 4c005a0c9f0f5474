"""Shared pieces of the architectures: activations and norms by name, condition handling,
DCGAN initialisation and spectral normalisation."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm

LEAKY_SLOPE = 0.2  # DCGAN (Radford et al. 2015) and most GAN critics since


def activation(name: str | None) -> nn.Module:
    # None: a critic spec built outside a job spec, whose recipe would have named one.
    if name is None or name == "relu":
        return nn.ReLU()
    if name == "leaky_relu":
        return nn.LeakyReLU(LEAKY_SLOPE)
    if name == "elu":
        return nn.ELU()
    if name == "gelu":
        return nn.GELU()
    if name == "silu":
        return nn.SiLU()
    if name == "tanh":
        return nn.Tanh()
    raise ValueError(f"unknown activation {name!r}")


def norm1d(name: str, width: int) -> nn.Module:
    """Norm over the features of x [N, width]."""
    if name == "none":
        return nn.Identity()
    if name == "layer":
        return nn.LayerNorm(width)
    if name == "batch":
        return nn.BatchNorm1d(width)
    raise ValueError(f"unknown norm {name!r}")


def norm2d(name: str, channels: int) -> nn.Module:
    """Norm of feature maps [N, channels, H, W]; 'layer' is GroupNorm(1, C): per sample over
    C, H, W, so it does not mix samples (safe under a gradient penalty)."""
    if name == "none":
        return nn.Identity()
    if name == "layer":
        return nn.GroupNorm(1, channels)
    if name == "batch":
        return nn.BatchNorm2d(channels)
    raise ValueError(f"unknown norm {name!r}")


def dropout(p: float) -> nn.Module:
    return nn.Dropout(p) if p > 0 else nn.Identity()


def with_condition(x: Tensor, a: Tensor | None, n_conditions: int) -> Tensor:
    """[N, D], [N, C] -> [N, D + C]; unconditional models ignore `a`."""
    if n_conditions == 0:
        return x
    if a is None:
        raise ValueError(f"this model is conditional: pass a [N, {n_conditions}]")
    return torch.cat([x, a], dim=1)


def dcgan_init(module: nn.Module) -> None:
    """Radford et al. 2015: weights ~ N(0, 0.02); norm scales ~ N(1, 0.02); biases 0."""
    for m in module.modules():
        if isinstance(m, nn.Linear | nn.modules.conv._ConvNd):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d | nn.GroupNorm | nn.LayerNorm):
            if m.weight is not None:
                nn.init.normal_(m.weight, 1.0, 0.02)
                nn.init.zeros_(m.bias)


def apply_spectral_norm(module: nn.Module) -> nn.Module:
    """Miyato et al. 2018: every Linear / Conv weight W is used as W / sigma(W), sigma from one
    power iteration per training forward pass. In place; returns the module."""
    for m in list(module.modules()):
        if isinstance(m, nn.Linear | nn.modules.conv._ConvNd):
            spectral_norm(m)
    return module
