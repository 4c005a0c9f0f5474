"""Residual MLP: input projection to `width`, `depth` pre-activation residual blocks
(He et al. 2016, "Identity mappings": x + W2 drop(act(norm(W1 act(norm(x)))))), then a final
norm -> act before the output projection. The condition is concatenated to the input only;
the skip connections carry it through every block."""

from __future__ import annotations

from torch import Tensor, nn

from models.architectures.layers import activation, dropout, norm1d, with_condition
from models.spec import ArchitectureSpec, NetSpec


class Block(nn.Module):
    def __init__(self, net: NetSpec) -> None:
        super().__init__()
        w = net.width
        assert net.norm is not None  # filled when the ArchitectureSpec is validated
        self.f = nn.Sequential(
            norm1d(net.norm, w), activation(net.activation),
            nn.Linear(w, w, bias=net.norm != "batch"),  # a batch norm follows: no bias
            norm1d(net.norm, w), activation(net.activation), dropout(net.dropout),
            nn.Linear(w, w),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.f(x)  # [N, width]


class ResMLP(nn.Module):
    """[N, n_in] -> [N, n_out]."""

    def __init__(self, net: NetSpec, n_in: int, n_out: int) -> None:
        super().__init__()
        self.inp = nn.Linear(n_in, net.width)
        assert net.norm is not None  # filled when the ArchitectureSpec is validated
        self.blocks = nn.Sequential(*(Block(net) for _ in range(net.depth)))
        self.out = nn.Sequential(
            norm1d(net.norm, net.width), activation(net.activation), nn.Linear(net.width, n_out)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.out(self.blocks(self.inp(x)))


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
        # Linear output: the features are standardised, not bounded.
        self.net = ResMLP(arch.generator, arch.latent_dim + n_conditions, n_features)

    def forward(self, z: Tensor, a: Tensor | None = None) -> Tensor:
        # z [N, latent_dim], a [N, C] -> [N, F]
        return self.net(with_condition(z, a, self.n_conditions))


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
        self.net = ResMLP(arch.critic, n_features + n_conditions, out_dim)

    def forward(self, x: Tensor, a: Tensor | None = None) -> Tensor:
        # x [N, F], a [N, C] -> [N, out_dim], raw
        return self.net(with_condition(x, a, self.n_conditions))
