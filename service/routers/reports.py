"""Judging a model: its quality report and plots (/v1/models/{id}/report, /plots/{name}.png),
and the whole training curve of a job (/v1/jobs/{id}/metrics)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import FileResponse, JSONResponse

from gan_platform.artifacts import PLOT_NAME, plot_key
from service.auth import PrincipalDep
from service.deps import RecordsDep, StoreDep
from service.ownership import visible_job, visible_model
from service.problems import not_found

router = APIRouter(tags=["reports"])


def _report(records: RecordsDep, model_id: str, principal: PrincipalDep) -> dict[str, Any]:
    row = visible_model(records, model_id, principal)
    report = (row["metadata"] or {}).get("report")
    if not report:
        raise not_found("report of model", model_id)
    return report


@router.get("/v1/models/{model_id}/report")
def get_report(model_id: str, records: RecordsDep, principal: PrincipalDep) -> JSONResponse:
    """The quality report computed by the worker at the end of training, on the held-out rows:
    per-feature W1 / KS / means / stds, correlation difference, energy distance, classifier
    two-sample AUC, per-condition bins, mode coverage or image measures, and `plots` (names for
    `/v1/models/{id}/plots/{name}.png`)."""
    report = _report(records, model_id, principal)
    body = {**report, "plot_urls": {name: f"/v1/models/{model_id}/plots/{name}.png"
                                    for name in report.get("plots", [])}}
    return JSONResponse(body)


@router.get("/v1/models/{model_id}/plots/{name}.png", response_class=FileResponse,
            responses={200: {"content": {"image/png": {}}}})
def get_plot(model_id: str, name: str, records: RecordsDep, store: StoreDep,
             principal: PrincipalDep) -> FileResponse:
    """One PNG of the report (`plots` in the report lists the names)."""
    report = _report(records, model_id, principal)
    if not PLOT_NAME.match(name) or name not in report.get("plots", []):
        raise not_found("plot", f"{model_id}/{name}")
    path = store.local_path(plot_key(model_id, name))
    return FileResponse(path, media_type="image/png",
                        headers={"Cache-Control": "private, max-age=86400"})


# The training curve belongs with the job: it needs the `train` scope, as GET /v1/jobs/{id}.
job_router = APIRouter(tags=["reports"])


@job_router.get("/v1/jobs/{job_id}/metrics")
def get_job_metrics(job_id: str, records: RecordsDep, principal: PrincipalDep) -> JSONResponse:
    """The whole progress curve: one point per logged step (step, losses, metrics such as
    referee_auc, validation_swd, steps_per_second and eta_seconds). A step logged again after a
    resume keeps its latest value."""
    visible_job(records, job_id, principal)  # 404 for another key's job, as GET /v1/jobs/{id}
    points = [{"step": ev["step"], "total_steps": ev["total_steps"], "losses": ev["losses"],
               "metrics": ev["metrics"], "attempt": ev["attempt"],
               "time": ev["created_at"].isoformat() if ev.get("created_at") else None}
              for ev in records.progress_curve(job_id)]
    return JSONResponse({"job_id": job_id, "points": points})
