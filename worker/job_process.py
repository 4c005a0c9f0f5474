"""One job in a child process of the worker, under a memory limit, stoppable in any phase.

The worker (worker/runner.py) keeps the lease, the database and the artifact store; for each
job it starts `python -m worker.job_process FD PARENT_PID` and supervises it. The child:

- dies with the worker (PR_SET_PDEATHSIG = SIGKILL), so a killed worker leaves no job
  running on behind the lease's back; it ignores SIGINT and SIGTERM, which reach the whole
  process group from a terminal or `docker stop`: the worker decides when the job stops;
- sets RLIMIT_AS to JOB_MEMORY_LIMIT_BYTES before it imports torch (not on CUDA, where the
  driver's address-space reservations break under RLIMIT_AS), so an allocation beyond it
  fails in this process ("out of memory") instead of the kernel's OOM killer taking the
  worker;
- runs models.pipeline.run_job and reports through the protocol below. It never touches the
  database: every write stays in the worker, fenced by the lease token.

Protocol, one JSON object a line. Parent -> child (stdin): the job first; then replies to the
child's requests in order ({"ack": true} after a progress, {"path": ...} or {"error": ...}
after a resolve) and, at any time, {"stop": true}. Child -> parent (fd FD): {"type":
"started"}, {"type": "progress"}, {"type": "resolve"}, then one final message, "result",
"stopped" or "error" (kind "data", "memory", "disk_full", "budget" or "crash").

Test seams (never set in production; docs/security.md):
- GAN_TEST_HANG_IN=load|weights|report|export: that phase touches `hang.<phase>` in the
  job's work folder, then sleeps for an hour and ignores stop requests, as a read of a FIFO
  or a wedged library call would.
- GAN_TEST_ENOSPC_AT_CHECKPOINT=N: the first checkpoint written at step >= N fails with
  ENOSPC after part of its temporary file is written, as on a full disk.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import logging
import os
import queue
import resource
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol

log = logging.getLogger("worker.job")

PR_SET_PDEATHSIG = 1
PACKAGE_ROOT = Path(__file__).resolve().parents[1]  # holds worker/ and models/
HANG_SECONDS = 3600.0
MEMORY_WORDS = ("can't allocate memory", "cannot allocate memory", "out of memory",
                "failed to map segment", "std::bad_alloc")


def jsonable(value: Any) -> Any:
    """JSON-able copy (numpy scalars become numbers; anything else its str)."""
    return json.loads(json.dumps(value, default=lambda o: o.item() if hasattr(o, "item")
                                 else str(o)))


# =============================================================================================
# The parent's side
# =============================================================================================


@dataclass
class JobProcess:
    """The worker's handle on one job's child process."""

    proc: subprocess.Popen[bytes]
    _fd: int
    _buffer: bytes = b""
    eof: bool = False

    @classmethod
    def start(cls, job: dict[str, Any]) -> JobProcess:
        read_fd, write_fd = os.pipe()
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(PACKAGE_ROOT), env.get("PYTHONPATH")) if p)
        try:
            proc = subprocess.Popen(
                [sys.executable, "-m", "worker.job_process", str(write_fd), str(os.getpid())],
                stdin=subprocess.PIPE, pass_fds=(write_fd,), env=env, close_fds=True)
        finally:
            os.close(write_fd)
        handle = cls(proc, read_fd)
        handle.send(job)
        return handle

    @property
    def pid(self) -> int:
        return self.proc.pid

    def send(self, message: dict[str, Any]) -> bool:
        """False when the child is gone (its stdin closed)."""
        stdin = self.proc.stdin
        if stdin is None:
            return False
        try:
            stdin.write(json.dumps(message).encode() + b"\n")
            stdin.flush()
            return True
        except (BrokenPipeError, ValueError, OSError):
            return False

    def receive(self, timeout: float) -> list[dict[str, Any]]:
        """The messages that arrive within `timeout` seconds (none at EOF)."""
        if self.eof:
            return []
        poller = select.poll()  # not select(): fine with descriptor numbers above 1024
        poller.register(self._fd, select.POLLIN | select.POLLHUP)
        if not poller.poll(timeout * 1000):
            return []
        chunk = os.read(self._fd, 1 << 16)
        if not chunk:
            self.eof = True
            os.close(self._fd)
        self._buffer += chunk
        *lines, self._buffer = self._buffer.split(b"\n")
        return [json.loads(line) for line in lines if line.strip()]

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()

    def reap(self, timeout: float) -> int:
        """Wait for the child to exit (killing it after `timeout`); its return code."""
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return self.proc.wait(30)
        finally:
            if self.proc.stdin is not None:
                with contextlib.suppress(OSError):
                    self.proc.stdin.close()
            if not self.eof:
                self.eof = True
                with contextlib.suppress(OSError):
                    os.close(self._fd)


def death_reason(returncode: int, memory_limit: int) -> str:
    """Why a child that sent no final message ended, for the job's error."""
    if returncode == -signal.SIGKILL:
        return ("out of memory: the job's process was killed (SIGKILL), most likely by the "
                f"kernel's OOM killer; {limit_text(memory_limit)}")
    if returncode < 0:
        name = signal.Signals(-returncode).name if -returncode in signal.valid_signals() \
            else str(-returncode)
        return f"the job's process died from signal {name}"
    return f"the job's process exited with status {returncode} without a result"


