"""Faults with real processes (uvicorn, Celery workers, Redis, PostgreSQL), loopback only.

Every wait is bounded in time. The Redis and PostgreSQL that get stopped here are private
servers started by the test on free loopback ports (tests/conftest.py), never the shared ones
other tests use; each is stopped in a `finally`, whatever happens.

Leases: the tests that kill no worker use 30 s leases, so that a loaded machine cannot make
one lapse (and a job run twice); those that kill workers use 8 s, and their assertions hold
whether or not a lease slipped once more (what is checked is that no step was redone from 0,
read from the attempt numbers of the SSE progress events)."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import (
    FAST_SPEC,
    LiveStack,
    PrivatePostgres,
    PrivateRedis,
    assert_ran_once,
    fast_spec,
    progress_by_attempt,
    stop_process,
)

pytestmark = pytest.mark.integration


STEADY = {"LEASE_SECONDS": "30", "REAPER_INTERVAL_SECONDS": "1"}  # no worker is killed
KILLED = {"LEASE_SECONDS": "8", "REAPER_INTERVAL_SECONDS": "1"}  # workers are killed


def _alive_workers(stack: LiveStack) -> list[subprocess.Popen[bytes]]:
    return [w for w in stack.workers if w.poll() is None]


def job_processes_of(stack: LiveStack) -> list[int]:
    """Pids of the job processes still alive that a worker of this stack started (found by
    the stack's own TASK_QUEUE in their environment)."""
    marker = f"TASK_QUEUE={stack.env['TASK_QUEUE']}".encode()
    pids = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if b"worker.job_process" not in (proc / "cmdline").read_bytes():
                continue
            if marker not in (proc / "environ").read_bytes().split(b"\0"):
                continue
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            pids.append(int(proc.name))
    return pids


def test_worker_sigkilled_twice_still_finishes(live_stack: type[LiveStack],
                                               tmp_path: Path) -> None:
    stack = live_stack(tmp_path, f"sqlite:///{tmp_path / 'gan.db'}", MAX_ATTEMPTS="5", **KILLED)
    stack.start_api()
    job = stack.submit(fast_spec(steps=400))
    kills = []
    for round_ in range(2):
        worker = stack.start_worker()
        seen = stack.wait_step(job["id"], (kills[-1] if kills else 0) + 40, timeout=120)
        assert seen["status"] == "running", seen
        worker.send_signal(signal.SIGKILL)  # the worker only: its job process dies with it
        worker.wait(10)
        kills.append(stack.client.get(f"/v1/jobs/{job['id']}").json()["progress"]["step"])
        assert kills[-1] < 400, f"finished before kill {round_ + 1}: make the job longer"
    stack.start_worker()
    done = stack.wait(job["id"], ["succeeded", "failed"], timeout=180)
    assert done["status"] == "succeeded", (done, stack.logs())
    assert 3 <= done["attempts"] <= 5  # two kills; a lease that slipped once more is no loss
    # resumed from checkpoints: every attempt after the first went on from a checkpoint
    # (a multiple of 20, past the first one) at or before where the attempts before it were
    by_attempt = progress_by_attempt(stack.client, job["id"])
    assert len(by_attempt) >= 3 and by_attempt[max(by_attempt)][-1] == 400, by_attempt.keys()
    reached = 0
    for attempt in sorted(by_attempt):
        steps = by_attempt[attempt]
        if attempt > 1 and reached >= 20:
            resumed_at = steps[0] - 10  # log_every 10: its first report is 10 steps on
            assert resumed_at >= 20 and resumed_at % 20 == 0, (attempt, steps[:3])
            assert resumed_at <= reached, (attempt, steps[:3], reached)
        reached = max(reached, steps[-1])


def test_a_job_that_crashes_the_worker_every_time_ends_failed(live_stack: type[LiveStack],
                                                              tmp_path: Path) -> None:
    stack = live_stack(tmp_path, f"sqlite:///{tmp_path / 'gan.db'}", MAX_ATTEMPTS="2",
                       GAN_TEST_CRASH_AT_STEP="10", **KILLED)
    stack.start_api()
    job = stack.submit(fast_spec(steps=400))
    deadline = time.monotonic() + 150
    current: dict = {}
    while time.monotonic() < deadline and len(stack.workers) < 5:  # a supervisor, bounded
        current = stack.client.get(f"/v1/jobs/{job['id']}").json()
        if current["status"] == "failed":
            break
        if not _alive_workers(stack):
            stack.start_worker()
        time.sleep(0.5)
    assert current["status"] == "failed", (current, stack.logs())
    assert current["attempts"] == 2  # a claim past MAX_ATTEMPTS is refused: exactly 2
    assert "lost 2 times" in current["error"] and "giving up" in current["error"]
    # the hook kills the worker itself (as an OOM kill of the worker would), and its job
    # process dies with it: none is left running
    crashes = sum("fault injection" in stack.log(f"worker{i}") for i in range(len(stack.workers)))
    assert 1 <= crashes <= 2  # 1: a lease that slipped lost the job once without a crash
    assert len(stack.workers) - len(_alive_workers(stack)) == crashes
    deadline = time.monotonic() + 10
    while job_processes_of(stack) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not job_processes_of(stack), "a job process outlived its crashed worker"
    # the next job is served (the limit is per job, the crash hook fires at step 10 again,
    # so use a job shorter than that)
    short = fast_spec(steps=5, checkpoint_every=5, log_every=5)
    if not _alive_workers(stack):
        stack.start_worker()
    nxt = stack.submit(short)
    done = stack.wait(nxt["id"], ["succeeded", "failed"], timeout=120)
    assert done["status"] == "succeeded", (done, stack.logs())


def test_redis_down_30s(live_stack: type[LiveStack], tmp_path: Path,
                        private_redis: PrivateRedis) -> None:
    stack = live_stack(tmp_path, f"sqlite:///{tmp_path / 'gan.db'}", REDIS_URL=private_redis.url,
                       **STEADY)
    stack.start_api()
    stack.start_worker()
    running = stack.submit(fast_spec(steps=200))
    stack.wait_step(running["id"], 20, timeout=120)
    waiting = stack.submit(fast_spec(steps=30))  # its message is in Redis, which loses it
    down_at = time.monotonic()
    private_redis.stop()
    during = stack.submit(fast_spec(steps=30))  # accepted: the database holds it
    reads = 0
    while time.monotonic() - down_at < 30:
        r = stack.client.get("/v1/jobs")
        assert r.status_code == 200, r.text
        assert stack.client.get(f"/v1/jobs/{running['id']}").status_code == 200
        reads += 1
        time.sleep(1)
    assert reads >= 20
    private_redis.start()
    for job, steps in ((running, 200), (waiting, 30), (during, 30)):
        done = stack.wait(job["id"], ["succeeded", "failed"], timeout=180)
        assert done["status"] == "succeeded", (done, stack.logs())
        assert done["attempts"] == 1, done  # none ran twice
        assert_ran_once(stack.client, job["id"], steps)
    models = stack.client.get("/v1/models").json()
    assert models["total"] == 3


def test_postgres_restart_503_then_recovers(live_stack: type[LiveStack], tmp_path: Path,
                                            private_postgres: PrivatePostgres) -> None:
    stack = live_stack(tmp_path, private_postgres.url)
    stack.start_api()
    job = stack.submit(FAST_SPEC)  # no worker: it stays queued
    assert stack.client.get(f"/v1/jobs/{job['id']}").status_code == 200
    private_postgres.stop()
    statuses = set()
    for _ in range(5):
        r = stack.client.get(f"/v1/jobs/{job['id']}")
        statuses.add(r.status_code)
        assert r.headers["content-type"].startswith("application/problem+json"), r.text
        assert r.headers["retry-after"]
    assert statuses == {503}, statuses  # never a 500, never a hang
    assert stack.client.post("/v1/jobs", json=FAST_SPEC).status_code == 503
    assert stack.client.get("/readyz").status_code == 503
    private_postgres.start()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if stack.client.get(f"/v1/jobs/{job['id']}").status_code == 200:
                break
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    r = stack.client.get(f"/v1/jobs/{job['id']}")
    assert r.status_code == 200 and r.json()["status"] == "queued"
    assert stack.client.post("/v1/jobs", json=FAST_SPEC).status_code == 202
    assert stack.api is not None and stack.api.poll() is None  # the same process


def test_api_restart_while_a_job_runs(live_stack: type[LiveStack], tmp_path: Path) -> None:
    stack = live_stack(tmp_path, f"sqlite:///{tmp_path / 'gan.db'}", **STEADY)
    stack.start_api()
    stack.start_worker()
    job = stack.submit(fast_spec(steps=200))
    stack.wait_step(job["id"], 20, timeout=120)
    stop_process(stack.api)
    time.sleep(2)
    stack.start_api()
    done = stack.wait(job["id"], ["succeeded", "failed"], timeout=180)
    assert done["status"] == "succeeded", (done, stack.logs())
    assert done["attempts"] == 1
    assert_ran_once(stack.client, job["id"], 200)


def test_cancel_through_the_api_reaches_a_wedged_data_load(live_stack: type[LiveStack],
                                                          tmp_path: Path) -> None:
    """The job's data loading never returns and never looks at the stop flag (the
    GAN_TEST_HANG_IN seam, as a read that blocks forever): a cancel through the API still ends
    it `cancelled` within JOB_STOP_GRACE_SECONDS and a few seconds, and the worker lives on."""
    stack = live_stack(tmp_path, f"sqlite:///{tmp_path / 'gan.db'}", GAN_TEST_HANG_IN="load",
                       JOB_STOP_GRACE_SECONDS="3", **STEADY)
    stack.start_api()
    worker = stack.start_worker()
    job = stack.submit(fast_spec(steps=20))
    marker = tmp_path / "work" / "jobs" / job["id"] / "hang.load"
    deadline = time.monotonic() + 90
    while not marker.exists():
        assert time.monotonic() < deadline, stack.logs()
        time.sleep(0.2)
    asked = time.monotonic()
    r = stack.client.post(f"/v1/jobs/{job['id']}/cancel")
    assert r.status_code == 202 and r.json()["status"] == "cancelling", r.text
    done = stack.wait(job["id"], ["cancelled", "failed", "succeeded"], timeout=30)
    assert done["status"] == "cancelled", (done, stack.logs())
    assert time.monotonic() - asked < 3 + 8
    assert worker.poll() is None and "did not stop within JOB_STOP_GRACE_SECONDS" in \
        stack.log("worker0")
    assert not job_processes_of(stack)


def test_broken_files_fail_clearly_and_the_worker_stays_up(live_stack: type[LiveStack],
                                                           tmp_path: Path) -> None:
    """Hostile data files through the real worker: each job `failed` with the loader's
    message, the same worker process then trains a good job."""
    stack = live_stack(tmp_path, f"sqlite:///{tmp_path / 'gan.db'}")
    data = tmp_path / "data"
    import io

    import numpy as np

    buf = io.BytesIO()
    np.save(buf, np.ones((50, 2)))
    (data / "truncated.npy").write_bytes(buf.getvalue()[:100])
    (data / "utf16.csv").write_bytes("a,b\n1,é\n".encode("utf-16") * 50)
    (data / "garbage.parquet").write_bytes(b"PAR1" + bytes(range(256)) * 20)
    stack.start_api()
    worker = stack.start_worker()
    for name in ("truncated.npy", "utf16.csv", "garbage.parquet"):
        job = stack.submit(fast_spec(dataset={"uri": f"file://{data / name}"}))
        done = stack.wait(job["id"], ["succeeded", "failed"], timeout=60)
        assert done["status"] == "failed" and name in done["error"], done
        assert len(done["error"]) < 2000
    good = stack.submit(fast_spec(steps=20))
    assert stack.wait(good["id"], ["succeeded", "failed"], timeout=120)["status"] == "succeeded"
    assert worker.poll() is None and len(stack.workers) == 1
