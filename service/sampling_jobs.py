"""Batch sampling jobs, the API's side: the request and answer bodies, the submission rules,
who may see a job, and the event feed (docs/how-to/batch-sampling.md).

The API validates what is cheap to validate (the model, the URI and the upload's owner, the
columns and rows of a local CSV, Parquet or NPY file from its header, the limits), stores
the job and sends `sampling_plan` by name; a worker plans it into chunks (worker/sampling.py).
"""

from __future__ import annotations

import json
import logging
import secrets
from datetime import datetime
from typing import Any, Literal

from celery import Celery
from pydantic import BaseModel, ConfigDict, Field

from gan_platform.artifacts import ArtifactStore
from gan_platform.records import SUCCEEDED, QuotaExceeded, Records
from gan_platform.records import Status as JobStatus
from gan_platform.settings import Settings
from service.auth import Principal
from service.ownership import check_upload_owner, visible_model
from service.problems import Problem, invalid, not_found
from service.validation import check_dataset_uri
from serving.batch import PIECE_ROWS

log = logging.getLogger("service")

PLAN_TASK = "sampling_plan"  # worker/sampling.py PLAN_TASK: sent by name
DEFAULT_CHUNK_ROWS = 4 * PIECE_ROWS  # 262,144
PARQUET = "application/vnd.apache.parquet"


# --- bodies ----------------------------------------------------------------------------------


class SamplingDataset(BaseModel):
    """The conditions: one generated row per row of this data set, in its order."""

    model_config = ConfigDict(extra="forbid")

    uri: str = Field(
        min_length=1,
        description="Any URI a training job reads: builtin://NAME, file:///abs/path (under "
                    "DATA_ROOTS), dataset://ID (an upload), http(s):// or s3:// (ALLOWED_HOSTS).")
    table: str | None = Field(
        None, description="The TTree, HDF5 dataset or NPZ array. null: the file's only one.")
    conditions: list[str] | None = Field(
        None, min_length=1,
        description="The columns holding the model's conditions, in the model's condition "
                    "order (a categorical condition's column holds its values). null: the "
                    "columns named as the model's conditions.")
    max_rows: int | None = Field(
        None, ge=1, lt=2**63, description="Keep the first max_rows rows. null: all of them.")


class SamplingJobRequest(BaseModel):
    """A conditional model takes `dataset`; an unconditional one takes `n`."""

    model_config = ConfigDict(extra="forbid")

    dataset: SamplingDataset | None = Field(
        None, description="The conditions data set (conditional models).")
    n: int | None = Field(None, ge=1, description="Rows to draw (unconditional models).")
    seed: int | None = Field(
        None, ge=0, lt=2**63,
        description="The job's seed; piece p of 65,536 rows is drawn with "
                    "serving.batch.piece_seed(seed, p). Random if absent (the job says which).")
    chunk_rows: int = Field(
        DEFAULT_CHUNK_ROWS, ge=PIECE_ROWS,
        description="Rows per chunk, the unit of work of one worker: a multiple of 65,536, at "
                    "most MAX_SAMPLING_CHUNK_ROWS. It does not change the rows drawn.")


class SamplingProgress(BaseModel):
    rows_done: int = Field(description="rows of the chunks done")
    rows_total: int | None = Field(None, description="the job's rows, once known")
    chunks_done: int
    chunks_total: int | None = Field(None, description="known once a worker planned the job")


class SamplingJobOut(BaseModel):
    id: str
    model_id: str
    status: JobStatus
    request: dict[str, Any] = Field(description="the request as accepted, its seed chosen")
    seed: int
    chunk_rows: int
    progress: SamplingProgress
    condition_columns: list[str] | None = Field(
        None, description="the result's first columns: the conditions as given (once planned)")
    feature_columns: list[str] | None = Field(
        None, description="the result's generated columns (once planned)")
    error: str | None = None
    attempts: int = Field(description="times a worker has claimed the job to plan it")
    owner: str | None = Field(None, description="the name of the API key that submitted it")
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    result_url: str | None = Field(None, description="the result's manifest, once succeeded")

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> SamplingJobOut:
        plan = row.get("plan") or {}
        return cls(
            id=row["id"], model_id=row["model_id"], status=row["status"],
            request=row["request"], seed=int(row["seed"]), chunk_rows=int(row["chunk_rows"]),
            progress=SamplingProgress(
                rows_done=int(row.get("rows_done") or 0), rows_total=row.get("total_rows"),
                chunks_done=int(row.get("chunks_done") or 0),
                chunks_total=row.get("chunks_total")),
            condition_columns=plan.get("conditions") if plan else None,
            feature_columns=plan.get("features") if plan else None,
            error=row.get("error"), attempts=int(row.get("attempts") or 0),
            owner=row.get("owner"), created_at=row["created_at"],
            started_at=row.get("started_at"), finished_at=row.get("finished_at"),
            result_url=(f"/v1/sampling-jobs/{row['id']}/result"
                        if row["status"] == SUCCEEDED else None),
        )


