"""A job from spec to ONNX file: load the data, train (resuming), export, measure."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from models.datasets import Dataset, load_dataset
from models.export import export_onnx
from models.metrics import mode_coverage
from models.spec import JobSpec
from models.train import Cancelled, Progress, TrainedModel, train

ONNX_NAME = "generator.onnx"
N_QUALITY_SAMPLES = 2500  # as in the VEEGAN / PacGAN mode-coverage tables

__all__ = ["Cancelled", "JobResult", "Progress", "run_job", "sample_trained"]


@dataclass
class JobResult:
    onnx_path: Path
    metadata: dict


@torch.no_grad()
def sample_trained(trained: TrainedModel, n: int, conditions: np.ndarray | None = None,
                   seed: int = 0) -> np.ndarray:
    """n samples [n, F] in physical units from the trained generator (PyTorch, for checks)."""
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(n, trained.spec.architecture.latent_dim, generator=gen)
    device = next(trained.generator.parameters()).device
    a = None
    if trained.condition_transform is not None:
        if conditions is None:
            raise ValueError("this generator is conditional: pass conditions [n, C]")
        a = torch.as_tensor(trained.condition_transform.forward(conditions), dtype=torch.float32)
        a = a.to(device)
    out = trained.generator(z.to(device), a).cpu().numpy()
    return trained.feature_transform.inverse(out)


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


def run_job(
    spec: JobSpec,
    workdir: Path,
    *,
    data_roots: Sequence[Path] = (),
    upload_resolver: Callable[[str], Path] | None = None,
    allowed_hosts: Sequence[str] | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> JobResult:
    """Raises models.datasets.DataError for bad data and models.train.Cancelled on cancel."""
    workdir.mkdir(parents=True, exist_ok=True)
    data = load_dataset(
        spec.dataset, data_roots=data_roots, upload_resolver=upload_resolver,
        allowed_hosts=allowed_hosts,
    )
    trained = train(spec, data, workdir=workdir, on_progress=on_progress, should_stop=should_stop)
    metrics = quality_metrics(trained, data)

    metadata = {
        "feature_names": json.dumps(trained.feature_names),
        "condition_names": json.dumps(trained.condition_names),
        "objective": spec.objective.name,
        "architecture": spec.architecture.name,
        "latent_dim": str(spec.architecture.latent_dim),
        "image_shape": json.dumps(trained.image_shape),
        "spec_hash": spec.spec_hash(),
    }
    onnx_path = workdir / ONNX_NAME
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
            "feature_names": trained.feature_names,
            "condition_names": trained.condition_names,
            "objective": spec.objective.name,
            "architecture": spec.architecture.name,
            "latent_dim": spec.architecture.latent_dim,
            "image_shape": list(trained.image_shape) if trained.image_shape else None,
            "spec_hash": spec.spec_hash(),
            "onnx_sha256": report.sha256,
            "export_max_abs_error": report.max_abs_error,
            "training_device": trained.device,
            "resumed_from_step": trained.resumed_from,
            "final_losses": last.losses if last else {},
            "metrics": metrics,
        },
    )
