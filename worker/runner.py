"""Running one job: claim it, train it (resuming), register its model, keep the lease alive.

Imports torch only through models.pipeline, on the first job.
"""

from __future__ import annotations

import io
import json
import logging
import os
import shutil
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from models.artifacts import ArtifactStore, checkpoint_key, model_key, sha256_file
from models.records import CANCELLED, CANCELLING, FAILED, Records
from models.settings import Settings
from models.spec import JobSpec
from service.logs import JOB_ID

log = logging.getLogger("worker")

CHECKPOINT_NAME = "checkpoint.pt"  # models.train.CHECKPOINT_NAME (not imported: torch)
CANCEL_POLL_SECONDS = 1.0  # should_stop() reads the job's status at most this often

# Set when the worker is asked to shut down: the running job stops at its next step, goes
# back to `queued` and is re-sent, to resume from its checkpoint elsewhere or after restart.
SHUTTING_DOWN = threading.Event()


@dataclass
class Context:
    settings: Settings
    records: Records
    store: ArtifactStore
    # Re-sends a job's "train" message (the Celery app's send_task, bound by worker.tasks).
    resend: Callable[[str], None]


_context: Context | None = None
_context_lock = threading.Lock()


def context(resend: Callable[[str], None]) -> Context:
    global _context
    with _context_lock:
        if _context is None:
            from models.settings import get_settings

            settings = get_settings()
            _context = Context(
                settings=settings,
                records=Records(settings.DATABASE_URL),
                store=ArtifactStore(settings.ARTIFACT_ROOT,
                                    cache_dir=Path(settings.WORK_ROOT) / "cache"),
                resend=resend,
            )
        return _context


def lease_token() -> str:
    """A fencing token unique to one claim."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"


@dataclass
class Lease:
    """Renews the lease every LEASE/3 seconds from a thread, so that slow steps, data loading
    and export do not let it lapse, and copies new checkpoints into the artifact store."""

    ctx: Context
    job_id: str
    token: str
    workdir: Path
    lost: threading.Event = field(default_factory=threading.Event)
    cancel_requested: threading.Event = field(default_factory=threading.Event)
    timed_out: threading.Event = field(default_factory=threading.Event)  # MAX_JOB_SECONDS
    deadline: float | None = None  # time.time() after which the job is failed
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _synced_mtime: float | None = None
    _last_poll: float = 0.0

    def start(self) -> None:
        ckpt = self.workdir / CHECKPOINT_NAME
        self._synced_mtime = ckpt.stat().st_mtime if ckpt.exists() else None
        self._thread = threading.Thread(target=self._run, name=f"lease-{self.job_id[:8]}",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _run(self) -> None:
        interval = self.ctx.settings.LEASE_SECONDS / 3
        while not self._stop.wait(interval):
            self.renew()
            self.sync_checkpoint()

    def renew(self) -> None:
        try:
            status = self.ctx.records.heartbeat(self.job_id, self.token,
                                                self.ctx.settings.LEASE_SECONDS)
        except Exception:  # database unreachable: keep trying; the lease may lapse
            log.exception("job %s: could not renew the lease", self.job_id)
            return
        if status is None:
            log.warning("job %s: lease lost (another worker took it over)", self.job_id)
            self.lost.set()
        elif status == CANCELLING:
            self.cancel_requested.set()

    def sync_checkpoint(self) -> None:
        """Copy a new checkpoint to the artifact store, so that a worker that does not share
        WORK_ROOT can resume from it."""
        ckpt = self.workdir / CHECKPOINT_NAME
        try:
            mtime = ckpt.stat().st_mtime
        except FileNotFoundError:
            return
        if mtime == self._synced_mtime:
            return
        try:
            self.ctx.store.put_file(ckpt, checkpoint_key(self.job_id))
            self._synced_mtime = mtime
        except Exception:
            log.exception("job %s: could not copy the checkpoint to the store", self.job_id)

    def should_stop(self) -> bool:
        """Polled by the training loop every step."""
        if self.lost.is_set() or self.cancel_requested.is_set() or SHUTTING_DOWN.is_set():
            return True
        if self.deadline is not None and time.time() > self.deadline:
            self.timed_out.set()
            return True
        now = time.monotonic()
        if now - self._last_poll >= CANCEL_POLL_SECONDS:
            self._last_poll = now
            try:
                job = self.ctx.records.get_job(self.job_id)
            except Exception:
                return False
            if job is None or job["lease_owner"] != self.token:
                self.lost.set()
            elif job["status"] == CANCELLING:
                self.cancel_requested.set()
        return self.lost.is_set() or self.cancel_requested.is_set()


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=lambda o: o.item() if hasattr(o, "item")
                                 else str(o)))


def _store_report(store: ArtifactStore, model_id: str, result: Any) -> dict | None:
    """The quality report's PNGs and JSON into the artifact store; the report goes into the
    model's metadata too (GET /v1/models/{id}/report reads it from there)."""
    from models.report_store import plot_key, report_key

    report = getattr(result, "report", None)
    if report is None:
        return None
    for name, path in getattr(result, "plots", {}).items():
        store.put_file(Path(path), plot_key(model_id, name))
    store.put_stream(io.BytesIO(json.dumps(_jsonable(report)).encode()), report_key(model_id))
    return report