class SamplingJobList(BaseModel):
    items: list[SamplingJobOut]
    total: int
    limit: int
    offset: int


class SamplingShard(BaseModel):
    chunk: int
    start: int = Field(description="its first row, counted in the job's rows from 0")
    stop: int = Field(description="one past its last row")
    rows: int
    url: str = Field(description="the Parquet file (GET, with the same API key)")
    bytes: int
    sha256: str


class SamplingResult(BaseModel):
    """The result, sharded: concatenated in `chunk` order, the shards are the job's rows in
    the order of the conditions data set."""

    job_id: str
    model_id: str
    format: Literal["parquet"] = "parquet"
    rows: int
    columns: list[str] = Field(description="every shard's columns: conditions, then features")
    condition_columns: list[str]
    feature_columns: list[str]
    seed: int
    piece_rows: int = Field(PIECE_ROWS, description="the seeding unit (docs: the seeding rule)")
    shards: list[SamplingShard]


# --- who may see a job -------------------------------------------------------------------------


def visible_sampling_job(records: Records, job_id: str, principal: Principal
                         ) -> dict[str, Any]:
    """The sampling job, or 404 when there is none or it is another (non-admin) key's."""
    job = records.get_sampling_job(job_id)
    if job is None or not principal.can_see(job["owner"]):
        raise not_found("sampling job", job_id)
    return job


# --- submitting ---------------------------------------------------------------------------------


def submit_sampling_job(model_id: str, body: SamplingJobRequest, principal: Principal, *,
                        records: Records, settings: Settings, store: ArtifactStore,
                        sender: Celery) -> dict[str, Any]:
    """Validate, store and send a batch sampling job; problems (4xx) for one no worker
    would run."""
    model = visible_model(records, model_id, principal)
    meta = model["metadata"] or {}
    conditions: list[str] = list(meta.get("condition_names") or [])
    features: list[str] = list(meta.get("feature_names") or [])
    limit = settings.MAX_SAMPLING_JOB_ROWS
    chunk_rows = body.chunk_rows
    if chunk_rows % PIECE_ROWS or chunk_rows > settings.MAX_SAMPLING_CHUNK_ROWS:
        raise invalid(f"chunk_rows={chunk_rows} must be a multiple of {PIECE_ROWS} and at most "
                      f"MAX_SAMPLING_CHUNK_ROWS={settings.MAX_SAMPLING_CHUNK_ROWS}",
                      ["body", "chunk_rows"])
    total: int | None = None
    if conditions:
        if body.n is not None:
            raise invalid(f"this model is conditional ({conditions}): give `dataset`, the "
                          "conditions of the rows, not `n`", ["body", "n"])
        if body.dataset is None:
            raise invalid(f"this model is conditional: give `dataset`, a data set with the "
                          f"columns of its conditions {conditions}", ["body", "dataset"])
        total = _check_dataset(body.dataset, conditions, features, principal,
                               records=records, settings=settings, store=store)
    else:
        if body.dataset is not None:
            raise invalid("this model is unconditional: give `n`, not a data set",
                          ["body", "dataset"])
        if body.n is None:
            raise invalid("give the number of rows `n`", ["body", "n"])
        total = body.n
    if total is not None and total > limit:
        raise invalid(f"{total} rows is above MAX_SAMPLING_JOB_ROWS={limit}",
                      ["body", "n"] if body.n is not None else ["body", "dataset", "max_rows"])
    seed = body.seed if body.seed is not None else secrets.randbits(63)
    request = body.model_dump(mode="json")
    request["seed"] = seed
    try:
        job = records.create_sampling_job(
            model_id=model_id, owner=principal.owner, request=request, seed=seed,
            chunk_rows=chunk_rows, total_rows=total,
            max_active=settings.MAX_ACTIVE_SAMPLING_JOBS_PER_KEY)
    except QuotaExceeded as exc:
        raise Problem(429, f"this API key has {exc.active} queued or running sampling jobs; "
                      f"MAX_ACTIVE_SAMPLING_JOBS_PER_KEY="
                      f"{settings.MAX_ACTIVE_SAMPLING_JOBS_PER_KEY}",
                      title="Too many sampling jobs", type="too-many-jobs",
                      headers={"Retry-After": "60"}) from exc
    send_plan(sender, settings, job["id"])
    return job


