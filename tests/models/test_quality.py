"""Quality of the default recipes: rows of the quality suite (bench/quality.py), trained like a
job from a minimal spec (objective, data set, steps, seed: every other setting is the
objective's "default" recipe) and measured by the suite's own code. Slow: each trains for
minutes on one CPU thread; `make test` runs them two at a time.

Each threshold is the issue's target where one is set and met (the ring: 8/8 modes, >= 95%
high-quality; the Lamarr-like toy: classifier AUC <= 0.55), otherwise a guard set from the
measured rows of docs/quality.md (the sWeighted toy misses its target of 0.53).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]

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


def test_minimal_wgan_gp_spec_covers_the_ring():
    row = quality_bench().run_case("ring", "wgan-gp", seed=1, steps=STEPS)
    print(row)
    assert row["status"] == "ok", row
    assert row["metrics"]["modes_captured"] == 8, row
    assert row["metrics"]["high_quality_fraction"] >= 0.95, row


def test_default_recipe_learns_the_lamarr_like_toy():
    row = quality_bench().run_case("lamarr", "wgan-gp", seed=1, steps=STEPS)
    print(row)
    assert row["status"] == "ok", row
    assert row["metrics"]["c2st_auc"] <= 0.55, row


def test_sweighted_training_learns_the_pure_signal_law():
    # Trained on signal + background with sPlot weights (regressed, the default for signed
    # weights); compared with fresh pure-signal rows. The target is 0.53; this row
    # measured 0.531, and the same generator trained on the pure-signal rows alone 0.528
    # (docs/quality.md): 0.54 guards against a regression (ignoring the weights gives 0.72).
    row = quality_bench().run_case("splot", "wgan-gp", seed=1, steps=STEPS)
    print(row)
    assert row["status"] == "ok", row
    assert row["metrics"]["c2st_auc"] <= 0.54, row


def test_conditional_ring_samples_land_where_their_condition_lies_with_the_right_spread():
    # 98.9% of the truth lies within 3 sigma of its angle's centre. The spread ratio (generated
    # / true std) catches a generator that outputs the centre (0) or one 1.7x too wide.
    row = quality_bench().run_case("conditional-ring", "wgan-gp", seed=1, steps=STEPS)
    print(row)
    assert row["status"] == "ok", row
    assert row["metrics"]["within_3_sigma"] >= 0.9, row
    assert 0.6 <= row["metrics"]["spread_ratio"] <= 1.4, row
