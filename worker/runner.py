"""Running one job: claim it, run it in its own process (worker/job_process.py: a memory limit,
stoppable in every phase), register its model, keep the lease alive.

The worker process never imports torch: each job's child does.
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

from gan_platform.artifacts import ArtifactStore, checkpoint_key, model_key, sha256_file
from gan_platform.keys import admin_names
from gan_platform.logs import JOB_ID
from gan_platform.records import CANCELLED, CANCELLING, FAILED, Records
from gan_platform.settings import Settings
from models.spec import JobSpec
from models.workdir import CHECKPOINT_NAME

log = logging.getLogger("worker")

CANCEL_POLL_SECONDS = 1.0  # Lease.should_stop() reads the job's status at most this often

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
            from gan_platform.settings import get_settings

            settings = get_settings()
            _context = Context(
                settings=settings,
                records=Records(settings.DATABASE_URL),
                store=ArtifactStore(settings.ARTIFACT_ROOT,
                                    cache_dir=Path(settings.WORK_ROOT) / "cache"),
                resend=resend,
            )
        return _context


def may_read_upload(job_owner: str | None, upload_owner: str | None,
                    settings: Settings) -> bool:
    """An upload is its owner's (as the API's ownership rule): an admin's job may read any,
    and a job submitted with auth off (no owner) is the anonymous admin's."""
    if job_owner is None or job_owner == upload_owner:
        return True
    return job_owner in admin_names(settings.API_KEYS)


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
        """Whether the job must stop now; polled by the Supervisor several times a second
        (it reads the job's status at most every CANCEL_POLL_SECONDS)."""
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
    from gan_platform.artifacts import plot_key, report_key

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
    """Test seam (GAN_TEST_CRASH_AT_STEP=N, never set in production): the *worker* process
    dies (os._exit, as an OOM kill of the worker would) when a job reports step >= N; its
    job's process dies with it (PR_SET_PDEATHSIG)."""
    at = os.environ.get("GAN_TEST_CRASH_AT_STEP")
    if at and step >= int(at):
        log.error("GAN_TEST_CRASH_AT_STEP=%s: the worker exits now (fault injection)", at)
        logging.shutdown()
        os._exit(86)


def _with_retries(what: str, deadline_seconds: float, write: Callable[[], Any]) -> Any:
    """A final write of a job (its result, its failure) retried while the database is away,
    for at most `deadline_seconds` (the lease: after it another worker may own the job)."""
    deadline = time.monotonic() + deadline_seconds
    while True:
        try:
            return write()
        except Exception:
            if time.monotonic() >= deadline:
                raise
            log.warning("%s: the database did not answer; retrying", what, exc_info=True)
            time.sleep(min(1.0, max(deadline - time.monotonic(), 0.0)))


@dataclass
class ChildResult:
    """A successful job's result as the child reported it (models.pipeline.JobResult)."""

    onnx_path: Path
    metadata: dict
    report: dict | None
    plots: dict[str, Path]


@dataclass
class Supervised:
    """How the job's process ended."""

    final: dict[str, Any] | None  # its last message: result, stopped or error; None: died
    returncode: int
    killed: bool  # by us, after the stop grace
    memory_limit: int


