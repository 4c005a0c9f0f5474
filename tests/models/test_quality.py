"""Quality of the default recipes: rows of the quality suite (bench/quality.py), trained like a
job from a minimal spec (objective, data set, steps, seed: every other setting is the
objective's "default" recipe) and measured by the suite's own code. Slow: each trains for
minutes on one CPU thread; `make test` runs them two at a time.

Each threshold is the issue's target where one is set (the ring: 8/8 modes, >= 95%
high-quality; the Lamarr-like toy: classifier AUC <= 0.55; the sWeighted toy: AUC within 0.03
of 0.5), otherwise a guard set from the measured rows of docs/quality.md.

The conditional ring's check is itself tested, quickly, on fake generators whose samples are
known (the truth, the centre, too wide, off centre): it must pass the first and fail the others.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

# The trainings: slow, one torch thread each. (The checks' own tests below are quick.)
training = pytest.mark.usefixtures("one_torch_thread")

STEPS = 5000


def quality_bench():
    """bench/quality.py as a module (bench/ is no package)."""
    name = "bench_quality"
    if name in sys.modules:
        return sys.modules[name]
    path = Path(__file__).resolve().parents[2] / "bench" / "quality.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # before exec: its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
@training
def test_minimal_wgan_gp_spec_covers_the_ring():
    row = quality_bench().run_case("ring", "wgan-gp", seed=1, steps=STEPS)
    print(row)
    assert row["status"] == "ok", row
    assert row["metrics"]["modes_captured"] == 8, row
    assert row["metrics"]["high_quality_fraction"] >= 0.95, row


@pytest.mark.slow
@training
def test_default_recipe_learns_the_lamarr_like_toy():
    row = quality_bench().run_case("lamarr", "wgan-gp", seed=1, steps=STEPS)
    print(row)
    assert row["status"] == "ok", row
    assert row["metrics"]["c2st_auc"] <= 0.55, row


@pytest.mark.slow
@training
def test_sweighted_training_learns_the_pure_signal_law():
    # Trained on signal + background with sPlot weights (regressed, the default for signed
    # weights); compared with fresh pure-signal rows: within 0.03 of 0.5 (the target;
    # measured 0.496, docs/quality.md; ignoring the weights gives 0.72).
    row = quality_bench().run_case("splot", "wgan-gp", seed=1, steps=STEPS)
    print(row)
    assert row["status"] == "ok", row
    assert abs(row["metrics"]["c2st_auc"] - 0.5) <= 0.03, row


def assert_conditional_ring_ok(metrics: dict) -> None:
    """98.9% of the truth lies within 3 sigma of its angle's centre, and its spread ratio
    (generated / true std) is 1; the default recipe measured 0.994 and 0.77 (docs/quality.md).
    A share alone passes a generator that outputs the centre (share 1) or, at the old 80%,
    one 1.7x too wide (share 0.79); the spread ratio catches both, and one off centre."""
    assert metrics["within_3_sigma"] >= 0.9, metrics
    assert 0.6 <= metrics["spread_ratio"] <= 1.4, metrics


@pytest.mark.slow
@training
def test_conditional_ring_samples_land_where_their_condition_lies_with_the_right_spread():
    row = quality_bench().run_case("conditional-ring", "wgan-gp", seed=1, steps=STEPS)
    print(row)
    assert row["status"] == "ok", row
    assert_conditional_ring_ok(row["metrics"])


def fake_ring_metrics(monkeypatch: pytest.MonkeyPatch, scale: float, shift: float = 0.0) -> dict:
    """The suite's conditional-ring measure of a fake generator: at each asked angle, the
    centre + shift sigma along x + scale x the true noise (scale 1, shift 0: the truth)."""
    bench = quality_bench()
    sigma = bench.CONDITIONAL_RING_STD

    def sample(trained, n, cond, seed):  # type: ignore[no-untyped-def]
        rng = np.random.default_rng(seed)
        noise = sigma * (scale * rng.standard_normal((n, 2)) + [shift, 0.0])
        return (bench.conditional_ring_centre(cond[:, 0]) + noise).astype(np.float32)

    monkeypatch.setattr(bench, "sample_trained", sample)
    angles = np.random.default_rng(0).uniform(-np.pi, np.pi, (20_000, 1)).astype(np.float32)
    held = SimpleNamespace(conditions=angles, n_rows=len(angles))
    return dict(bench.eval_conditional_ring(None, None, held, seed=1))


def test_the_conditional_ring_check_passes_the_true_law(monkeypatch):
    metrics = fake_ring_metrics(monkeypatch, scale=1.0)
    assert metrics["within_3_sigma"] == pytest.approx(0.989, abs=0.01), metrics
    assert metrics["spread_ratio"] == pytest.approx(1.0, abs=0.02), metrics
    assert_conditional_ring_ok(metrics)


@pytest.mark.parametrize(("scale", "shift"), [(0.0, 0.0), (0.4, 0.0), (1.7, 0.0), (0.5, 2.0)],
                         ids=["the-centre", "too-narrow", "1.7x-too-wide", "off-centre"])
def test_the_conditional_ring_check_fails_a_wrong_spread(monkeypatch, scale, shift):
    metrics = fake_ring_metrics(monkeypatch, scale, shift)
    with pytest.raises(AssertionError):
        assert_conditional_ring_ok(metrics)