def limit_text(memory_limit: int) -> str:
    if memory_limit > 0:
        return (f"the job's memory limit is JOB_MEMORY_LIMIT_BYTES={memory_limit} "
                f"({memory_limit / 1e9:.1f} GB)")
    return "no JOB_MEMORY_LIMIT_BYTES applied to it (0, or a CUDA job)"


# =============================================================================================
# The child's side
# =============================================================================================


class Channel:
    """The child's end: messages out on fd FD, replies and stop requests in on stdin."""

    def __init__(self, out: IO[str], inp: IO[str]) -> None:
        self._out = out
        self._lock = threading.Lock()
        self.stop = threading.Event()
        self._replies: queue.Queue[dict[str, Any]] = queue.Queue()
        threading.Thread(target=self._read, args=(inp,), name="job-stdin", daemon=True).start()

    def _read(self, inp: IO[str]) -> None:
        for line in inp:
            message = json.loads(line)
            if message.get("stop"):
                self.stop.set()
            else:
                self._replies.put(message)
        # EOF: the worker closed the channel (it is going); PDEATHSIG ends us if it died.
        self.stop.set()
        self._replies.put({"error": "the worker closed the channel"})

    def send(self, message: dict[str, Any]) -> None:
        with self._lock:
            self._out.write(json.dumps(message) + "\n")
            self._out.flush()

    def ask(self, message: dict[str, Any]) -> dict[str, Any]:
        """Send a request and wait for the worker's reply (replies come in order)."""
        self.send(message)
        return self._replies.get()


