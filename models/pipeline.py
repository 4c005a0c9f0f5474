"""A job from spec to ONNX file: load the data, train (resuming), export, measure."""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from models.datasets import DataLimits, Dataset, load_dataset
from models.datasets.base import MIN_ROWS, DataError
from models.export import export_onnx
from models.metrics import mode_coverage
from models.spec import JobSpec
from models.train import Cancelled, Progress, TrainedModel, sample_trained, train
from models.workdir import ONNX_NAME, REPORT_DIR

log = logging.getLogger("models.pipeline")
N_QUALITY_SAMPLES = 2500  # as in the VEEGAN / PacGAN mode-coverage tables

__all__ = ["Cancelled", "JobResult", "Progress", "run_job", "sample_trained"]


@dataclass
class JobResult:
    onnx_path: Path
    metadata: dict
    report: dict | None = None  # models.report.build_report's dict (plots listed in it)
    plots: dict[str, Path] = field(default_factory=dict)  # {name: PNG path}


VALIDATION_SEED_OFFSET = 0x7A1  # the validation split's own stream: not the holdout's rows


def split_holdout(data: Dataset, fraction: float, seed: int,
                  what: str = "holdout_fraction") -> tuple[Dataset, Dataset | None]:
    """(kept part, split-off part): a random permutation of the rows (events) by `seed`, the
    same every run. fraction 0: (data, None)."""
    n_hold = int(round(data.n_rows * fraction))
    if n_hold == 0:
        return data, None
    if data.n_rows - n_hold < MIN_ROWS:
        raise DataError(f"{what}={fraction} leaves {data.n_rows - n_hold} training "
                        f"rows of {data.n_rows}; at least {MIN_ROWS} are needed")
    perm = np.random.default_rng(seed).permutation(data.n_rows)
    hold, keep = np.sort(perm[:n_hold]), np.sort(perm[n_hold:])

    def take(idx: np.ndarray) -> Dataset:
        return dataclasses.replace(
            data, features=data.features[idx], conditions=data.conditions[idx],
            weights=data.weights[idx] if data.weights is not None else None)

    return take(keep), take(hold)


@dataclass
class Splits:
    """The rows of one job: `train` (not held out) = `fit` (gradient steps) + `validation`
    (model selection); `held` for the report. Unpacks as (train, held, fit, validation)."""

    train: Dataset
    held: Dataset | None
    fit: Dataset
    validation: Dataset | None

    def __iter__(self):
        return iter((self.train, self.held, self.fit, self.validation))


def split_for_training(spec: JobSpec, data: Dataset) -> Splits:
    """The holdout (dataset.holdout_fraction), then the validation rows out of the rest
    (dataset.validation_fraction, when training.validate_every is on), both by event and
    seeded by training.seed, so every run of a spec sees the same rows."""
    train_data, held = split_holdout(data, spec.dataset.holdout_fraction, spec.training.seed)
    fit_data, validation = train_data, None
    if spec.training.validate_every:
        fit_data, validation = split_holdout(train_data, spec.dataset.validation_fraction,
                                             spec.training.seed + VALIDATION_SEED_OFFSET,
                                             what="validation_fraction")
    return Splits(train_data, held, fit_data, validation)


def quality_metrics(trained: TrainedModel, data: Dataset) -> dict[str, float]:
    """Cheap end-of-training measures; the toy mixtures get the 3-sigma mode coverage."""
    if data.modes is None or data.mode_std is None or trained.condition_transform is not None:
        return {}
    samples = sample_trained(trained, N_QUALITY_SAMPLES, seed=trained.spec.training.seed)
    cov = mode_coverage(samples, data.modes, data.mode_std)
    return {
        "modes_captured": float(cov.modes_captured),
        "n_modes": float(cov.n_modes),
        "high_quality_fraction": cov.high_quality_fraction,
    }


def _stop_if_asked(should_stop: Callable[[], bool] | None, where: str) -> None:
    """A stop hook between phases: training checkpoints itself on stop, the other phases have
    nothing to save, so they just end."""
    if should_stop is not None and should_stop():
        raise Cancelled(f"stopped {where}")


def run_job(
    spec: JobSpec,
    workdir: Path,
    *,
    data_roots: Sequence[Path] = (),
    upload_resolver: Callable[[str], Path] | None = None,
    allowed_hosts: Sequence[str] | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    check_data: Callable[[JobSpec, Dataset], None] | None = None,
    limits: DataLimits | None = None,
) -> JobResult:
    """Raises models.datasets.DataError for bad data and models.train.Cancelled on cancel.

    `should_stop` is polled at every step of training and between the phases (after loading,
    before the report, before the export), so a stop request reaches the job wherever it is
    at the next boundary. `check_data(spec, data)` runs once the data are loaded (the
    worker's memory estimate with their real shape) and may raise to end the job.
    `limits` bound the data file before it is read (models.datasets.DataLimits; the worker
    passes its settings' MAX_DATA_CELLS...; None: the defaults)."""
    workdir.mkdir(parents=True, exist_ok=True)
    data = load_dataset(
        spec.dataset, data_roots=data_roots, upload_resolver=upload_resolver,
        allowed_hosts=allowed_hosts, limits=limits,
    )
    _stop_if_asked(should_stop, "after loading the data")
    if check_data is not None:
        check_data(spec, data)
    train_data, held, fit_data, validation = split_for_training(spec, data)
    trained = train(spec, fit_data, validation=validation, workdir=workdir,
                    on_progress=on_progress, should_stop=should_stop)
    _stop_if_asked(should_stop, "before the quality report")
    metrics = quality_metrics(trained, data)
    from models.quality_report import make_report  # noqa: PLC0415 (matplotlib: only here)

    try:  # a trained model is not lost to a failing report: the report then says why
        quality, plots = make_report(trained, train_data, held, workdir / REPORT_DIR)
    except Exception as exc:
        log.exception("the quality report failed")
        quality, plots = {"error": f"{type(exc).__name__}: {exc}", "plots": []}, {}

    # What the model says of itself: in the ONNX file (as strings, JSON where not one) and in
    # the job's result, from this one dict.
    described = {
        "feature_names": trained.feature_names,
        "condition_names": trained.condition_names,
        # {categorical condition: its values}; the graph takes a value's index (its code).
        "categories": data.categories,
        "objective": spec.objective.name,
        "architecture": spec.architecture.name,
        "latent_dim": trained.spec.architecture.latent_dim,
        "image_shape": list(trained.image_shape) if trained.image_shape else None,
        "spec_hash": spec.spec_hash(),
    }
    metadata = {k: v if isinstance(v, str) else json.dumps(v) for k, v in described.items()}
    onnx_path = workdir / ONNX_NAME
    _stop_if_asked(should_stop, "before the export")
    report = export_onnx(
        copy.deepcopy(trained.generator).cpu(),
        onnx_path,
        feature_transform=trained.feature_transform,
        condition_transform=trained.condition_transform,
        metadata=metadata,
    )
    last = trained.history[-1] if trained.history else None
    return JobResult(
        onnx_path=onnx_path,
        metadata={
            **described,
            "onnx_sha256": report.sha256,
            "export_max_abs_error": report.max_abs_error,
            "training_device": trained.device,
            "resumed_from_step": trained.resumed_from,
            "final_losses": last.losses if last else {},
            "metrics": metrics,
            "selection": {"best_step": trained.best_step, "best_validation_swd":
                          trained.best_score, "last_step": trained.last_step,
                          "stopped_early": trained.last_step < spec.training.steps},
        },
        report=quality,
        plots=plots,
    )
