"""Toy quality sweeps: train one toy case with any settings and print the 3-sigma rule's
figures (modes captured, high-quality share, quantiles of the distance to the nearest mode in
sigma). The settings of tests/models/test_quality.py are the starting point; a JSON object
overrides them. One thread, so results are bit-identical across runs on CPU.

    .venv/bin/python bench/toy_quality.py '{"seed": 1}'
    .venv/bin/python bench/toy_quality.py '{"uri": "builtin://25gaussians", "seed": 1}'
    .venv/bin/python bench/toy_quality.py '{"objective": {"name": "cramer", "gp_lambda": 1.0}}'
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from models.datasets import load_dataset  # noqa: E402
from models.metrics import mode_coverage  # noqa: E402
from models.pipeline import N_QUALITY_SAMPLES, sample_trained  # noqa: E402
from models.spec import JobSpec  # noqa: E402
from models.train import train  # noqa: E402

# The WGAN-GP case of the quality test; keys other than these go into `training`.
BASE = {
    "uri": "builtin://8gaussians",
    "objective": {"name": "wgan-gp", "gp_lambda": 1.0},
    "latent": 2,
    "gnet": {"width": 128, "depth": 3},
    "dnet": {"width": 128, "depth": 3, "activation": "relu"},
}
BASE_TRAINING = {"steps": 8000, "batch_size": 1024, "n_critic": 2, "lr_g": 5e-4, "lr_d": 5e-4,
                 "lr_schedule": "linear", "ema": 0.99, "log_every": 500, "device": "cpu"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("overrides", nargs="?", default="{}", help="JSON object")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    cfg = {**BASE, "training": dict(BASE_TRAINING)}
    for key, value in json.loads(args.overrides).items():
        (cfg if key in BASE else cfg["training"])[key] = value
    spec = JobSpec.model_validate({
        "objective": cfg["objective"],
        "architecture": {"name": "mlp", "latent_dim": cfg["latent"], "generator": cfg["gnet"],
                         "critic": cfg["dnet"]},
        "dataset": {"uri": cfg["uri"]},
        "training": cfg["training"],
    })
    data = load_dataset(spec.dataset, data_roots=[])
    tic = time.perf_counter()
    trained = train(spec, data)
    seconds = time.perf_counter() - tic
    samples = sample_trained(trained, N_QUALITY_SAMPLES, seed=123)
    cov = mode_coverage(samples, data.modes, data.mode_std)
    # In sigmas of the nearest mode (mode_std: one float, or one std per mode as in
    # two-gaussians), "nearest" in sigmas as in mode_coverage.
    std = np.broadcast_to(np.asarray(data.mode_std, dtype=np.float64), (len(data.modes),))
    sigmas = np.linalg.norm(samples[:, None] - data.modes[None], axis=-1) / std  # [N, K]
    dist = sigmas.min(1)
    print(json.dumps({
        "overrides": json.loads(args.overrides),
        "modes": f"{cov.modes_captured}/{cov.n_modes}",
        "high_quality": round(cov.high_quality_fraction, 4),
        "beyond_6_sigma": round(float((dist > 6).mean()), 4),
        "distance_sigma_q50_q90_q99": [round(float(q), 2) for q in np.quantile(dist, [.5, .9, .99])],
        "train_seconds": round(seconds),
    }))


if __name__ == "__main__":
    main()
