"""The 3-sigma rule (models/metrics.py) on samples whose answer is known by construction."""

from __future__ import annotations

import numpy as np

from models.metrics import mode_coverage

MODES = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
STD = 0.01


def test_samples_on_two_of_three_modes_capture_two():
    samples = np.array([[0.0, 0.0], [0.01, 0.02], [1.0, 0.029], [0.5, 0.5]])
    cov = mode_coverage(samples, MODES, STD)
    # [0.5, 0.5] is 0.71 from every mode: not high-quality, and captures nothing.
    assert (cov.modes_captured, cov.n_modes) == (2, 3)
    assert cov.high_quality_fraction == 0.75


def test_three_sigma_is_the_boundary():
    inside = mode_coverage(np.array([[0.0, 0.0299]]), MODES, STD)
    outside = mode_coverage(np.array([[0.0, 0.0301]]), MODES, STD)
    assert (inside.modes_captured, inside.high_quality_fraction) == (1, 1.0)
    assert (outside.modes_captured, outside.high_quality_fraction) == (0, 0.0)


def test_far_sample_counts_for_no_mode_even_when_nearest():
    # Nearest to mode 1, but 5 sigma away: the mode stays uncaptured.
    cov = mode_coverage(np.array([[1.05, 0.0], [0.0, 0.0]]), MODES, STD)
    assert cov.modes_captured == 1
    assert cov.high_quality_fraction == 0.5


def test_data_drawn_from_the_mixture_is_high_quality():
    rng = np.random.default_rng(0)
    picks = rng.integers(0, 3, 3000)
    samples = MODES[picks] + STD * rng.standard_normal((3000, 2))
    cov = mode_coverage(samples, MODES, STD)
    assert cov.modes_captured == 3
    # P(r <= 3 sigma) for a 2-D Gaussian is 1 - exp(-4.5) = 0.989.
    assert abs(cov.high_quality_fraction - (1 - np.exp(-4.5))) < 0.01