class Supervisor:
    """Runs one claimed job in its child process (worker/job_process.py): answers its
    progress (recorded under the lease token) and upload look-ups, passes stop requests
    (cancel, MAX_JOB_SECONDS, shutdown, a lost lease) and kills it when it does not stop
    within JOB_STOP_GRACE_SECONDS, whatever it is doing."""

    POLL_SECONDS = 0.2

    def __init__(self, ctx: Context, lease: Lease, on_progress: Callable[[dict], None],
                 resolve: Callable[[str], Path]) -> None:
        self.ctx, self.lease, self.on_progress, self.resolve = ctx, lease, on_progress, resolve

    def run(self, job: dict[str, Any], workdir: Path) -> Supervised:
        from worker.job_process import JobProcess

        settings = self.ctx.settings
        child = JobProcess.start({
            "job_id": job["id"], "spec": job["spec"], "workdir": str(workdir),
            "settings": settings.model_dump(mode="json"),
        })
        log.info("job %s: running in process %d", job["id"], child.pid)
        final: dict[str, Any] | None = None
        memory_limit = settings.JOB_MEMORY_LIMIT_BYTES
        stop_sent: float | None = None
        killed = False
        while not child.eof:
            for message in child.receive(self.POLL_SECONDS):
                kind = message.get("type")
                if kind == "progress":
                    self.on_progress(message)
                    child.send({"ack": True})
                elif kind == "resolve":
                    child.send(self._resolve(str(message.get("dataset_id"))))
                elif kind == "started":
                    memory_limit = int(message.get("memory_limit") or 0)
                    log.info("job %s: process %d ready after %.1fs (torch imported); %s",
                             job["id"], child.pid, message.get("import_seconds", 0.0),
                             _limit_line(memory_limit))
                else:
                    final = message
            if final is not None or child.eof:
                continue  # drain to EOF: the child is about to exit
            if stop_sent is None and self.lease.should_stop():
                log.info("job %s: asking its process to stop (%s)", job["id"],
                         self._stop_reason())
                child.send({"stop": True})
                stop_sent = time.monotonic()
            elif (stop_sent is not None and not killed
                  and time.monotonic() - stop_sent > settings.JOB_STOP_GRACE_SECONDS):
                log.warning("job %s: its process did not stop within JOB_STOP_GRACE_SECONDS="
                            "%g; killing it", job["id"], settings.JOB_STOP_GRACE_SECONDS)
                child.kill()
                killed = True
        returncode = child.reap(settings.JOB_STOP_GRACE_SECONDS)
        return Supervised(final, returncode, killed, memory_limit)

    def _resolve(self, dataset_id: str) -> dict[str, str]:
        from models.datasets import DataError

        try:
            return {"path": str(self.resolve(dataset_id))}
        except DataError as exc:
            return {"error": str(exc)}
        except Exception as exc:
            log.exception("could not resolve upload %s", dataset_id)
            return {"error": f"could not resolve dataset://{dataset_id}: "
                             f"{type(exc).__name__}: {exc}"}

    def _stop_reason(self) -> str:
        lease = self.lease
        if lease.lost.is_set():
            return "lease lost"
        if lease.cancel_requested.is_set():
            return "cancel"
        if lease.timed_out.is_set():
            return "MAX_JOB_SECONDS"
        return "worker shutting down"


