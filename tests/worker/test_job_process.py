"""The worker runs each job in a child process (worker/job_process.py): a memory limit, an OOM
kill of the job's process, stop requests that reach every phase (a hung one is killed after
JOB_STOP_GRACE_SECONDS), the child dying with its worker, a full disk at a checkpoint, and
exact resume through a hand-back. The runner is called in-process (as the Celery task does)
on SQLite, with the real child processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gan_platform.artifacts import ArtifactStore
from gan_platform.records import Records
from gan_platform.settings import Settings
from tests.conftest import ROOT, fast_spec
from worker import runner
from worker.runner import Context, run

GRACE = 2.0  # JOB_STOP_GRACE_SECONDS in these tests


def make_ctx(tmp_path: Path, **overrides: Any) -> Context:
    settings = Settings(DATABASE_URL=f"sqlite:///{tmp_path}/w.db",  # type: ignore[call-arg]
                        ARTIFACT_ROOT=str(tmp_path / "art"), WORK_ROOT=tmp_path / "work",
                        DATA_ROOTS=[tmp_path / "data"], JOB_STOP_GRACE_SECONDS=GRACE,
                        **overrides)
    return Context(settings=settings, records=Records(settings.DATABASE_URL),
                   store=ArtifactStore(settings.ARTIFACT_ROOT), resend=lambda _id: None)


@pytest.fixture
def ctx_factory(tmp_path: Path) -> Iterator[Callable[..., Context]]:
    made: list[Context] = []

    def factory(**overrides: Any) -> Context:
        made.append(make_ctx(tmp_path, **overrides))
        return made[-1]

    yield factory
    for ctx in made:
        ctx.records.dispose()


class Running:
    """runner.run in a thread, as the Celery task runs it; `outcome` once it returned."""

    def __init__(self, ctx: Context, job_id: str) -> None:
        self.ctx, self.job_id = ctx, job_id
        self.outcome: str | None = None
        self.ended_at: float | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        self.outcome = run(self.ctx, self.job_id)
        self.ended_at = time.monotonic()

    def join(self, timeout: float) -> str:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), f"the job did not end within {timeout} s"
        assert self.outcome is not None
        return self.outcome

    def job(self) -> dict:
        job = self.ctx.records.get_job(self.job_id)
        assert job is not None
        return job

    def wait_for(self, what: str, check: Callable[[], bool], timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if check():
                return
            assert self.thread.is_alive(), f"the job ended ({self.outcome}) before {what}"
            time.sleep(0.1)
        raise AssertionError(f"no {what} within {timeout} s: {self.job()}")


def job_processes(parent: int) -> list[int]:
    """Pids of the `worker.job_process` children of process `parent`."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == parent and b"worker.job_process" in cmdline:
            pids.append(int(stat.parent.name))
    return pids


def test_a_job_runs_in_its_own_process_and_reports_its_memory(
        ctx_factory: Callable[..., Context]) -> None:
    ctx = ctx_factory(JOB_MEMORY_LIMIT_BYTES=6 * 1024**3)
    job, _ = ctx.records.create_job(fast_spec(), "h" * 64)
    running = Running(ctx, job["id"])
    running.wait_for("job process", lambda: bool(job_processes(os.getpid())))
    assert running.join(120) == "succeeded"
    model = ctx.records.get_model(running.job()["model_id"])
    assert model is not None
    resources = model["metadata"]["resources"]
    assert resources["memory_limit_bytes"] == 6 * 1024**3
    assert 0 < resources["memory_estimate_bytes"] < 2 * resources["peak_memory_bytes"]
    assert not job_processes(os.getpid())  # reaped


def test_an_allocation_over_the_memory_limit_fails_the_job_out_of_memory(
        ctx_factory: Callable[..., Context]) -> None:
    """3.2 GB for the first layer's output alone, under a 2.5 GB RLIMIT_AS: the job's process
    gets the allocation failure, the job fails with the limit in its error."""
    ctx = ctx_factory(JOB_MEMORY_LIMIT_BYTES=int(2.5 * 1024**3), MAX_JOB_MEMORY_BYTES=0)
    bomb = fast_spec(steps=1, batch_size=200_000, validate_every=0)
    bomb["architecture"] = {"generator": {"width": 4096, "depth": 1},
                            "critic": {"width": 4096, "depth": 1}}
    job, _ = ctx.records.create_job(bomb, "h" * 64)
    assert Running(ctx, job["id"]).join(120) == "failed"
    done = ctx.records.get_job(job["id"])
    assert done is not None and done["status"] == "failed"
    assert "out of memory" in done["error"], done["error"]
    assert f"JOB_MEMORY_LIMIT_BYTES={int(2.5 * 1024**3)}" in done["error"]
    # the worker goes on: the next job succeeds
    nxt, _ = ctx.records.create_job(fast_spec(steps=5, checkpoint_every=5, log_every=5), "i" * 64)
    assert Running(ctx, nxt["id"]).join(120) == "succeeded"