def _check_dataset(dataset: SamplingDataset, conditions: list[str], features: list[str],
                   principal: Principal, *, records: Records, settings: Settings,
                   store: ArtifactStore) -> int | None:
    """The checks of the conditions data set; its rows when its header tells them."""
    loc: list[str | int] = ["body", "dataset", "conditions"]
    columns = dataset.conditions or conditions
    if len(columns) != len(conditions):
        raise invalid(f"{len(columns)} condition columns given; the model takes "
                      f"{len(conditions)}, in this order: {conditions}", loc)
    twice = sorted({c for c in columns if columns.count(c) > 1})
    if twice:
        raise invalid(f"columns given twice: {twice}", loc)
    clash = sorted(set(columns) & set(features))
    if clash:
        raise invalid(f"condition column(s) {clash} have the names of the model's generated "
                      "features; rename them in the file", loc)
    check_dataset_uri(dataset.uri, settings, records)
    check_upload_owner(dataset.uri, records, principal)
    return _peek(dataset, columns, conditions, records=records, settings=settings, store=store)


def _peek(dataset: SamplingDataset, columns: list[str], conditions: list[str], *,
          records: Records, settings: Settings, store: ArtifactStore) -> int | None:
    """The columns and rows of a local CSV, Parquet or NPY file, from its header (cheap);
    None where only a worker can tell (the worker checks every source)."""
    from models.datasets import DataError, DataLimits
    from models.datasets.rows import peek_columns

    if dataset.uri.startswith("dataset://") and not store.local:
        return None  # the upload would be downloaded to read its header: the worker does

    def upload_path(dataset_id: str) -> Any:
        row = records.get_dataset(dataset_id)
        if row is None:
            raise DataError(f"no uploaded data set {dataset_id!r}")
        return store.local_path(store.key_of(row["artifact_uri"]))

    try:
        peeked = peek_columns(dataset.uri, dataset.table, data_roots=settings.DATA_ROOTS,
                              upload_resolver=upload_path,
                              limits=DataLimits.from_settings(settings))
    except DataError as exc:
        raise invalid(str(exc), ["body", "dataset", "uri"]) from exc
    if peeked is None:
        return None
    have, rows, label = peeked
    missing = [c for c in columns if c not in have]
    if missing:
        shown = ", ".join(repr(c) for c in have[:40])
        raise invalid(f"{label} has no column(s) {', '.join(repr(c) for c in missing)} (the "
                      f"model's conditions {conditions} are read from {columns}); its "
                      f"columns: {shown}", ["body", "dataset", "conditions"])
    if rows is None:
        return None
    rows = min(rows, dataset.max_rows or rows)
    if rows < 1:
        raise invalid(f"{label} holds no rows", ["body", "dataset", "uri"])
    return rows


def send_plan(sender: Celery, settings: Settings, job_id: str) -> bool:
    """Publish `sampling_plan`; False if the broker could not be reached (the job stays
    queued in the database and a worker's reaper sends it later)."""
    if not settings.broker_url:
        log.error("no broker configured (REDIS_URL unset): sampling job %s waits for a reaper",
                  job_id)
        return False
    try:
        sender.send_task(PLAN_TASK, args=[job_id], queue=settings.TASK_QUEUE)
        return True
    except Exception:
        log.exception("could not send sampling job %s; a reaper will re-send it", job_id)
        return False


# --- results and events -----------------------------------------------------------------------


def result_of(job: dict[str, Any], records: Records) -> SamplingResult:
    """The manifest of a succeeded job's shards; 409 before it succeeded."""
    if job["status"] != SUCCEEDED:
        raise Problem(409, f"sampling job {job['id']} is {job['status']}; its result is "
                      "there once it has succeeded", title="No result yet",
                      type="no-result")
    plan = job["plan"] or {}
    shards = [SamplingShard(
        chunk=int(c["chunk"]), start=int(c["start"]), stop=int(c["stop"]),
        rows=int(c["stop"]) - int(c["start"]),
        url=f"/v1/sampling-jobs/{job['id']}/shards/{c['chunk']}",
        bytes=int(c["shard_bytes"] or 0), sha256=str(c["shard_sha256"]))
        for c in records.sampling_chunks(job["id"])]
    conditions, features = list(plan.get("conditions") or []), list(plan.get("features") or [])
    return SamplingResult(job_id=job["id"], model_id=job["model_id"],
                          rows=int(job["total_rows"] or 0), columns=conditions + features,
                          condition_columns=conditions, feature_columns=features,
                          seed=int(job["seed"]), shards=shards)


class SamplingFeed:
    """The event feed of sampling jobs (service.events.FeedSource): a chunk done is an event."""

    def __init__(self, records: Records) -> None:
        self.records = records

    def events_since(self, job_id: str, after_id: int = 0, limit: int = 1000) -> list[dict]:
        return self.records.sampling_events_since(job_id, after_id, limit)

    def get_job(self, job_id: str) -> dict[str, Any] | None:
        return self.records.get_sampling_job(job_id)


def chunk_event(ev: dict[str, Any]) -> str:
    data = {k: ev[k] for k in ("chunk", "start", "stop", "rows", "attempt", "chunks_done",
                               "rows_done")}
    return f"id: {ev['id']}\nevent: progress\ndata: {json.dumps(data)}\n\n"
