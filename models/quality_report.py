"""The end-of-training report of one job: generate with the trained PyTorch generator at the
held-out rows' conditions, measure (models.report), draw (models.plots).

The report uses the trained torch generator (models.pipeline.sample_trained), the very
weights that are exported; the exporter checks that the ONNX file agrees with it to 1e-4 on
the standardised scale, so the report describes what the API serves.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from models.datasets import Dataset
from models.metrics import mode_coverage
from models.report import MAX_ROWS, build_report, image_measures
from models.train import TrainedModel, sample_trained

IMAGE_TRAIN_ROWS = 5_000  # real training images the image classifier is fitted on, at most


def _one_hot_labels(conditions: np.ndarray) -> np.ndarray | None:
    """Class index per row when the conditions are one-hot (digit_0..digit_9), else None."""
    if conditions.shape[1] < 2 or not np.isin(conditions, (0.0, 1.0)).all():
        return None
    if not np.all(conditions.sum(1) == 1):
        return None
    return conditions.argmax(1)


def make_report(trained: TrainedModel, train_data: Dataset, held: Dataset | None,
                out_dir: Path) -> tuple[dict[str, Any], dict[str, Path]]:
    """(report dict, {plot name: PNG path}); writes out_dir/report.json and the PNGs."""
    from models.plots import render_all

    tic = time.perf_counter()
    seed = trained.spec.training.seed
    ref = held if held is not None else train_data
    rng = np.random.default_rng(seed + 1)
    idx = np.arange(ref.n_rows)
    if ref.n_rows > MAX_ROWS:
        idx = np.sort(rng.choice(ref.n_rows, MAX_ROWS, replace=False))
    real = ref.features[idx]
    conditional = trained.condition_transform is not None
    real_cond = ref.conditions[idx] if conditional else None
    gen = sample_trained(trained, len(real), real_cond, seed=seed + 1)
    # Per-event weights of the held-out rows; generated row i is drawn at real row i's
    # conditions, so it carries the same weight (an unconditional generator's rows: none).
    real_w = ref.weights[idx] if ref.weights is not None else None
    gen_w = real_w if conditional else None

    extra: dict[str, Any] = {
        "reference": "held-out rows" if held is not None else
                     "training rows (holdout_fraction is 0)",
        "holdout_fraction": trained.spec.dataset.holdout_fraction,
        "generator": "the trained PyTorch generator (the exported ONNX matches it to 1e-4)",
    }
    if train_data.modes is not None and train_data.mode_std is not None and not conditional:
        cov = mode_coverage(gen, train_data.modes, train_data.mode_std)
        extra["modes"] = {"modes_captured": cov.modes_captured, "n_modes": cov.n_modes,
                          "high_quality_fraction": cov.high_quality_fraction,
                          "rule": "3 sigma of the nearest mode centre"}
    if trained.image_shape is not None:
        labels = asked = None
        if conditional:
            assert real_cond is not None  # drawn above for a conditional model
            labels = _one_hot_labels(train_data.conditions)
            asked = _one_hot_labels(real_cond) if labels is not None else None
            names = trained.condition_names
            if labels is None and len(names) == 1 and names[0] in train_data.categories:
                # one categorical condition (digits' `digit`): its codes are the class labels
                labels = train_data.conditions[:, 0].astype(np.int64)
                asked = real_cond[:, 0].astype(np.int64)
        n_tr = min(train_data.n_rows, IMAGE_TRAIN_ROWS)
        extra["images"] = image_measures(train_data.features[:n_tr], real, gen,
                                         labels_train=labels[:n_tr] if labels is not None
                                         else None, asked=asked, seed=seed)
    report = build_report(
        real, gen, feature_names=trained.feature_names, condition_names=trained.condition_names,
        real_cond=real_cond, gen_cond=real_cond, seed=seed, extra=extra,
        weights=real_w, gen_weights=gen_w,
        binned=trained.image_shape is None,  # per-pixel bins of one-hot labels: noise
        categories=train_data.categories,  # categorical conditions: one bin per category
    )
    plots = render_all(out_dir / "plots", real=real, gen=gen,
                       real_weights=real_w, gen_weights=gen_w,
                       feature_names=trained.feature_names, history=trained.history,
                       report=report, image_shape=trained.image_shape)
    report["plots"] = sorted(plots)
    report["seconds"] = round(time.perf_counter() - tic, 3)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "report.json").write_text(json.dumps(report, indent=1))
    return report, plots
