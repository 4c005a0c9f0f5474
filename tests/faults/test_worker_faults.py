"""The fault suite of the worker, with real processes (uvicorn, Celery worker and its job
processes, Redis, PostgreSQL), loopback only: Redis restarted mid-job, PostgreSQL restarted
mid-job, the disk full at a checkpoint. Each job ends `succeeded`, or `failed` with a clear
error; none runs twice or is lost; the API answers throughout (a prober reads it every half
second: 200, or a 503 problem while the database is down, never a 500 or a hang).

The Redis and PostgreSQL restarted here are private servers on free ports
(tests/conftest.py). Leases are 30 s, so a loaded machine cannot make one lapse: "ran once"
is then exact (one attempt, its steps in order to the end, from the SSE events)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import (
    LiveStack,
    PrivatePostgres,
    PrivateRedis,
    assert_ran_once,
    fast_spec,
    progress_by_attempt,
)

pytestmark = pytest.mark.integration

STEADY = {"LEASE_SECONDS": "30", "REAPER_INTERVAL_SECONDS": "1", "REQUEUE_AFTER_SECONDS": "3"}


class Prober(threading.Thread):
    """Reads /healthz and one job every half second until stopped; keeps what it saw."""

    def __init__(self, url: str, job_id: str) -> None:
        super().__init__(daemon=True)
        self.url, self.job_id = url, job_id
        self.seen: list[tuple[str, int | str]] = []
        self.halt = threading.Event()

    def run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=10) as client:
            while not self.halt.wait(0.5):
                for path in ("/healthz", f"/v1/jobs/{self.job_id}"):
                    try:
                        r = client.get(path)
                        ok = r.status_code == 200 or (
                            r.status_code == 503
                            and r.headers["content-type"].startswith("application/problem+json"))
                        self.seen.append((path, r.status_code if ok else f"{r.status_code}"
                                          f" {r.text[:200]}"))
                    except httpx.HTTPError as exc:
                        self.seen.append((path, f"{type(exc).__name__}: {exc}"))

    def answers(self, allowed: set[int]) -> None:
        self.halt.set()
        self.join(15)
        bad = [s for s in self.seen if s[1] not in allowed]
        assert len(self.seen) >= 10 and not bad, bad[:5]


@pytest.fixture
def prober() -> Iterator[list[Prober]]:
    made: list[Prober] = []
    yield made
    for p in made:
        p.halt.set()


def test_redis_restarted_mid_job(live_stack: type[LiveStack], tmp_path: Path,
                                 private_redis: PrivateRedis, prober: list[Prober]) -> None:
    stack = live_stack(tmp_path, f"sqlite:///{tmp_path / 'gan.db'}", REDIS_URL=private_redis.url,
                       **STEADY)
    stack.start_api()
    stack.start_worker()
    running = stack.submit(fast_spec(steps=600))
    prober.append(Prober(stack.url, running["id"]))
    prober[0].start()
    stack.wait_step(running["id"], 20, timeout=120)
    waiting = stack.submit(fast_spec(steps=30))  # its message is in Redis, which loses it
    private_redis.stop()
    during = stack.submit(fast_spec(steps=30))  # accepted while Redis is down: the database has it
    time.sleep(2)
    private_redis.start()
    for job, steps in ((running, 600), (waiting, 30), (during, 30)):
        done = stack.wait(job["id"], ["succeeded", "failed"], timeout=180)
        assert done["status"] == "succeeded", (done, stack.logs())
        assert done["attempts"] == 1, done
        assert_ran_once(stack.client, job["id"], steps)
    assert stack.client.get("/v1/models").json()["total"] == 3
    prober[0].answers({200})


def test_postgres_restarted_mid_job(live_stack: type[LiveStack], tmp_path: Path,
                                    private_postgres: PrivatePostgres,
                                    prober: list[Prober]) -> None:
    """The worker's progress writes and lease renewals fail while the database is down; the
    job trains on, its model is registered once it is back; the API answers 503 meanwhile."""
    stack = live_stack(tmp_path, private_postgres.url, **STEADY)
    stack.start_api()
    stack.start_worker()
    job = stack.submit(fast_spec(steps=1500, checkpoint_every=100))
    prober.append(Prober(stack.url, job["id"]))
    prober[0].start()
    seen = stack.wait_step(job["id"], 20, timeout=120)
    assert seen["status"] == "running", seen
    private_postgres.stop()
    time.sleep(3)  # steps go on meanwhile; their progress points are not recorded
    private_postgres.start()
    done = stack.wait(job["id"], ["succeeded", "failed"], timeout=240)
    assert done["status"] == "succeeded", (done, stack.logs())
    assert done["attempts"] == 1 and done["model_id"], done
    by_attempt = progress_by_attempt(stack.client, job["id"])
    steps = by_attempt.get(1, [])
    assert steps and steps == sorted(set(steps)) and steps[-1] == 1500, by_attempt
    outage = ("could not record step", "could not renew the lease")
    assert any(line in stack.log("worker0") for line in outage), stack.log("worker0")[-3000:]
    after = stack.submit(fast_spec(steps=20))
    assert stack.wait(after["id"], ["succeeded", "failed"], timeout=120)["status"] == "succeeded"
    prober[0].answers({200, 503})
    assert any(code == 503 for _, code in prober[0].seen), "the outage was not seen"


def test_disk_full_at_a_checkpoint(live_stack: type[LiveStack], tmp_path: Path,
                                   prober: list[Prober]) -> None:
    """ENOSPC when the step-40 checkpoint is written (GAN_TEST_ENOSPC_AT_CHECKPOINT): the job
    fails saying the disk is full; the step-20 checkpoint stays whole, here and in the
    artifact store; the same worker then serves the next job."""
    stack = live_stack(tmp_path, f"sqlite:///{tmp_path / 'gan.db'}",
                       GAN_TEST_ENOSPC_AT_CHECKPOINT="40", **STEADY)
    stack.start_api()
    worker = stack.start_worker()
    job = stack.submit(fast_spec(steps=60, checkpoint_every=20))
    prober.append(Prober(stack.url, job["id"]))
    prober[0].start()
    done = stack.wait(job["id"], ["succeeded", "failed"], timeout=120)
    assert done["status"] == "failed", (done, stack.logs())
    assert "disk is full" in done["error"] and "ENOSPC" in done["error"], done["error"]
    import torch

    workdir = tmp_path / "work" / "jobs" / job["id"]
    stored = tmp_path / "artifacts" / "checkpoints" / job["id"] / "checkpoint.pt"
    assert torch.load(workdir / "checkpoint.pt", weights_only=True)["step"] == 20
    if stored.exists():  # the lease thread's copy, when it ran since step 20
        assert torch.load(stored, weights_only=True)["step"] == 20
    assert not list(workdir.glob("*.tmp"))
    nxt = stack.submit(fast_spec(steps=20))  # its only checkpoint (step 20) is below the fault
    assert stack.wait(nxt["id"], ["succeeded", "failed"], timeout=120)["status"] == "succeeded"
    assert worker.poll() is None and len(stack.workers) == 1
    prober[0].answers({200})