def _limit_line(memory_limit: int) -> str:
    from worker.job_process import limit_text

    return limit_text(memory_limit)


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

    def on_progress(progress: dict) -> None:
        _fault_hook(int(progress["step"]))
        try:
            ok = records.record_progress(
                job_id, token, attempt=attempt, step=int(progress["step"]),
                total_steps=int(progress["total_steps"]), losses=progress["losses"],
                metrics=progress["metrics"], lease_seconds=settings.LEASE_SECONDS,
            )
        except Exception:  # the database away: the job goes on, this point is not recorded
            log.warning("job %s: could not record step %s", job_id, progress["step"],
                        exc_info=True)
            return
        if not ok:
            lease.lost.set()

    def upload_resolver(dataset_id: str) -> Path:
        from models.datasets import DataError

        row = records.get_dataset(dataset_id)
        # The API checked at submit that the job's owner may read the upload; checked again
        # here, so a job in the database can never read another owner's data.
        if row is None or not may_read_upload(job["owner"], row["owner"], settings):
            raise DataError(f"no uploaded data set {dataset_id!r}")
        return store.local_path(store.key_of(row["artifact_uri"]))

    def fail(reason: str) -> None:
        _with_retries(f"job {job_id}: recording its failure", settings.LEASE_SECONDS,
                      lambda: records.finish(job_id, token, FAILED, reason))

    try:
        _restore_checkpoint(ctx, job_id, workdir)
        lease.start()
        JobSpec.model_validate(job["spec"])  # a spec this version cannot read fails here
        ended = Supervisor(ctx, lease, on_progress, upload_resolver).run(job, workdir)
        final = ended.final or {}
        if final.get("type") == "result":
            return _register(ctx, job_id, token, attempt, lease, final)
        if lease.timed_out.is_set() and not lease.lost.is_set():
            reason = (f"the job ran longer than MAX_JOB_SECONDS={settings.MAX_JOB_SECONDS:g}"
                      " (wall time since it first started); its last checkpoint is kept")
            fail(reason)
            log.warning("job %s failed: %s", job_id, reason)
            return "timed-out"
        if lease.lost.is_set():
            log.warning("job %s: stopped, its lease was lost", job_id)
            return "lease-lost"
        if lease.cancel_requested.is_set():
            _with_retries(f"job {job_id}: recording its cancel", settings.LEASE_SECONDS,
                          lambda: records.finish(job_id, token, CANCELLED))
            log.info("job %s cancelled", job_id)
            return "cancelled"
        if final.get("type") == "error":  # bad data, out of memory, disk full, a bug
            fail(str(final.get("message")))
            log.warning("job %s failed (%s): %s", job_id, final.get("kind"),
                        final.get("message"))
            return "failed"
        if SHUTTING_DOWN.is_set():
            _with_retries(f"job {job_id}: handing it back", settings.LEASE_SECONDS,
                          lambda: records.release(job_id, token))
            ctx.resend(job_id)
            log.info("job %s released (worker shutting down); re-sent", job_id)
            return "released"
        from worker.job_process import death_reason

        reason = death_reason(ended.returncode, ended.memory_limit)
        fail(reason)
        log.warning("job %s failed: %s", job_id, reason)
        return "failed"
    except Exception as exc:  # a bug or a bad spec: end the job, keep serving others
        log.exception("job %s failed", job_id)
        try:
            fail(f"{type(exc).__name__}: {exc}")
        except Exception:  # the database stayed away: the reaper takes the job back
            log.exception("job %s: could not record its failure", job_id)
        return "failed"
    finally:
        lease.stop()


def _register(ctx: Context, job_id: str, token: str, attempt: int, lease: Lease,
              final: dict[str, Any]) -> str:
    """The model of a finished job into the store and the database, in that order."""
    settings, records, store = ctx.settings, ctx.records, ctx.store
    result = ChildResult(onnx_path=Path(final["onnx_path"]), metadata=final["metadata"],
                         report=final.get("report"),
                         plots={k: Path(v) for k, v in (final.get("plots") or {}).items()})
    lease.sync_checkpoint()
    model_id = str(uuid.uuid4())
    uri = store.put_file(result.onnx_path, model_key(model_id))
    sha = sha256_file(result.onnx_path)
    meta = _jsonable({**result.metadata, "onnx_sha256": sha, "attempts": attempt,
                      "report": _store_report(store, model_id, result)})

    def finish() -> bool:
        if records.finish_succeeded(job_id, token, model_id=model_id, model_metadata=meta,
                                    onnx_uri=uri, onnx_sha256=sha):
            return True
        # A retry after a commit whose answer was lost finds its own model in place.
        current = records.get_job(job_id)
        return current is not None and current.get("model_id") == model_id

    if not _with_retries(f"job {job_id}: registering its model", settings.LEASE_SECONDS,
                         finish):
        store.delete(model_key(model_id).rsplit("/", 1)[0])
        log.warning("job %s: finished but its lease was lost; model discarded", job_id)
        return "lease-lost"
    log.info("job %s succeeded: model %s", job_id, model_id)
    shutil.rmtree(lease.workdir, ignore_errors=True)
    try:
        store.delete(checkpoint_key(job_id))
    except Exception:
        log.exception("job %s: could not delete its stored checkpoint", job_id)
    return "succeeded"
