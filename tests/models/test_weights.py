"""Signed weights regressed on the observables (models/weights.py)."""

from __future__ import annotations

import numpy as np

from models.datasets.builtin import builtin_table
from models.weights import WeightRegression, has_negative


def test_regression_recovers_the_signal_probability_from_noisy_signed_weights():
    rng = np.random.default_rng(0)
    x = rng.uniform(-3, 3, size=(20000, 1))
    p = 1 / (1 + np.exp(-2 * x[:, 0]))
    signal = rng.random(20000) < p
    w = signal + rng.normal(0, 1.0, 20000)  # E[w | x] = p(x); a third of w negative
    assert (w < 0).mean() > 0.2
    reg = WeightRegression(x, w, seed=1)
    assert (reg.fitted >= 0).all()
    assert np.abs(reg.fitted - p).mean() < 0.06
    assert abs(reg.fitted.sum() - w.sum()) < 0.02 * w.sum()
    grid = np.linspace(-2.5, 2.5, 101)[:, None]
    assert np.abs(reg.predict(grid) - 1 / (1 + np.exp(-2 * grid[:, 0]))).mean() < 0.06


def test_regressed_splot_weights_give_the_signal_means_with_less_noise():
    table = builtin_table("splot-toy")
    cols = table.read(["pt", "x1", "x2", "sweight", "is_signal"], None)
    obs = np.stack([cols["pt"], cols["x1"], cols["x2"]], 1)
    w = cols["sweight"]
    reg = WeightRegression(obs, w, seed=0)
    signal = cols["is_signal"] == 1
    for j in (1, 2):
        truth = obs[signal, j].mean()
        given = np.average(obs[:, j], weights=w)
        regressed = np.average(obs[:, j], weights=reg.fitted)
        assert abs(regressed - truth) < 0.03 and abs(given - truth) < 0.03, (j, truth, regressed)
    # E[w | x] is the signal probability: high for signal events, low for background ones.
    assert reg.fitted[signal].mean() > 0.7 > 0.3 > reg.fitted[~signal].mean()
    assert has_negative(w) and not has_negative(reg.fitted)