def test_the_job_process_killed_as_by_the_oom_killer_fails_the_job(
        ctx_factory: Callable[..., Context]) -> None:
    ctx = ctx_factory()
    job, _ = ctx.records.create_job(fast_spec(steps=100_000, checkpoint_every=1000), "h" * 64)
    running = Running(ctx, job["id"])
    running.wait_for("step 10", lambda: (running.job()["progress"] or {}).get("step", 0) >= 10)
    children = job_processes(os.getpid())
    assert len(children) == 1, children
    os.kill(children[0], signal.SIGKILL)  # what the kernel's OOM killer does
    assert running.join(30) == "failed"
    error = running.job()["error"]
    assert "out of memory" in error and "OOM killer" in error, error
    assert "JOB_MEMORY_LIMIT_BYTES=" in error


@pytest.mark.parametrize("phase", ["load", "report"])
def test_cancel_reaches_a_hung_phase(ctx_factory: Callable[..., Context], tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch, phase: str) -> None:
    """The phase never polls the stop flag (as a read of a FIFO would not): the worker kills
    the job's process JOB_STOP_GRACE_SECONDS after the cancel, and the job ends cancelled."""
    monkeypatch.setenv("GAN_TEST_HANG_IN", phase)
    ctx = ctx_factory()
    job, _ = ctx.records.create_job(fast_spec(steps=20), "h" * 64)
    marker = tmp_path / "work" / "jobs" / job["id"] / f"hang.{phase}"
    running = Running(ctx, job["id"])
    running.wait_for(f"hang in {phase}", marker.exists)
    asked = time.monotonic()
    assert ctx.records.request_cancel(job["id"]) is not None
    assert running.join(GRACE + 15) == "cancelled"
    assert running.ended_at is not None and running.ended_at - asked < GRACE + 6
    assert running.job()["status"] == "cancelled"
    assert not job_processes(os.getpid())


