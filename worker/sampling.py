"""Batch sampling jobs in the worker: the plan and the chunks (docs/how-to/batch-sampling.md).

Two tasks, sent by name: `sampling_plan` (job id), sent by the API, and `sample_chunk` (job id,
chunk), sent by the planner. Both follow the training jobs' discipline: the database decides
who runs what (an atomic claim and a lease renewed from a thread), every write is fenced by the
claim's token, the messages are acknowledged late, and the reaper re-queues a plan or a chunk
whose lease lapsed and re-sends lost messages.

- The **plan** opens the conditions data set (any URI a training job reads), checks that it
  has the columns the model's conditions are read from (a failed job names the missing one),
  counts its rows, cuts them into chunks and queues one task per chunk. A source that cannot
  be read a row range at a time in place (anything but a local Parquet or NPY file) is read
  once, here, and copied into the artifact store, one Parquet file per chunk.
- A **chunk** reads its rows' conditions, samples them piece by piece (serving.batch: each
  piece from its own seed, so the bytes do not depend on the worker or the attempt), stopping
  at the next piece when its job is cancelled or failed, and stores one Parquet shard: the
  condition columns as given, then the generated feature columns, row for row.

It all runs in the worker process itself: ONNX Runtime and pyarrow need no torch, and a
chunk's memory is bounded by MAX_SAMPLING_CHUNK_ROWS (a copied source by MAX_DATA_CELLS).
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from gan_platform.artifacts import sampling_conditions_key, sampling_shard_key
from gan_platform.logs import JOB_ID
from gan_platform.records import RUNNING, Records
from gan_platform.settings import Settings
from serving.batch import PIECE_ROWS, SamplingStopped, chunk_bounds, sample_rows
from serving.sampling import LoadedModel, ModelCache, SamplingError, encode_category
from worker.runner import SHUTTING_DOWN, Context, lease_token, may_read_upload

log = logging.getLogger("worker.sampling")

PLAN_TASK, CHUNK_TASK = "sampling_plan", "sample_chunk"
STATUS_POLL_SECONDS = 0.5  # a running chunk reads its job's status at most this often

_models = ModelCache(2)


class PlanError(Exception):
    """A job that cannot be planned (too many rows, no rows, a vanished model)."""


# --- sending ---------------------------------------------------------------------------------


def send_plan(app: Any, job_id: str) -> None:
    app.send_task(PLAN_TASK, args=[job_id], queue=app.conf.task_default_queue)


def send_chunk(app: Any, job_id: str, chunk: int) -> None:
    app.send_task(CHUNK_TASK, args=[job_id, chunk], queue=app.conf.task_default_queue)


# --- helpers ---------------------------------------------------------------------------------


class Renewer(threading.Thread):
    """Calls `renew()` every `interval` seconds until stopped."""

    def __init__(self, interval: float, renew: Callable[[], None], name: str) -> None:
        super().__init__(name=name, daemon=True)
        self.interval, self.renew = interval, renew
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(self.interval):
            try:
                self.renew()
            except Exception:  # the database away: keep trying; the lease may lapse
                log.exception("could not renew a lease")

    def stop(self) -> None:
        self.stopped.set()
        self.join(timeout=30)


def _tag(token: str) -> str:
    return token.rsplit(":", 1)[-1]


def _limits(settings: Settings) -> Any:
    from models.datasets import DataLimits

    return DataLimits.from_settings(settings)


def _model(ctx: Context, model_id: str) -> LoadedModel:
    row = ctx.records.get_model(model_id)
    if row is None:
        raise PlanError(f"model {model_id} no longer exists")
    store = ctx.store
    return _models.get(model_id, lambda: store.local_path(store.key_of(row["onnx_uri"])))


def _resolver(ctx: Context, owner: str | None) -> Callable[[str], Path]:
    """Uploads the job's owner may read (checked at submit, and again here)."""
    def resolve(dataset_id: str) -> Path:
        from models.datasets import DataError

        row = ctx.records.get_dataset(dataset_id)
        if row is None or not may_read_upload(owner, row["owner"], ctx.settings):
            raise DataError(f"no uploaded data set {dataset_id!r}")
        return ctx.store.local_path(ctx.store.key_of(row["artifact_uri"]))

    return resolve


