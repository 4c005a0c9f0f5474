"""Model selection: the validation score, the batch-norm statistics of an averaged generator,
and the loop that keeps the best validated weights and stops early."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn

from models.selection import (
    Validator,
    refresh_batchnorm,
    sliced_wasserstein,
    weighted_w1,
)


def test_weighted_w1_equals_scipy_for_equal_weights():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(500, 3)), rng.normal(0.5, 2.0, size=(500, 3))
    got = weighted_w1(torch.tensor(a), torch.tensor(b), None).numpy()
    want = [stats.wasserstein_distance(a[:, j], b[:, j]) for j in range(3)]
    np.testing.assert_allclose(got, want, rtol=1e-9)


def test_weighted_w1_with_positive_weights_equals_scipy():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(400, 1)), rng.normal(1.0, 1.0, size=(400, 1))
    w = rng.uniform(0.1, 3.0, size=400)
    got = weighted_w1(torch.tensor(a), torch.tensor(b), torch.tensor(w)).item()
    want = stats.wasserstein_distance(a[:, 0], b[:, 0], u_weights=w, v_weights=w)
    assert got == pytest.approx(want, rel=1e-9)


def test_signed_weights_subtract_a_background_exactly():
    # Signal rows weight 1; background rows twice, with +1 and -1: the weighted law of the
    # "real" side is the signal alone. A generator that draws the signal scores ~0 only
    # with the weights; unweighted it sees the background too.
    rng = np.random.default_rng(2)
    signal = rng.normal(size=(3000, 1))
    background = rng.uniform(-5, 5, size=(1000, 1))
    real = np.concatenate([signal, background, background])
    w = np.concatenate([np.ones(3000), np.ones(1000), -np.ones(1000)])
    # Generated rows inherit their event's weight: the background events' rows cancel too.
    gen_rows = np.concatenate([rng.normal(size=(3000, 1)), rng.normal(size=(1000, 1))])
    gen = np.concatenate([gen_rows, gen_rows[3000:]])
    weighted = weighted_w1(torch.tensor(real), torch.tensor(gen), torch.tensor(w)).item()
    unweighted = weighted_w1(torch.tensor(real), torch.tensor(gen), None).item()
    truth = stats.wasserstein_distance(signal[:, 0], gen_rows[:3000, 0])
    assert weighted == pytest.approx(truth, abs=1e-9)
    assert weighted < 0.1 < 0.3 < unweighted


def test_sliced_wasserstein_sees_a_missed_correlation():
    # Right marginals, wrong joint law: the sliced distance is large, along the axes it is ~0.
    rng = np.random.default_rng(3)
    x = rng.normal(size=(4000, 1))
    real = torch.tensor(np.concatenate([x, x + 0.05 * rng.normal(size=(4000, 1))], 1))
    gen = torch.tensor(rng.normal(size=(4000, 2)) * [1, 1.001])
    axes = torch.eye(2, dtype=torch.float64)
    diag = torch.tensor([[1.0], [1.0]], dtype=torch.float64) / np.sqrt(2)
    assert sliced_wasserstein(real, gen, None, axes) < 0.06
    assert sliced_wasserstein(real, gen, None, diag) > 0.3


class ShiftGenerator(nn.Module):
    """G(z, a) = z * scale + a: a perfect conditional generator when scale is 0.1."""

    def __init__(self, scale: float) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(scale))

    def forward(self, z, a):
        return z[:, :1] * self.scale + a


def test_validator_prefers_the_generator_that_follows_its_conditions():
    rng = np.random.default_rng(4)
    a = torch.tensor(rng.uniform(-2, 2, size=(2000, 1)), dtype=torch.float32)
    x = a + 0.1 * torch.tensor(rng.normal(size=(2000, 1)), dtype=torch.float32)
    validator = Validator(x, a, None, latent_dim=1, seed=0)
    good, wide = validator.score(ShiftGenerator(0.1)), validator.score(ShiftGenerator(1.0))
    assert good < 0.02 < 0.1 < wide
    assert validator.score(ShiftGenerator(0.1)) == good  # fixed noise: the same score twice


class BNGenerator(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(2, 4)
        self.bn = nn.BatchNorm1d(4)

    def forward(self, z, a):
        return self.bn(self.lin(z))


def test_refresh_batchnorm_gives_the_statistics_of_the_generators_own_activations():
    gen = BNGenerator()
    with torch.no_grad():
        gen.lin.weight.mul_(5.0)
        gen.lin.bias.add_(3.0)
    gen.bn.running_mean.fill_(-7.0)  # as if copied from other weights
    gen.bn.running_var.fill_(0.01)
    refresh_batchnorm(gen, None, 0, latent_dim=2, batch_size=512, seed=0, n_batches=8)
    with torch.no_grad():
        act = gen.lin(torch.randn(20000, 2))
    np.testing.assert_allclose(gen.bn.running_mean, act.mean(0), atol=0.25)
    np.testing.assert_allclose(gen.bn.running_var, act.var(0), rtol=0.1)
    assert gen.bn.momentum == 0.1  # restored
    out = gen.eval()(torch.randn(20000, 2), None)
    np.testing.assert_allclose(out.std(0).detach(), np.ones(4), atol=0.06)
