"""DCGAN (Radford et al. 2015) for square images of side 8, 16, 32 or 64, flattened at the
module boundary so that everything outside sees x [N, C*H*W].

G: [z, a] -> Linear -> 4x4 maps -> ConvTranspose(4, stride 2) up to H/2 -> ConvTranspose to
the image -> tanh (the images are min-max scaled to [-1, 1]). D: Conv(4, stride 2) down to 4x4,
no norm on the input layer (as in the paper), then phi(x) = the flattened 4x4 maps. `channels`
is the number of maps at the finest hidden level (H/2), doubling each time the side halves.

Conditioning: G concatenates a to z. D is a projection discriminator (Miyato & Koyama 2018),
out = psi(phi) + <embed(a), phi>, with a linear embed because a is a real vector (e.g. one-hot).
For out_dim k > 1 each output gets its own inner product: out = psi(phi) + U (embed(a) * phi),
U [k, D] (with k = 1 this is the paper's form with the embedding rescaled per feature).
"""

from __future__ import annotations

import math

from torch import Tensor, nn

from models.architectures.layers import activation, dcgan_init, dropout, norm2d, with_condition
from models.spec import ArchitectureSpec

SIDES = (8, 16, 32, 64)


def check_image(image_shape: tuple[int, int, int] | None, n_features: int) -> tuple[int, int, int]:
    if image_shape is None:
        raise ValueError("the dcgan architecture needs image data (image_shape is None)")
    c, h, w = image_shape
    if h != w or h not in SIDES or c < 1:
        raise ValueError(
            f"dcgan supports square images with side in {SIDES}; got image_shape (C, H, W) = "
            f"{tuple(image_shape)}"
        )
    if c * h * w != n_features:
        raise ValueError(f"image_shape {tuple(image_shape)} does not hold {n_features} features")
    return c, h, w


def level_channels(channels: int, side: int) -> list[int]:
    """Feature maps at sides 4, 8, ..., side/2: e.g. side 64 -> [8c, 4c, 2c, c]."""
    n_levels = int(math.log2(side)) - 2
    return [channels * 2 ** (n_levels - 1 - i) for i in range(n_levels)]


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
        self.image_shape = check_image(image_shape, n_features)
        net = arch.generator
        assert net.norm is not None  # filled when the ArchitectureSpec is validated
        chs = level_channels(net.channels, self.image_shape[1])
        bias = net.norm != "batch"  # a batch norm removes any bias before it
        self.c4 = chs[0]
        self.project = nn.Linear(arch.latent_dim + n_conditions, chs[0] * 16, bias=bias)
        layers: list[nn.Module] = [norm2d(net.norm, chs[0]), activation(net.activation),
                                   dropout(net.dropout)]
        for c_in, c_out in zip(chs[:-1], chs[1:], strict=True):
            layers += [
                nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1, bias=bias),  # side x2
                norm2d(net.norm, c_out), activation(net.activation), dropout(net.dropout),
            ]
        # No norm on the output layer (Radford et al.); tanh to the [-1, 1] data range.
        layers += [nn.ConvTranspose2d(chs[-1], self.image_shape[0], 4, stride=2, padding=1),
                   nn.Tanh()]
        self.up = nn.Sequential(*layers)
        dcgan_init(self)

    def forward(self, z: Tensor, a: Tensor | None = None) -> Tensor:
        # z [N, latent_dim], a [N, C] -> [N, c4 * 16] -> [N, c4, 4, 4] -> [N, C, H, W] -> [N, F]
        h = self.project(with_condition(z, a, self.n_conditions)).view(-1, self.c4, 4, 4)
        return self.up(h).flatten(1)


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
        self.image_shape = check_image(image_shape, n_features)
        net = arch.critic
        assert net.norm is not None  # filled when the ArchitectureSpec is validated
        chs = level_channels(net.channels, self.image_shape[1])[::-1]  # sides H/2, ..., 4
        bias = net.norm != "batch"
        layers: list[nn.Module] = [
            nn.Conv2d(self.image_shape[0], chs[0], 4, stride=2, padding=1),  # no norm on input
            activation(net.activation), dropout(net.dropout),
        ]
        for c_in, c_out in zip(chs[:-1], chs[1:], strict=True):
            layers += [
                nn.Conv2d(c_in, c_out, 4, stride=2, padding=1, bias=bias),  # side /2
                norm2d(net.norm, c_out), activation(net.activation), dropout(net.dropout),
            ]
        self.phi = nn.Sequential(*layers, nn.Flatten())  # [N, chs[-1] * 16]
        d = chs[-1] * 16
        self.psi = nn.Linear(d, out_dim)
        if n_conditions:
            self.embed = nn.Linear(n_conditions, d, bias=False)
            self.mix = nn.Linear(d, out_dim, bias=False)  # U above
        dcgan_init(self)
        if n_conditions:
            nn.init.ones_(self.mix.weight)  # start at the paper's plain inner product

    def forward(self, x: Tensor, a: Tensor | None = None) -> Tensor:
        # x [N, F] -> [N, C, H, W] -> phi [N, D] -> [N, out_dim], raw
        h = self.phi(x.reshape(-1, *self.image_shape))
        out = self.psi(h)
        if self.n_conditions:
            if a is None:
                raise ValueError(f"this critic is conditional: pass a [N, {self.n_conditions}]")
            out = out + self.mix(self.embed(a) * h)
        return out
