"""Response and request bodies of the API (the job spec itself is models.spec.JobSpec)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from gan_platform.records import Status as JobStatus


class ProgressOut(BaseModel):
    step: int = 0
    total_steps: int
    losses: dict[str, float] = Field(default_factory=dict)
    metrics: dict[str, float] = Field(default_factory=dict)


class JobOut(BaseModel):
    id: str
    status: JobStatus
    spec: dict[str, Any]
    progress: ProgressOut
    error: str | None = None
    model_id: str | None = None
    attempts: int = Field(description="times a worker has claimed the job")
    owner: str | None = Field(None, description="the name of the API key that submitted it")
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> JobOut:
        total = int(row["spec"].get("training", {}).get("steps", 0))
        progress = row.get("progress") or {"step": 0, "total_steps": total}
        return cls(
            id=row["id"],
            status=row["status"],
            spec=row["spec"],
            progress=ProgressOut(**progress),
            error=row.get("error"),
            model_id=row.get("model_id"),
            attempts=row.get("attempts") or 0,
            owner=row.get("owner"),
            created_at=row["created_at"],
            started_at=row.get("started_at"),
            finished_at=row.get("finished_at"),
        )


class JobList(BaseModel):
    items: list[JobOut]
    total: int
    limit: int
    offset: int


class ModelOut(BaseModel):
    id: str
    job_id: str
    created_at: datetime
    features: list[str]
    conditions: list[str]
    objective: str | None = None
    architecture: str | None = None
    latent_dim: int | None = None
    image_shape: list[int] | None = None
    categories: dict[str, list[int | str]] = Field(
        default_factory=dict, description="the values each categorical condition takes")
    metrics: dict[str, Any] = Field(default_factory=dict)
    final_losses: dict[str, float] = Field(default_factory=dict)
    selection: dict[str, Any] = Field(
        default_factory=dict,
        description="model selection: best_step (whose weights were exported), "
                    "best_validation_swd, last_step, stopped_early")
    spec_hash: str | None = None
    onnx_sha256: str
    onnx_url: str
    export_max_abs_error: float | None = None
    training_device: str | None = None
    provider: str | None = Field(
        None, description="the ONNX Runtime execution provider that serves samples"
    )
    owner: str | None = Field(None, description="the API key that trained it (its job's owner)")
    visibility: Literal["private", "shared"] = Field(
        "private", description="private: its owner's (and admins'); shared: every sample key's")

    @classmethod
    def from_row(cls, row: dict[str, Any], provider: str | None) -> ModelOut:
        meta = row["metadata"] or {}
        return cls(
            id=row["id"],
            job_id=row["job_id"],
            created_at=row["created_at"],
            features=meta.get("feature_names", []),
            conditions=meta.get("condition_names", []),
            objective=meta.get("objective"),
            architecture=meta.get("architecture"),
            latent_dim=meta.get("latent_dim"),
            image_shape=meta.get("image_shape"),
            categories=meta.get("categories") or {},
            metrics=meta.get("metrics") or {},
            final_losses=meta.get("final_losses") or {},
            selection=meta.get("selection") or {},
            spec_hash=meta.get("spec_hash"),
            onnx_sha256=row["onnx_sha256"],
            onnx_url=f"/v1/models/{row['id']}/onnx",
            export_max_abs_error=meta.get("export_max_abs_error"),
            training_device=meta.get("training_device"),
            provider=provider,
            owner=row.get("owner"),
            visibility=row.get("visibility") or "private",
        )


class ModelUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    visibility: Literal["private", "shared"]


class ModelList(BaseModel):
    items: list[ModelOut]
    total: int
    limit: int
    offset: int


class DatasetOut(BaseModel):
    id: str
    uri: str = Field(description="use it as dataset.uri in a job spec")
    filename: str
    format: str
    size: int
    sha256: str
    created_at: datetime


class SamplesRequest(BaseModel):
    """Per-row conditions: one sample per row. Unconditional models take `n` instead.
    A categorical condition takes its values (integers or strings) as the model lists them."""

    model_config = ConfigDict(extra="forbid")

    conditions: dict[str, list[float | int | str]] = Field(default_factory=dict)
    n: int | None = Field(None, ge=1)
    seed: int | None = Field(None, ge=0, lt=2**63)