def die_with_parent(parent_pid: int) -> None:
    """SIGKILL when the worker dies, even by SIGKILL (Linux). If it died before the prctl
    took effect, we were re-parented already: exit now."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent_pid:
        os._exit(1)


def may_use_cuda(device: str) -> bool:
    """Whether the job could train on a GPU, decided without importing torch."""
    if device == "cpu":
        return False
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "-1"):
        return False
    return any(Path("/dev").glob("nvidia[0-9]*"))


def set_memory_limit(limit: int) -> int:
    """RLIMIT_AS (soft and hard) to `limit` bytes, never above an existing hard limit."""
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    return limit


def apply_memory_limit(limit: int, device: str) -> int:
    """The limit applied (0: none). On a GPU machine torch decides: the limit is applied
    after its import when CUDA turns out unavailable, never on CUDA."""
    if limit <= 0:
        return 0
    if not may_use_cuda(device):
        return set_memory_limit(limit)
    import torch

    if device != "cpu" and torch.cuda.is_available():
        log.info("training on CUDA: no RLIMIT_AS (JOB_MEMORY_LIMIT_BYTES does not apply)")
        return 0
    return set_memory_limit(limit)


def classify(exc: BaseException, memory_limit: int) -> tuple[str, str]:
    """(kind, message) of the error that ended the job."""
    text = f"{type(exc).__name__}: {exc}"
    try:  # imported already, unless the job failed while importing them (out of memory)
        from models.datasets import DataError
        from models.resources import MemoryBudgetExceeded
    except BaseException:  # noqa: BLE001
        DataError = MemoryBudgetExceeded = ()  # type: ignore[assignment,misc]  # noqa: N806
    if isinstance(exc, MemoryBudgetExceeded):
        return "budget", str(exc)
    if isinstance(exc, DataError):
        return "data", str(exc)
    if isinstance(exc, MemoryError) or any(w in str(exc).lower() for w in MEMORY_WORDS):
        return "memory", f"out of memory: {text[:500]}; {limit_text(memory_limit)}"
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        where = f" writing {exc.filename}" if exc.filename else ""
        return "disk_full", f"the disk is full (ENOSPC){where}: {exc.strerror or exc}"
    return "crash", text


def data_checker(budget: int, estimates: dict[str, Any]) -> Callable[[Any, Any], None]:
    """run_job's check_data: the memory estimate again with the data's real shape."""

    def check(spec: Any, data: Any) -> None:
        from models.resources import DataShape, check_budget, estimate_job_memory

        one_hot = sum(k - 1 for k in data.category_sizes.values())
        shape = DataShape(features=int(data.features.shape[1]),
                          conditions=int(data.conditions.shape[1]) + one_hot,
                          rows=data.n_rows, image_shape=data.image_shape)
        estimate = estimate_job_memory(spec, shape)
        estimates["memory_estimate_bytes"] = estimate.total_bytes
        log.info("memory estimate with the data loaded: %s", estimate.describe())
        check_budget(estimate, budget, "MAX_JOB_MEMORY_BYTES")

    return check


def _hang(phase: str, function: Callable[..., Any], marker: Path) -> Callable[..., Any]:
    def hung(*args: Any, **kwargs: Any) -> Any:
        log.warning("GAN_TEST_HANG_IN=%s: this phase hangs now (fault injection)", phase)
        marker.touch()  # tells the test the job is inside the phase
        time.sleep(HANG_SECONDS)
        return function(*args, **kwargs)

    return hung


class _Save(Protocol):
    """models.train._save_atomic, argument names included (the seam below replaces it)."""

    def __call__(self, obj: dict, path: Path) -> None: ...


def _enospc_at(step: int, save: _Save) -> _Save:
    def save_on_a_full_disk(obj: dict, path: Path) -> None:
        if int(obj.get("step", 0)) < step:
            return save(obj, path)
        log.warning("GAN_TEST_ENOSPC_AT_CHECKPOINT=%d: the disk is full now (fault injection)",
                    step)
        path.with_suffix(".tmp").write_bytes(b"PK\x03\x04 truncated")  # a partial write
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path.with_suffix(".tmp")))

    return save_on_a_full_disk


def install_test_seams(workdir: Path) -> None:
    """The fault-injection seams of the tests, only when their variables are set."""
    phase = os.environ.get("GAN_TEST_HANG_IN")
    if phase:
        import models.pipeline
        import models.quality_report
        import models.train

        targets = {"load": (models.pipeline, "load_dataset"),
                   "weights": (models.train, "training_weights"),
                   "report": (models.quality_report, "make_report"),
                   "export": (models.pipeline, "export_onnx")}
        module, name = targets[phase]
        setattr(module, name, _hang(phase, getattr(module, name), workdir / f"hang.{phase}"))
    at = os.environ.get("GAN_TEST_ENOSPC_AT_CHECKPOINT")
    if at:
        import models.train

        models.train._save_atomic = _enospc_at(int(at), models.train._save_atomic)


def remove_partial_checkpoint(workdir: Path) -> None:
    """A checkpoint write that failed leaves its temporary file: free the space it takes (the
    checkpoint itself is replaced atomically, so the last good one stays)."""
    for partial in workdir.glob("*.tmp"):
        with contextlib.suppress(OSError):
            partial.unlink()


def peak_memory_bytes() -> int:
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024  # KiB on Linux


@dataclass
class ChildJob:
    """What the worker sends first (one JSON line)."""

    job_id: str
    spec: dict[str, Any]
    workdir: str
    settings: dict[str, Any]
    extra: dict[str, Any] = field(default_factory=dict)


def run_child_job(job: ChildJob, channel: Channel, memory_limit: int) -> dict[str, Any]:
    """Run the job; the final message."""
    from gan_platform.settings import Settings
    from models.datasets import DataError, DataLimits
    from models.pipeline import Cancelled, run_job
    from models.spec import JobSpec

    settings = Settings(**job.settings)
    spec = JobSpec.model_validate(job.spec)
    workdir = Path(job.workdir)
    resources: dict[str, Any] = {"memory_limit_bytes": memory_limit}

    def on_progress(progress: Any) -> None:
        channel.ask(jsonable({"type": "progress", "step": int(progress.step),
                              "total_steps": int(progress.total_steps),
                              "losses": progress.losses, "metrics": progress.metrics}))

    def upload_resolver(dataset_id: str) -> Path:
        reply = channel.ask({"type": "resolve", "dataset_id": dataset_id})
        if "path" not in reply:
            raise DataError(str(reply.get("error", f"no uploaded data set {dataset_id!r}")))
        return Path(reply["path"])

    try:
        result = run_job(
            spec, workdir, data_roots=[Path(p) for p in settings.DATA_ROOTS],
            upload_resolver=upload_resolver, allowed_hosts=list(settings.ALLOWED_HOSTS),
            on_progress=on_progress, should_stop=channel.stop.is_set,
            check_data=data_checker(settings.MAX_JOB_MEMORY_BYTES, resources),
            limits=DataLimits.from_settings(settings),  # hostile files (issue 10)
        )
    except Cancelled as exc:
        return {"type": "stopped", "message": str(exc)}
    resources["peak_memory_bytes"] = peak_memory_bytes()
    return {"type": "result", "onnx_path": str(result.onnx_path),
            "metadata": jsonable({**result.metadata, "resources": resources}),
            "report": jsonable(result.report),
            "plots": {name: str(path) for name, path in result.plots.items()}}


def child_main(argv: list[str]) -> int:
    fd, parent_pid = int(argv[0]), int(argv[1])
    die_with_parent(parent_pid)
    for sig in (signal.SIGINT, signal.SIGTERM):  # the worker decides when its job stops
        signal.signal(sig, signal.SIG_IGN)
    os.set_inheritable(fd, False)  # processes this job starts must not hold the channel
    out = os.fdopen(fd, "w", buffering=1, encoding="utf-8")
    job = ChildJob(**json.loads(sys.stdin.readline()))
    tic = time.monotonic()
    memory_limit = apply_memory_limit(int(job.settings.get("JOB_MEMORY_LIMIT_BYTES") or 0),
                                      str(job.spec.get("training", {}).get("device", "auto")))
    channel = Channel(out, sys.stdin)
    from gan_platform.logs import JOB_ID, configure_logging

    JOB_ID.set(job.job_id)
    configure_logging(str(job.settings.get("LOG_LEVEL", "INFO")),
                      str(job.settings.get("LOG_FORMAT", "text")))
    try:
        import models.pipeline  # noqa: F401  (torch: the start-up cost of every job)

        install_test_seams(Path(job.workdir))
        channel.send({"type": "started", "pid": os.getpid(), "memory_limit": memory_limit,
                      "import_seconds": round(time.monotonic() - tic, 3)})
        final = run_child_job(job, channel, memory_limit)
    except BaseException as exc:  # noqa: BLE001  (every failure is reported, none escapes)
        kind, message = classify(exc, memory_limit)
        if kind == "disk_full":
            remove_partial_checkpoint(Path(job.workdir))
        if kind == "crash":
            log.exception("the job failed")
        final = {"type": "error", "kind": kind, "message": message}
    channel.send(final)
    out.close()
    return 0


if __name__ == "__main__":
    sys.exit(child_main(sys.argv[1:]))