def _write_parquet(columns: dict[str, Any], path: Path) -> None:
    """Columns (numpy or Arrow arrays) to one Parquet file, a row group per piece."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({name: pa.array(values) for name, values in columns.items()})
    pq.write_table(table, path, row_group_size=PIECE_ROWS)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _scratch(settings: Settings) -> Path:
    folder = Path(settings.WORK_ROOT) / "sampling"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


# --- the plan --------------------------------------------------------------------------------


def plan(ctx: Context, job_id: str, send: Callable[[str, int], None]) -> str:
    """Claim sampling job `job_id`, plan it, queue its chunks. What happened, for the log."""
    settings, records = ctx.settings, ctx.records
    token = lease_token()
    job = records.claim_sampling_plan(job_id, token, settings.LEASE_SECONDS,
                                      settings.MAX_ATTEMPTS)
    if job is None:
        current = records.get_sampling_job(job_id)
        state = current["status"] if current else "unknown"
        log.info("sampling job %s not claimable (%s): message dropped", job_id, state)
        return f"dropped:{state}"
    JOB_ID.set(job_id)
    log.info("sampling job %s: planning (attempt %d) by %s", job_id, job["attempts"], token)

    def renew() -> None:
        if not records.heartbeat_sampling_plan(job_id, token, settings.LEASE_SECONDS):
            log.warning("sampling job %s: the plan's lease was lost", job_id)

    renewer = Renewer(settings.LEASE_SECONDS / 3, renew, f"plan-{job_id[:8]}")
    renewer.start()
    try:
        from models.datasets import DataError

        try:
            total, doc = _make_plan(ctx, job, _tag(token))
            bounds = chunk_bounds(total, int(job["chunk_rows"]))
        except (DataError, PlanError) as exc:
            if records.fail_sampling_plan(job_id, token, str(exc)):
                log.warning("sampling job %s failed: %s", job_id, exc)
                return "failed"
            return "lease-lost"
        if not records.plan_sampling_job(job_id, token, total_rows=total, bounds=bounds,
                                         plan=doc):
            current = records.get_sampling_job(job_id)
            state = current["status"] if current else "unknown"
            log.info("sampling job %s: not planned (%s)", job_id, state)
            return "cancelled" if state == "cancelled" else "lease-lost"
        log.info("sampling job %s: %d rows in %d chunks", job_id, total, len(bounds))
        for chunk in range(len(bounds)):
            try:
                send(job_id, chunk)
            except Exception:  # the reaper re-sends queued chunks whose message was lost
                log.exception("sampling job %s: could not send chunk %d", job_id, chunk)
        return "planned"
    except Exception as exc:  # a bug, an unreachable store: end the job, keep serving
        log.exception("sampling job %s: planning failed", job_id)
        try:
            records.fail_sampling_plan(job_id, token, f"{type(exc).__name__}: {exc}")
        except Exception:
            log.exception("sampling job %s: could not record its failure", job_id)
        return "failed"
    finally:
        renewer.stop()


def _make_plan(ctx: Context, job: dict[str, Any], tag: str) -> tuple[int, dict[str, Any]]:
    """(rows, the plan document the chunks follow)."""
    from models.datasets.rows import locate, open_source, read_all, require_columns

    settings, store = ctx.settings, ctx.store
    limit = settings.MAX_SAMPLING_JOB_ROWS
    request = job["request"]
    model = _model(ctx, job["model_id"])
    features = list(model.feature_names)
    dataset = request.get("dataset")
    if dataset is None:
        total = int(request["n"])
        if total > limit:
            raise PlanError(f"n={total} is above MAX_SAMPLING_JOB_ROWS={limit}")
        return total, {"conditions": [], "features": features, "source": {"kind": "none"}}
    columns = list(dataset.get("conditions") or model.condition_names)
    if len(columns) != len(model.condition_names):
        raise PlanError(f"{len(columns)} condition columns given; the model takes "
                        f"{len(model.condition_names)} ({model.condition_names})")
    clash = sorted(set(columns) & set(features))
    if clash:
        raise PlanError(f"condition column(s) {clash} have the names of generated features")
    limits = _limits(settings)
    max_rows = dataset.get("max_rows")
    with tempfile.TemporaryDirectory(prefix="plan-", dir=_scratch(settings)) as folder:
        located = locate(dataset["uri"], data_roots=settings.DATA_ROOTS,
                         upload_resolver=_resolver(ctx, job["owner"]),
                         allowed_hosts=settings.ALLOWED_HOSTS, limits=limits,
                         download_dir=Path(folder))
        source = open_source(located, dataset.get("table"), limits)
        require_columns(source, columns,
                        f" (the model's conditions {model.condition_names} are read from "
                        f"{columns})")
        if located.in_place:
            assert source.table.n_rows is not None and located.fmt is not None
            total = min(source.table.n_rows, max_rows or source.table.n_rows)
            _check_rows(total, limit, source.label)
            doc_source: dict[str, Any] = {"kind": "file", "format": located.fmt}
        else:
            cap = min(max_rows or limit + 1, limit + 1)
            data = read_all(source, columns, cap, limits)
            total = len(data[columns[0]])
            _check_rows(total, limit, source.label)
            for i, (start, stop) in enumerate(chunk_bounds(total, int(job["chunk_rows"]))):
                part = Path(folder) / f"{i:05d}.parquet"
                _write_parquet({c: data[c][start:stop] for c in columns}, part)
                store.put_file(part, sampling_conditions_key(job["id"], tag, i))
                part.unlink()
            doc_source = {"kind": "copy", "tag": tag}
    return total, {"conditions": columns, "features": features, "source": doc_source,
                   "label": source.label}


def _check_rows(total: int, limit: int, label: str) -> None:
    if total > limit:
        raise PlanError(f"{label} holds more than MAX_SAMPLING_JOB_ROWS={limit} rows; use "
                        "dataset.max_rows or split it")
    if total < 1:
        raise PlanError(f"{label} holds no rows")


# --- a chunk ---------------------------------------------------------------------------------


def _test_pause() -> None:
    """Test seam (GAN_TEST_SAMPLING_PIECE_SECONDS, never set in production): a pause before
    each piece, so that a test can cancel or kill a worker in the middle of a chunk."""
    pause = os.environ.get("GAN_TEST_SAMPLING_PIECE_SECONDS")
    if pause:
        time.sleep(float(pause))


def run_chunk(ctx: Context, job_id: str, chunk: int, send: Callable[[str, int], None]) -> str:
    """Claim chunk `chunk` of sampling job `job_id`, sample it, store its shard."""
    settings, records, store = ctx.settings, ctx.records, ctx.store
    token = lease_token()
    row = records.claim_chunk(job_id, chunk, token, settings.LEASE_SECONDS,
                              settings.MAX_ATTEMPTS)
    if row is None:
        log.info("sampling job %s chunk %d not claimable: message dropped", job_id, chunk)
        return "dropped"
    JOB_ID.set(job_id)
    job = records.get_sampling_job(job_id)
    assert job is not None
    start, stop = int(row["start"]), int(row["stop"])
    log.info("sampling job %s: chunk %d (rows %d..%d, attempt %d) by %s", job_id, chunk,
             start, stop, row["attempts"], token)
    lost, ended = threading.Event(), threading.Event()
    last_poll = [time.monotonic()]

    def renew() -> None:
        status = records.heartbeat_chunk(job_id, chunk, token, settings.LEASE_SECONDS)
        if status is None:
            lost.set()
        elif status != RUNNING:
            ended.set()

    def should_stop() -> bool:
        _test_pause()
        now = time.monotonic()
        if now - last_poll[0] >= STATUS_POLL_SECONDS:
            last_poll[0] = now
            try:
                renew()
            except Exception:
                log.warning("sampling job %s: could not read its status", job_id,
                            exc_info=True)
        return lost.is_set() or ended.is_set() or SHUTTING_DOWN.is_set()

    renewer = Renewer(settings.LEASE_SECONDS / 3, renew, f"chunk-{job_id[:8]}-{chunk}")
    renewer.start()
    key: str | None = None
    try:
        from models.datasets import DataError

        try:
            model = _model(ctx, job["model_id"])
            given, matrix = _chunk_conditions(ctx, job, chunk, start, stop, model)
            samples = sample_rows(model, int(job["seed"]), start, stop, matrix, should_stop)
        except SamplingStopped:
            if lost.is_set():
                log.warning("sampling job %s chunk %d: its lease was lost", job_id, chunk)
                return "lease-lost"
            if SHUTTING_DOWN.is_set() and not ended.is_set():
                records.release_chunk(job_id, chunk, token)
                send(job_id, chunk)
                log.info("sampling job %s chunk %d released (shutting down)", job_id, chunk)
                return "released"
            records.stop_chunk(job_id, chunk, token)
            log.info("sampling job %s chunk %d stopped: the job is no longer running", job_id,
                     chunk)
            return "cancelled"
        except (DataError, SamplingError, PlanError) as exc:
            reason = f"chunk {chunk} (rows {start}..{stop}): {exc}"
            records.fail_chunk(job_id, chunk, token, reason)
            log.warning("sampling job %s failed: %s", job_id, reason)
            return "failed"
        columns: dict[str, Any] = dict(given)
        for i, name in enumerate(model.feature_names):
            columns[name] = samples[:, i]
        with tempfile.TemporaryDirectory(prefix="chunk-", dir=_scratch(settings)) as folder:
            path = Path(folder) / "shard.parquet"
            _write_parquet(columns, path)
            size, digest = path.stat().st_size, _sha256(path)
            key = sampling_shard_key(job_id, chunk, _tag(token))
            store.put_file(path, key)
        if records.finish_chunk(job_id, chunk, token, shard_key=key, shard_bytes=size,
                                shard_sha256=digest):
            log.info("sampling job %s: chunk %d done (%d rows)", job_id, chunk, stop - start)
            return "succeeded"
        store.delete(key)
        log.warning("sampling job %s chunk %d: done, but its lease was lost; shard dropped",
                    job_id, chunk)
        return "lease-lost"
    except Exception as exc:  # a bug, a full disk, an unreachable store: fail the job
        log.exception("sampling job %s chunk %d failed", job_id, chunk)
        try:
            records.fail_chunk(job_id, chunk, token,
                               f"chunk {chunk} (rows {start}..{stop}): "
                               f"{type(exc).__name__}: {exc}")
        except Exception:
            log.exception("sampling job %s: could not record its failure", job_id)
        return "failed"
    finally:
        renewer.stop()


def _chunk_conditions(ctx: Context, job: dict[str, Any], chunk: int, start: int, stop: int,
                      model: LoadedModel) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """(the condition columns of rows [start, stop) as given, the graph's [n, C] float32
    conditions); ({}, None) for an unconditional job."""
    from models.datasets.rows import locate, read_range

    plan_doc = job["plan"] or {}
    columns: list[str] = list(plan_doc.get("conditions") or [])
    if not columns:
        return {}, None
    settings, store = ctx.settings, ctx.store
    limits = _limits(settings)
    source = plan_doc["source"]
    label = str(plan_doc.get("label") or job["request"]["dataset"]["uri"])
    if source["kind"] == "copy":
        path = store.local_path(sampling_conditions_key(job["id"], source["tag"], chunk))
        given = read_range(path, "parquet", columns, 0, stop - start,
                           label=f"{label} (chunk {chunk}'s copy)", limits=limits)
    else:
        dataset = job["request"]["dataset"]
        located = locate(dataset["uri"], data_roots=settings.DATA_ROOTS,
                         upload_resolver=_resolver(ctx, job["owner"]), limits=limits)
        assert located.path is not None
        given = read_range(located.path, source["format"], columns, start, stop,
                           label=located.label, limits=limits)
    return given, graph_conditions(model, columns, given, start)


def graph_conditions(model: LoadedModel, columns: list[str], given: dict[str, np.ndarray],
                     first_row: int) -> np.ndarray:
    """The [n, C] float32 conditions the graph takes: column `columns[i]` feeds the model's
    condition i; a categorical condition takes its values (integers or strings) and becomes
    their codes. DataError naming the column and the first bad row (counted in the job)."""
    from models.datasets import DataError

    n = len(given[columns[0]]) if columns else 0
    out = np.empty((n, len(columns)), dtype=np.float32)
    for i, (name, column) in enumerate(zip(model.condition_names, columns, strict=True)):
        values = given[column]
        what = f"column {column!r}" + (f" (condition {name!r})" if name != column else "")
        categories = model.categories.get(name)
        if categories is not None:
            out[:, i] = _codes(name, categories, values, what, first_row)
            continue
        if values.dtype.kind not in "biuf":
            raise DataError(f"{what} is not numeric (dtype {values.dtype}); the model's "
                            f"condition {name!r} takes numbers")
        with np.errstate(over="ignore"):
            column_values = values.astype(np.float32)
        bad = ~np.isfinite(column_values)
        if bad.any():
            raise DataError(f"{what} has NaN, missing or infinite values in "
                            f"{int(bad.sum())} rows, the first at row "
                            f"{first_row + int(np.argmax(bad))}")
        out[:, i] = column_values
    return out


def _codes(name: str, categories: list, values: np.ndarray, what: str,
           first_row: int) -> np.ndarray:
    from models.datasets import DataError
    from serving.sampling import UnknownCategory

    numeric = all(isinstance(c, int) and not isinstance(c, bool) for c in categories)
    if numeric and values.dtype.kind in "iu":  # the common case, vectorised
        known = np.asarray(categories, dtype=np.int64)
        keys = values.astype(np.int64)
        at = np.clip(np.searchsorted(known, keys), 0, len(known) - 1)
        bad = known[at] != keys
        if bad.any():
            row = int(np.argmax(bad))
            raise DataError(f"{what}: unknown category {int(keys[row])!r} at row "
                            f"{first_row + row}; known categories: {categories[:100]}")
        return at.astype(np.float32)
    try:
        return encode_category(name, categories, values.tolist())
    except UnknownCategory as exc:
        raise DataError(f"{what}: {exc}") from exc


# --- the reaper's part -------------------------------------------------------------------------


def reap(records: Records, settings: Settings, app: Any, queue_empty: bool
         ) -> dict[str, list[str]]:
    """Lapsed plans and chunks back to queued and re-sent (or failed at MAX_ATTEMPTS), and,
    while the broker queue is empty, the plans and chunks whose message was lost re-sent."""
    reaped = records.reap_sampling(settings.MAX_ATTEMPTS)
    resent: list[str] = []
    for job_id in reaped.failed:
        log.warning("sampling job %s failed: a worker was lost %d times", job_id,
                    settings.MAX_ATTEMPTS)
    for job_id in reaped.plans:
        log.warning("sampling job %s: its planner stopped renewing the lease; re-sending",
                    job_id)
        send_plan(app, job_id)
        resent.append(job_id)
    for job_id, chunk in reaped.chunks:
        log.warning("sampling job %s chunk %d: its worker stopped renewing the lease; "
                    "re-sending", job_id, chunk)
        send_chunk(app, job_id, chunk)
        resent.append(f"{job_id}:{chunk}")
    if queue_empty:
        plans, chunks = records.stale_sampling(settings.REQUEUE_AFTER_SECONDS)
        for job_id in plans:
            log.warning("sampling job %s queued with no message in the broker; re-sending",
                        job_id)
            send_plan(app, job_id)
            resent.append(job_id)
        for job_id, chunk in chunks:
            log.warning("sampling job %s chunk %d queued with no message in the broker; "
                        "re-sending", job_id, chunk)
            send_chunk(app, job_id, chunk)
            resent.append(f"{job_id}:{chunk}")
    return {"sampling_resent": resent, "sampling_failed": reaped.failed,
            "sampling_cancelled": [f"{j}:{c}" for j, c in reaped.cancelled]}
