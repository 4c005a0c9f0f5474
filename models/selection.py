"""Model selection on held-out rows: the validation score and the batch-norm statistics of an
averaged generator.

The score is the sliced Wasserstein distance between the validation rows and rows generated at
the same conditions, both as (conditions, features) on the model's standardised scale: random
unit directions, the 1-D Wasserstein distance of the projections, averaged. Projecting the
conditions too makes the score see whether a generated row belongs to its condition. Per-event
weights (signed sWeights included) weight both sides, row for row: each 1-D distance is the
integral of |F_real - F_generated| with weighted empirical distribution functions.

The noise, the rows and the directions are fixed when the validator is made, so two scores
differ only because the generator did, and scoring never touches the training's random stream.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

VALIDATION_ROWS = 4096  # at most: the score takes milliseconds, not seconds
N_PROJECTIONS = 128
SEED_OFFSET = 0x5A1


def weighted_w1(real: Tensor, gen: Tensor, w: Tensor | None) -> Tensor:
    """1-D Wasserstein distances [P] between the columns of real [N, P] and gen [N, P], the
    rows of both weighted by w [N] (None: equal weights; weights may be negative)."""
    n = real.shape[0]
    if w is None:
        w = torch.ones(n, device=real.device, dtype=real.dtype)
    mass = w / w.sum()
    values = torch.cat([real, gen], 0)  # [2N, P]
    signed = torch.cat([mass, -mass], 0)  # F_real - F_gen gains +w at a real row, -w at a fake
    order = values.argsort(0)
    sorted_values = values.gather(0, order)
    cdf_gap = signed[order].cumsum(0)  # [2N, P]
    widths = sorted_values[1:] - sorted_values[:-1]
    return (cdf_gap[:-1].abs() * widths).sum(0)


def sliced_wasserstein(real: Tensor, gen: Tensor, w: Tensor | None,
                       directions: Tensor) -> float:
    """Mean over the unit `directions` [D, P] of the weighted W1 of the projections."""
    return float(weighted_w1(real @ directions, gen @ directions, w).mean())


class Validator:
    """Scores a generator on fixed validation rows x [N, F] (conditions a [N, C] | None,
    weights w [N] | None), all on the model's scale."""

    def __init__(self, x: Tensor, a: Tensor | None, w: Tensor | None, latent_dim: int,
                 seed: int) -> None:
        rng = torch.Generator().manual_seed(seed + SEED_OFFSET)
        device = x.device
        if len(x) > VALIDATION_ROWS:
            idx = torch.randperm(len(x), generator=rng)[:VALIDATION_ROWS].to(device)
            x, a = x[idx], (a[idx] if a is not None else None)
            w = w[idx] if w is not None else None
        self.x = x.reshape(len(x), -1)
        self.a = a
        self.w = w
        self.z = torch.randn(len(x), latent_dim, generator=rng).to(device)
        dim = self.x.shape[1] + (a.shape[1] if a is not None else 0)
        directions = torch.randn(dim, N_PROJECTIONS, generator=rng)
        self.directions = (directions / directions.norm(dim=0, keepdim=True)).to(device)
        self.real = self._joint(self.x)

    def _joint(self, x: Tensor) -> Tensor:
        x = x.reshape(len(x), -1)
        return torch.cat([self.a, x], 1) if self.a is not None else x

    @torch.no_grad()
    def score(self, generator: nn.Module) -> float:
        """The sliced Wasserstein distance of the generator in eval mode (as exported)."""
        was_training = generator.training
        generator.eval()
        try:
            fake = generator(self.z, self.a)
        finally:
            generator.train(was_training)
        return sliced_wasserstein(self.real, self._joint(fake), self.w, self.directions)


def has_batchnorm(module: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in module.modules())


@torch.no_grad()
def refresh_batchnorm(generator: nn.Module, conditions: Tensor | None, n_rows: int,
                      latent_dim: int, batch_size: int, seed: int, n_batches: int = 16) -> None:
    """Recompute the batch-norm running statistics of `generator` from its own activations.

    An exponential moving average of the weights has no statistics of its own: the live
    generator's describe other weights, and with them the averaged generator's outputs come out
    too wide or too narrow. As in SWA's update_bn: reset, then a cumulative average over
    `n_batches` training-mode passes, on noise and conditions drawn from a private stream.
    """
    norms = [m for m in generator.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    rng = torch.Generator().manual_seed(seed + SEED_OFFSET + 1)
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    was_training = generator.training
    generator.train()
    try:
        device = next(generator.parameters()).device
        for _ in range(n_batches):
            z = torch.randn(batch_size, latent_dim, generator=rng).to(device)
            cond = None
            if conditions is not None:
                idx = torch.randint(0, n_rows, (batch_size,), generator=rng).to(device)
                cond = conditions[idx]
            generator(z, cond)
    finally:
        for m, momentum in zip(norms, momenta, strict=True):
            m.momentum = momentum
        generator.train(was_training)
