"""What every objective shares: the interface and the weighted mean.

`critic` is any module mapping (x [N, F], a [N, C] | None) -> [N, critic_dim]. `fakes` holds
`n_fakes` generated batches. `w` are per-event weights [N] normalised to mean 1 over the data
set (HEP sWeights may be negative), or None when every row of the batch counts once (no
weights, or rows drawn with probability proportional to non-negative weights). The generated
rows of a batch are drawn at the conditions `cond` of its real rows, row for row, so generated
row i carries the real row's weight w[i]: every per-sample term, real or generated, is
multiplied by w (`wmean`). Regularisers on interpolates (the gradient penalty) are plain means,
not expectations under the data.

The logs a loss returns are detached 0-d tensors: the trainer turns them into numbers only
when it reports progress, so a step needs no device-to-host copy.

`signed_weights_ok` says whether the objective stays bounded below with negative weights:
integral-probability-metric losses (WGAN, WGAN-GP, Cramér) are linear in the weights of the
critic's outputs and stay sound; losses built on log D or (D - t)^2 are unbounded below for
the discriminator where w < 0 (models.objectives.check_weights refuses those).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from models.objectives.lazy import torch

if TYPE_CHECKING:
    from torch import Tensor, nn

Logs = dict[str, "Tensor"]


def wmean(values: Tensor, w: Tensor | None) -> Tensor:
    """Mean of per-sample values [N] weighted by w [N] (already normalised to mean 1)."""
    return values.mean() if w is None else (values * w).mean()


def critic_out(critic: nn.Module, x: Tensor, a: Tensor | None) -> Tensor:
    """The raw scalar critic output V(x, a) as [N]."""
    return critic(x, a).squeeze(-1)


def uncompiled(critic: nn.Module) -> nn.Module:
    """The critic outside torch.compile (training.compile), autocast kept: a gradient penalty
    differentiates it twice, which torch.compile's AOTAutograd refuses."""
    return getattr(critic, "_orig_mod", critic)


def gradient_norms(f_values: Tensor, x_hat: Tensor) -> Tensor:
    """Per-sample ||d f / d x_hat||_2 [N] (create_graph so the penalty trains the critic)."""
    (grad,) = torch.autograd.grad(f_values.sum(), x_hat, create_graph=True)
    return grad.flatten(1).norm(2, dim=1)


def interpolate(real: Tensor, fake: Tensor) -> Tensor:
    """x_hat = eps x + (1 - eps) G(z), eps ~ U[0, 1] per sample (Gulrajani 2017, Alg. 1)."""
    eps = torch.rand(real.shape[0], 1, device=real.device, dtype=real.dtype)
    return (eps * real + (1 - eps) * fake).requires_grad_(True)


def penalty(norms: Tensor, one_sided: bool) -> Tensor:
    """(||grad|| - 1)^2, or max(0, ||grad|| - 1)^2 for the one-sided variant."""
    excess = norms - 1
    return (excess.clamp(min=0) if one_sided else excess) ** 2


def logs(**values: Tensor) -> Logs:
    """Loss logs, detached from the graph (numbers only when progress is reported)."""
    return {k: v.detach() for k, v in values.items()}


class Objective(Protocol):
    critic_dim: int
    n_fakes: int
    signed_weights_ok: bool

    def critic_loss(
        self, critic: nn.Module, real: Tensor, fakes: list[Tensor], cond: Tensor | None,
        w: Tensor | None,
    ) -> tuple[Tensor, Logs]: ...

    def generator_loss(
        self, critic: nn.Module, real: Tensor, fakes: list[Tensor], cond: Tensor | None,
        w: Tensor | None,
    ) -> tuple[Tensor, Logs]: ...

    def after_critic_step(self, critic: nn.Module) -> None: ...


class ScalarCritic:
    """Defaults for objectives whose critic returns one number and needs no post-step hook."""

    critic_dim = 1
    n_fakes = 1
    signed_weights_ok = False

    def after_critic_step(self, critic: nn.Module) -> None:
        return None