def _restore_checkpoint(ctx: Context, job_id: str, workdir: Path) -> None:
    local = workdir / CHECKPOINT_NAME
    key = checkpoint_key(job_id)
    if local.exists() or not ctx.store.exists(key):
        return
    log.info("job %s: fetching its checkpoint from the artifact store", job_id)
    ctx.store.get_file(key, local)


def _fault_hook(step: int) -> None:
    """Fault-injection for the integration tests only: with GAN_TEST_CRASH_AT_STEP=N set in
    its environment, the worker process dies (os._exit, like an OOM kill) when a job reports
    step >= N. Never set in production."""
    at = os.environ.get("GAN_TEST_CRASH_AT_STEP")
    if at and step >= int(at):
        log.error("GAN_TEST_CRASH_AT_STEP=%s: the worker exits now (fault injection)", at)
        logging.shutdown()
        os._exit(86)


def run(ctx: Context, job_id: str) -> str:
    """Claim and run one job. Returns what happened (for the log and the tests)."""
    settings, records, store = ctx.settings, ctx.records, ctx.store
    token = lease_token()
    job = records.claim(job_id, token, settings.LEASE_SECONDS, settings.MAX_ATTEMPTS)
    if job is None:
        current = records.get_job(job_id)
        state = current["status"] if current else "unknown"
        log.info("job %s not claimable (%s): message dropped", job_id, state)
        return f"dropped:{state}"
    attempt = int(job["attempts"])
    log.info("job %s claimed (attempt %d) by %s", job_id, attempt, token)
    workdir = Path(settings.WORK_ROOT) / "jobs" / job_id
    workdir.mkdir(parents=True, exist_ok=True)
    lease = Lease(ctx, job_id, token, workdir)
    if settings.MAX_JOB_SECONDS is not None:  # wall time since the first claim, all attempts
        lease.deadline = job["started_at"].timestamp() + settings.MAX_JOB_SECONDS

    JOB_ID.set(job_id)  # every log line of this job carries its id (LOG_FORMAT=json)

    def on_progress(progress: Any) -> None:
        _fault_hook(int(progress.step))
        ok = records.record_progress(
            job_id, token, attempt=attempt, step=int(progress.step),
            total_steps=int(progress.total_steps), losses=_jsonable(progress.losses),
            metrics=_jsonable(progress.metrics), lease_seconds=settings.LEASE_SECONDS,
        )
        if not ok:
            lease.lost.set()

    def upload_resolver(dataset_id: str) -> Path:
        from models.datasets import DataError

        row = records.get_dataset(dataset_id)
        if row is None:
            raise DataError(f"no uploaded data set {dataset_id!r}")
        return store.local_path(store.key_of(row["artifact_uri"]))

    try:
        _restore_checkpoint(ctx, job_id, workdir)
        lease.start()
        spec = JobSpec.model_validate(job["spec"])
        from models.datasets import DataError
        from models.pipeline import Cancelled, run_job

        try:
            result = run_job(
                spec, workdir, data_roots=[Path(p) for p in settings.DATA_ROOTS],
                upload_resolver=upload_resolver, allowed_hosts=list(settings.ALLOWED_HOSTS),
                on_progress=on_progress, should_stop=lease.should_stop,
            )
        except Cancelled:
            if lease.timed_out.is_set() and not lease.lost.is_set():
                reason = (f"the job ran longer than MAX_JOB_SECONDS={settings.MAX_JOB_SECONDS:g}"
                          " (wall time since it first started); its last checkpoint is kept")
                records.finish(job_id, token, FAILED, reason)
                log.warning("job %s failed: %s", job_id, reason)
                return "timed-out"
            if lease.lost.is_set():
                log.warning("job %s: stopped, its lease was lost", job_id)
                return "lease-lost"
            if lease.cancel_requested.is_set():
                records.finish(job_id, token, CANCELLED)
                log.info("job %s cancelled", job_id)
                return "cancelled"
            records.release(job_id, token)  # worker shutting down
            ctx.resend(job_id)
            log.info("job %s released (worker shutting down); re-sent", job_id)
            return "released"
        except DataError as exc:
            records.finish(job_id, token, FAILED, str(exc))  # the loader's message
            log.info("job %s failed: data error: %s", job_id, exc)
            return "failed"
        lease.sync_checkpoint()
        model_id = str(uuid.uuid4())
        uri = store.put_file(result.onnx_path, model_key(model_id))
        sha = sha256_file(result.onnx_path)
        meta = _jsonable({**result.metadata, "onnx_sha256": sha, "attempts": attempt,
                          "report": _store_report(store, model_id, result)})
        if not records.finish_succeeded(job_id, token, model_id=model_id, model_metadata=meta,
                                        onnx_uri=uri, onnx_sha256=sha):
            store.delete(model_key(model_id).rsplit("/", 1)[0])
            log.warning("job %s: finished but its lease was lost; model discarded", job_id)
            return "lease-lost"
        log.info("job %s succeeded: model %s", job_id, model_id)
        shutil.rmtree(workdir, ignore_errors=True)
        try:
            store.delete(checkpoint_key(job_id))
        except Exception:
            log.exception("job %s: could not delete its stored checkpoint", job_id)
        return "succeeded"
    except Exception as exc:  # a bug or a bad spec: end the job, keep serving others
        log.exception("job %s failed", job_id)
        records.finish(job_id, token, FAILED, f"{type(exc).__name__}: {exc}")
        return "failed"
    finally:
        lease.stop()
