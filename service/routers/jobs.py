"""/v1/jobs: submit, list, read, cancel, and watch (server-sent events)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from gan_platform.records import CANCELLED, STATUSES, TERMINAL
from models.spec import JobSpec
from service.auth import PrincipalDep
from service.deps import RecordsDep, SenderDep, ServicesDep, SettingsDep
from service.ownership import visible_job
from service.problems import Problem, invalid
from service.schemas import JobList, JobOut, JobStatus
from service.submission import submit

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])


@router.post("", status_code=202, response_model=JobOut,
             responses={202: {"description": "queued; Location names the job"}})
def submit_job(
    spec: JobSpec,
    response: Response,
    records: RecordsDep,
    settings: SettingsDep,
    sender: SenderDep,
    principal: PrincipalDep,
    idempotency_key: Annotated[str | None, Header(max_length=255)] = None,
) -> JobOut:
    """Queue a training job. The same `Idempotency-Key` returns the same job."""
    done = submit(spec, principal, records=records, settings=settings, sender=sender,
                  idempotency_key=idempotency_key)
    response.headers["Location"] = f"/v1/jobs/{done.job['id']}"
    if done.replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return JobOut.from_row(done.job)


@router.get("", response_model=JobList)
def list_jobs(
    records: RecordsDep,
    principal: PrincipalDep,
    status: Annotated[list[JobStatus] | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> JobList:
    """Newest first. `status` may be repeated (`?status=queued&status=running`). A non-admin
    key lists only its own jobs."""
    owner = None if principal.is_admin else (principal.owner or "")
    items, total = records.list_jobs(status=status, owner=owner, limit=limit, offset=offset)
    return JobList(items=[JobOut.from_row(j) for j in items], total=total, limit=limit,
                   offset=offset)


@router.get("/{job_id}", response_model=JobOut)
def get_job(job_id: str, records: RecordsDep, principal: PrincipalDep) -> JobOut:
    return JobOut.from_row(visible_job(records, job_id, principal))


@router.post("/{job_id}/cancel", response_model=JobOut,
             responses={202: {"description": "running: the worker stops at its next step"}})
def cancel_job(job_id: str, records: RecordsDep, principal: PrincipalDep) -> JSONResponse:
    """Cooperative: a queued job ends `cancelled` now; a running one becomes `cancelling` and
    ends `cancelled` when its worker reaches its next step. A finished job: 409."""
    before = visible_job(records, job_id, principal)
    job = records.request_cancel(job_id)
    assert job is not None
    if before["status"] in TERMINAL:
        raise Problem(409, f"job {job_id} has already ended {before['status']}",
                      title="Job already finished", type="job-finished")
    body = JobOut.from_row(job).model_dump(mode="json")
    return JSONResponse(body, status_code=200 if job["status"] == CANCELLED else 202)


@router.get(
    "/{job_id}/events",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}},
                     "description": "`progress` events (id: history row), `status` events on "
                     "each change, and a last `end` event with the final job"}},
)
async def job_events(
    job_id: str,
    request: Request,
    records: RecordsDep,
    services: ServicesDep,
    principal: PrincipalDep,
    last_event_id: Annotated[str | None, Header()] = None,
) -> StreamingResponse:
    """Server-sent events: the progress history from the start (or after `Last-Event-ID`),
    then live; the stream ends with an `end` event carrying the final job. One API key may
    hold MAX_EVENT_STREAMS_PER_KEY streams at once."""
    await run_in_threadpool(visible_job, records, job_id, principal)
    after = _event_id(last_event_id)
    stream = services.events.open(job_id, after, principal.owner, request.is_disconnected,
                                  lambda job: JobOut.from_row(job).model_dump_json())
    return StreamingResponse(
        stream, media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


MAX_EVENT_ID = 2**63 - 1  # the largest id a 64-bit integer column holds


def _event_id(header: str | None) -> int:
    """Last-Event-ID as the event id it must be (0 without the header); 422 otherwise."""
    if not header:
        return 0
    text = header.strip()
    if not text.isdigit() or len(text) > 19 or int(text) > MAX_EVENT_ID:
        raise invalid("Last-Event-ID must be an event id sent by this stream (an integer "
                      f"0..{MAX_EVENT_ID})", ["header", "last-event-id"])
    return int(text)


__all__ = ["router", "STATUSES"]
