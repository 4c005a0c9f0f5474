"""The lecture notes' mode-collapse example, p = 0.7 N(5, 0.8) + 0.3 N(-4, 1)
(builtin://two-gaussians): a mode-covering objective keeps both modes with their shares, and
puts (almost) nothing in the gap between them."""

from __future__ import annotations

import numpy as np
import pytest

from models.datasets import load_dataset
from models.datasets.builtin import two_gaussian_responsibilities, two_gaussian_weights
from models.metrics import mode_coverage
from models.pipeline import sample_trained
from models.spec import JobSpec
from models.train import train

pytestmark = pytest.mark.usefixtures("one_torch_thread")




def test_wgan_gp_keeps_both_modes_of_the_two_gaussian_mixture():
    spec = JobSpec.model_validate({
        "objective": "wgan-gp",
        "architecture": {"name": "mlp", "latent_dim": 2, "generator": {"width": 64, "depth": 3},
                         "critic": {"width": 64, "depth": 3}},
        "dataset": {"uri": "builtin://two-gaussians"},
        "training": {"steps": 3000, "batch_size": 256, "device": "cpu", "validate_every": 0,
                     "log_every": 500, "seed": 1},
    })
    data = load_dataset(spec.dataset, data_roots=[])
    trained = train(spec, data)
    x = sample_trained(trained, 5000, seed=3)
    shares = two_gaussian_responsibilities(x).mean(0)
    np.testing.assert_allclose(shares, two_gaussian_weights(), atol=0.05)
    coverage = mode_coverage(x, data.modes, data.mode_std)
    assert coverage.modes_captured == 2 and coverage.high_quality_fraction >= 0.9, coverage
    assert ((x > -1) & (x < 2)).mean() < 0.03  # the gap: the truth puts 0.1% there