def test_max_job_seconds_reaches_a_hung_data_load(ctx_factory: Callable[..., Context],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GAN_TEST_HANG_IN", "load")
    ctx = ctx_factory(MAX_JOB_SECONDS=4.0)
    job, _ = ctx.records.create_job(fast_spec(steps=20), "h" * 64)
    running = Running(ctx, job["id"])
    started = time.monotonic()
    assert running.join(60) == "timed-out"
    assert running.ended_at is not None and running.ended_at - started < 4.0 + GRACE + 8
    done = running.job()
    assert done["status"] == "failed" and "MAX_JOB_SECONDS=4" in done["error"]


def test_the_estimate_is_checked_again_with_the_real_feature_count(
        ctx_factory: Callable[..., Context], tmp_path: Path) -> None:
    """800 features: unknown when the spec is submitted (the estimate assumes 16, well within
    the budget), over it once the file is read: the job fails with the estimate."""
    (tmp_path / "data").mkdir()
    np.save(tmp_path / "data" / "wide.npy",
            np.random.default_rng(0).normal(size=(64, 800)).astype(np.float32))
    ctx = ctx_factory(MAX_JOB_MEMORY_BYTES=10**9)
    wide = fast_spec(steps=1, batch_size=50_000, validate_every=0)
    wide["architecture"] = {"generator": {"width": 32, "depth": 1},
                            "critic": {"width": 32, "depth": 1}}
    wide["dataset"] = {"uri": f"file://{tmp_path / 'data' / 'wide.npy'}"}
    from models.resources import estimate_job_memory
    from models.spec import JobSpec

    assert estimate_job_memory(JobSpec.model_validate(wide)).total_bytes < 10**9  # at submit
    job, _ = ctx.records.create_job(wide, "h" * 64)
    assert Running(ctx, job["id"]).join(120) == "failed"
    error = ctx.records.get_job(job["id"])["error"]  # type: ignore[index]
    assert "MAX_JOB_MEMORY_BYTES=1000000000" in error and "GB" in error, error


def test_a_full_disk_at_a_checkpoint_fails_the_job_and_keeps_the_last_checkpoint(
        ctx_factory: Callable[..., Context], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GAN_TEST_ENOSPC_AT_CHECKPOINT", "40")
    ctx = ctx_factory()
    job, _ = ctx.records.create_job(fast_spec(steps=60, checkpoint_every=20), "h" * 64)
    assert Running(ctx, job["id"]).join(120) == "failed"
    error = ctx.records.get_job(job["id"])["error"]  # type: ignore[index]
    assert "disk is full" in error and "ENOSPC" in error, error
    import torch

    workdir = tmp_path / "work" / "jobs" / job["id"]
    ckpt = torch.load(workdir / "checkpoint.pt", weights_only=True)
    assert ckpt["step"] == 20  # the last good one, whole
    assert not list(workdir.glob("*.tmp"))


def test_a_job_handed_back_resumes_exactly(ctx_factory: Callable[..., Context],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Shutdown mid-job (the job checkpoints and goes back to queued), then the rest: the
    same final losses and the same ONNX file as one uninterrupted run."""
    ctx = ctx_factory()
    straight, _ = ctx.records.create_job(fast_spec(steps=1000, checkpoint_every=20), "a" * 64)
    assert Running(ctx, straight["id"]).join(120) == "succeeded"
    resumed, _ = ctx.records.create_job(fast_spec(steps=1000, checkpoint_every=20), "b" * 64)
    running = Running(ctx, resumed["id"])
    running.wait_for("step 30", lambda: (running.job()["progress"] or {}).get("step", 0) >= 30)
    monkeypatch.setattr(runner, "SHUTTING_DOWN", threading.Event())
    runner.SHUTTING_DOWN.set()
    assert running.join(60) == "released", "the job ended before the hand-back: make it longer"
    runner.SHUTTING_DOWN.clear()
    assert ctx.records.get_job(resumed["id"])["status"] == "queued"  # type: ignore[index]
    assert Running(ctx, resumed["id"]).join(120) == "succeeded"
    a = ctx.records.get_model(ctx.records.get_job(straight["id"])["model_id"])  # type: ignore[index]
    b = ctx.records.get_model(ctx.records.get_job(resumed["id"])["model_id"])  # type: ignore[index]
    assert a is not None and b is not None
    assert b["metadata"]["resumed_from_step"] not in (None, 0)
    assert a["metadata"]["final_losses"] == b["metadata"]["final_losses"]
    assert a["onnx_sha256"] == b["onnx_sha256"]


CHILD_OF_A_KILLED_WORKER = """
import sys, time
from pathlib import Path
sys.path.insert(0, {root!r})
from tests.worker.test_job_process import make_ctx
from worker.runner import run
ctx = make_ctx(Path({tmp!r}))
run(ctx, {job_id!r})
"""


def test_the_job_process_dies_with_its_worker(tmp_path: Path) -> None:
    """A worker SIGKILLed mid-job leaves no job process training on behind the lease's
    back (PR_SET_PDEATHSIG)."""
    ctx = make_ctx(tmp_path)
    job, _ = ctx.records.create_job(fast_spec(steps=100_000, checkpoint_every=1000), "h" * 64)
    code = CHILD_OF_A_KILLED_WORKER.format(root=str(ROOT), tmp=str(tmp_path), job_id=job["id"])
    worker = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT)
    try:
        deadline = time.monotonic() + 90
        while not (ctx.records.get_job(job["id"])["progress"] or {}).get("step"):  # type: ignore[index]
            assert time.monotonic() < deadline and worker.poll() is None, "no progress"
            time.sleep(0.2)
        children = job_processes(worker.pid)
        assert len(children) == 1, children
        worker.kill()
        worker.wait(10)
        deadline = time.monotonic() + 10
        while Path(f"/proc/{children[0]}").exists() and time.monotonic() < deadline:
            if Path(f"/proc/{children[0]}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                break  # a zombie: dead, waiting for init to reap it
            time.sleep(0.1)
        alive = Path(f"/proc/{children[0]}").exists() and Path(
            f"/proc/{children[0]}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
        assert not alive, "the job's process outlived its worker"
    finally:
        if worker.poll() is None:
            worker.kill()
        ctx.records.dispose()
