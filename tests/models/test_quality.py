"""Quality on the toy sets, by the 3-sigma rule of VEEGAN / PacGAN (2,500 samples), and the
conditional toy's check. Slow: each case trains to convergence on one CPU thread.

Thresholds (the issue's): wgan-gp, nsgan and cramer capture 8/8 ring modes with >= 90%
high-quality samples; wgan-gp captures >= 24 of the 25 grid modes. The conditional check is
documented in the README ("Conditional toy").
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.datasets import load_dataset
from models.datasets.builtin import CONDITIONAL_RING_STD, conditional_ring_centre
from models.metrics import mode_coverage
from models.pipeline import N_QUALITY_SAMPLES, sample_trained
from models.spec import JobSpec
from models.train import train

pytestmark = pytest.mark.slow

TOY_NET = {"width": 128, "depth": 3}


def toy_spec(uri: str, objective: dict, steps: int, lr: float, batch_size: int,
             latent_dim: int = 2, critic_activation: str = "leaky_relu",
             n_critic: int | None = None, lr_d: float | None = None,
             generator_width: int = 128) -> JobSpec:
    # Low-dimensional noise as in the WGAN-GP toy code (gan_toy.py: 2); a linear learning-rate
    # decay and a short EMA of G remove the jitter of the last steps, which is what the 3-sigma
    # rule (sigma = 0.014 on a ring of radius 1.41) measures.
    return JobSpec.model_validate({
        "objective": objective,
        "architecture": {"name": "mlp", "latent_dim": latent_dim,
                         "generator": {**TOY_NET, "width": generator_width},
                         "critic": {**TOY_NET, "activation": critic_activation}},
        "dataset": {"uri": uri},
        "training": {"steps": steps, "batch_size": batch_size, "lr_g": lr, "lr_d": lr_d or lr,
                     "lr_schedule": "linear", "ema": 0.99, "log_every": 500, "device": "cpu"}
                    | ({"n_critic": n_critic} if n_critic else {}),
    })


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# WGAN-GP with the paper's lambda 10 and n_critic 5 left a third of the ring's samples on
# bridges between modes in 3 CPU minutes (57%); what sharpened the modes was more generator
# steps for the same time (n_critic 2) and a softer penalty (gp_lambda 1): 94-96% over three
# seeds. See the README's "Quality on the toy sets".
SHARP_WGAN_GP = {"name": "wgan-gp", "gp_lambda": 1.0}
SHARP_TRAINING = {"steps": 8000, "lr": 5e-4, "batch_size": 1024, "n_critic": 2,
                  "critic_activation": "relu"}

CASES = {
    # name: (uri, objective, training, modes needed, high-quality share needed)
    "8gaussians-wgan-gp": ("builtin://8gaussians", SHARP_WGAN_GP, SHARP_TRAINING, 8, 0.90),
    "8gaussians-nsgan": ("builtin://8gaussians", {"name": "nsgan"},
                         {"steps": 6000, "lr": 5e-4, "batch_size": 256, "latent_dim": 4}, 8, 0.90),
    # The issue asks 24/25 modes of the grid; the high-quality floor (measured 80-90% over two
    # seeds) guards against a regression.
    "25gaussians-wgan-gp": ("builtin://25gaussians", SHARP_WGAN_GP, SHARP_TRAINING, 24, 0.75),
    # Cramér's energy-distance gradient leaves bridges between modes longest: it met 90% only
    # with a near-free critic (gp_lambda 0.01), a wider generator, one critic step at twice the
    # generator's rate and 12000 steps (91.0-93.0% over three seeds; 80-89% with
    # gp_lambda 0.1 to 1).
    "8gaussians-cramer": ("builtin://8gaussians", {"name": "cramer", "gp_lambda": 0.01},
                          {"steps": 12000, "lr": 5e-4, "lr_d": 1e-3, "batch_size": 512,
                           "n_critic": 1, "generator_width": 256, "critic_activation": "relu"},
                          8, 0.90),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_mode_coverage_on_the_toy_mixtures(case):
    uri, objective, training, modes_needed, hq_needed = CASES[case]
    spec = toy_spec(uri, objective, **training)
    data = load_dataset(spec.dataset, data_roots=[])
    trained = train(spec, data)
    samples = sample_trained(trained, N_QUALITY_SAMPLES, seed=123)
    cov = mode_coverage(samples, data.modes, data.mode_std)
    print(case, cov)
    assert cov.modes_captured >= modes_needed, cov
    assert cov.high_quality_fraction >= hq_needed, cov


def test_conditional_toy_samples_land_where_their_condition_lies():
    spec = toy_spec("builtin://conditional-ring", {"name": "wgan-gp"}, 2000, 1e-3, 512)
    data = load_dataset(spec.dataset, data_roots=[])
    trained = train(spec, data)
    angles = np.linspace(0, 2 * np.pi, 8, endpoint=False) + 0.2
    for angle in angles:
        cond = np.full((500, 1), angle, dtype=np.float32)
        samples = sample_trained(trained, 500, cond, seed=7)
        centre = conditional_ring_centre(np.array([angle]))[0]
        dist = np.linalg.norm(samples - centre, axis=1)
        # The documented check: >= 80% of the samples for a condition lie within 3 sigma of
        # that condition's centre, and the sample mean is within 1 sigma of it.
        assert (dist <= 3 * CONDITIONAL_RING_STD).mean() >= 0.8, (angle, dist.mean())
        assert np.linalg.norm(samples.mean(0) - centre) <= CONDITIONAL_RING_STD, angle
