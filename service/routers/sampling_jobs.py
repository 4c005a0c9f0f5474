"""Batch sampling jobs: POST /v1/models/{id}/sampling-jobs, and /v1/sampling-jobs (read, list,
cancel, watch, the result and its Parquet shards). docs/how-to/batch-sampling.md."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from gan_platform.records import CANCELLED, SUCCEEDED, TERMINAL
from gan_platform.records import Status as JobStatus
from service.auth import PrincipalDep
from service.deps import RecordsDep, SenderDep, ServicesDep, SettingsDep, StoreDep
from service.problems import Problem, not_found
from service.routers.jobs import _event_id
from service.sampling_jobs import (
    PARQUET,
    SamplingJobList,
    SamplingJobOut,
    SamplingJobRequest,
    SamplingResult,
    result_of,
    submit_sampling_job,
    visible_sampling_job,
)

model_router = APIRouter(prefix="/v1/models", tags=["sampling jobs"])
router = APIRouter(prefix="/v1/sampling-jobs", tags=["sampling jobs"])


@model_router.post("/{model_id}/sampling-jobs", status_code=202, response_model=SamplingJobOut,
                   responses={202: {"description": "queued; Location names the job"}})
def submit(model_id: str, body: SamplingJobRequest, response: Response, records: RecordsDep,
           settings: SettingsDep, store: StoreDep, sender: SenderDep,
           principal: PrincipalDep) -> SamplingJobOut:
    """Queue a batch sampling job of a model the caller may sample: one generated row per row
    of the conditions data set `dataset` (any URI a training job reads, uploads included), or
    `n` rows of an unconditional model. Workers sample it in chunks, and its result is a set
    of Parquet shards: the condition columns as given, then the generated columns, row for
    row in the data set's order. Piece p (65,536 rows) is drawn with the seed
    `serving.batch.piece_seed(seed, p)`, whatever the chunks and the workers."""
    job = submit_sampling_job(model_id, body, principal, records=records, settings=settings,
                              store=store, sender=sender)
    response.headers["Location"] = f"/v1/sampling-jobs/{job['id']}"
    return SamplingJobOut.from_row(job)


@router.get("", response_model=SamplingJobList)
def list_sampling_jobs(
    records: RecordsDep,
    principal: PrincipalDep,
    status: Annotated[list[JobStatus] | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> SamplingJobList:
    """Newest first; `status` may be repeated. A non-admin key lists only its own jobs."""
    owner = None if principal.is_admin else (principal.owner or "")
    items, total = records.list_sampling_jobs(status=status, owner=owner, limit=limit,
                                              offset=offset)
    return SamplingJobList(items=[SamplingJobOut.from_row(j) for j in items], total=total,
                           limit=limit, offset=offset)


@router.get("/{job_id}", response_model=SamplingJobOut)
def get_sampling_job(job_id: str, records: RecordsDep,
                     principal: PrincipalDep) -> SamplingJobOut:
    """The job: its status and progress (rows and chunks done of their totals)."""
    return SamplingJobOut.from_row(visible_sampling_job(records, job_id, principal))


@router.post("/{job_id}/cancel", response_model=SamplingJobOut,
             responses={202: {"description": "running: its chunks stop at their next piece"}})
def cancel_sampling_job(job_id: str, records: RecordsDep,
                        principal: PrincipalDep) -> JSONResponse:
    """A queued job ends `cancelled` now; a running one becomes `cancelling`: its chunks not
    yet started are not run, the running ones stop at their next piece of 65,536 rows, and
    it ends `cancelled` (200 when that is at once, 202 otherwise). A finished job: 409."""
    before = visible_sampling_job(records, job_id, principal)
    job = records.request_sampling_cancel(job_id)
    assert job is not None
    if before["status"] in TERMINAL:
        raise Problem(409, f"sampling job {job_id} has already ended {before['status']}",
                      title="Job already finished", type="job-finished")
    body = SamplingJobOut.from_row(job).model_dump(mode="json")
    return JSONResponse(body, status_code=200 if job["status"] == CANCELLED else 202)


@router.get(
    "/{job_id}/events",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}},
                     "description": "a `progress` event per chunk done (id: the number of "
                     "chunks done), `status` events on each change, and a last `end` event "
                     "with the final job"}},
)
async def sampling_job_events(
    job_id: str,
    request: Request,
    records: RecordsDep,
    services: ServicesDep,
    principal: PrincipalDep,
    last_event_id: Annotated[str | None, Header()] = None,
) -> StreamingResponse:
    """Server-sent events, as a training job's: the chunks done from the start (or after
    `Last-Event-ID`), then live, ending with an `end` event carrying the final job. Counted
    in MAX_EVENT_STREAMS_PER_KEY with the training jobs' streams."""
    await run_in_threadpool(visible_sampling_job, records, job_id, principal)
    after = _event_id(last_event_id)
    stream = services.sampling_events.open(
        job_id, after, principal.owner, request.is_disconnected,
        lambda job: SamplingJobOut.from_row(job).model_dump_json())
    return StreamingResponse(stream, media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


@router.get("/{job_id}/result", response_model=SamplingResult,
            responses={409: {"description": "the job has not succeeded (yet)"}})
def sampling_job_result(job_id: str, records: RecordsDep,
                        principal: PrincipalDep) -> SamplingResult:
    """The result of a succeeded job: a manifest of its Parquet shards, one per chunk, in row
    order, each with its rows, size, SHA-256 and download URL. Read together
    (`pandas.concat` of the shards in `chunk` order) they are the job's rows in the order of
    its conditions data set."""
    return result_of(visible_sampling_job(records, job_id, principal), records)


@router.get("/{job_id}/shards/{chunk}", response_class=FileResponse,
            responses={200: {"content": {PARQUET: {}}},
                       409: {"description": "this chunk is not done (yet)"}})
def sampling_job_shard(job_id: str, chunk: int, records: RecordsDep, store: StoreDep,
                       principal: PrincipalDep) -> FileResponse:
    """One chunk's Parquet shard (ready as soon as the chunk is done, before the job ends):
    the condition columns as given, then the generated columns, a row group per 65,536
    rows. X-Checksum-SHA256 is its SHA-256."""
    visible_sampling_job(records, job_id, principal)
    found = next((c for c in records.sampling_chunks(job_id) if c["chunk"] == chunk), None)
    if found is None:
        raise not_found("chunk", f"{job_id}/{chunk}")
    if found["status"] != SUCCEEDED or not found["shard_key"]:
        raise Problem(409, f"chunk {chunk} of sampling job {job_id} is {found['status']}",
                      title="No shard yet", type="no-result")
    path = store.local_path(found["shard_key"])
    return FileResponse(path, media_type=PARQUET,
                        filename=f"samples-{job_id}-{chunk:05d}.parquet",
                        headers={"X-Checksum-SHA256": str(found["shard_sha256"])})
