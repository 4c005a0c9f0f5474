"""The README quickstart's job, in-process: the minimal wgan-gp spec on the 8 Gaussians for
N steps (default 1200) through models.pipeline.run_job (split, train, select, report, export),
then 100,000 samples from the exported ONNX file. Prints the time, the mean radius against
the ring's (2 / 1.414), the modes captured and the high-quality share (3-sigma rule).

    OMP_NUM_THREADS=1 .venv/bin/python bench/quickstart.py 1200
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402
import torch  # noqa: E402

from models.datasets.builtin import EIGHT_DIVISOR, EIGHT_NOISE, eight_gaussian_modes  # noqa: E402
from models.metrics import mode_coverage  # noqa: E402
from models.pipeline import run_job  # noqa: E402
from models.spec import JobSpec  # noqa: E402

RING_RADIUS = 2 / EIGHT_DIVISOR


def main() -> None:
    torch.set_num_threads(1)
    steps = int(sys.argv[1]) if len(sys.argv) > 1 else 1200
    spec = JobSpec.model_validate({"objective": "wgan-gp",
                                   "dataset": {"uri": "builtin://8gaussians"},
                                   "training": {"steps": steps, "n_critic": 2,
                                                "log_every": 100}})
    tic = time.perf_counter()
    result = run_job(spec, Path(tempfile.mkdtemp()))
    seconds = time.perf_counter() - tic
    session = ort.InferenceSession(str(result.onnx_path), providers=["CPUExecutionProvider"])
    z = np.random.default_rng(7).standard_normal((100_000, result.metadata["latent_dim"]),
                                                  dtype=np.float32)
    x = session.run(None, {"z": z})[0]
    radius = float(np.linalg.norm(x, axis=1).mean())
    cov = mode_coverage(x[:2500], eight_gaussian_modes(), EIGHT_NOISE / EIGHT_DIVISOR)
    print(json.dumps({"steps": steps, "seconds": round(seconds, 1), "mean_radius": radius,
                      "ring_radius": RING_RADIUS, "relative": radius / RING_RADIUS - 1,
                      "modes": cov.modes_captured, "high_quality": cov.high_quality_fraction,
                      "selection": result.metadata["selection"]}))


if __name__ == "__main__":
    main()
