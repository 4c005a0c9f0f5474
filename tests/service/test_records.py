"""The job store on SQLite and PostgreSQL: atomic claims, leases, fencing, the reaper."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import TypeVar

from sqlalchemy import update

from gan_platform.records import Records, jobs, utcnow
from tests.conftest import FAST_SPEC

A = TypeVar("A")
R = TypeVar("R")


def expire(records: Records, job_id: str) -> None:
    with records.engine.begin() as conn:
        conn.execute(update(jobs).where(jobs.c.id == job_id)
                     .values(lease_until=utcnow() - timedelta(seconds=1)))


def race(fn: Callable[[A], R], args: Iterable[A], timeout: float = 60) -> list[R]:
    """fn(arg) for each arg, each in its own thread, started together; their results in order.
    An exception in any thread is re-raised here (a thread's own exception is only a warning
    in pytest), as is a thread that does not return within `timeout`."""
    items = list(args)
    start = threading.Barrier(len(items))

    def run(arg: A) -> R:
        start.wait(timeout)
        return fn(arg)

    with ThreadPoolExecutor(max_workers=len(items)) as pool:
        futures = [pool.submit(run, a) for a in items]
        return [f.result(timeout) for f in futures]


def test_claim_is_atomic(db_url: str) -> None:
    records = Records(db_url)
    job, created = records.create_job(FAST_SPEC, "h")
    assert created and job["status"] == "queued" and job["attempts"] == 0

    def claim(token: str) -> str | None:
        other = Records(db_url)
        try:
            return token if other.claim(job["id"], token, 60, 3) is not None else None
        finally:
            other.dispose()

    results = race(claim, [f"w{i}" for i in range(6)])
    winners = [r for r in results if r is not None]
    assert len(winners) == 1, results  # and the five losers returned None: none raised
    claimed = records.get_job(job["id"])
    assert claimed is not None
    assert claimed["status"] == "running" and claimed["lease_owner"] == winners[0]
    assert claimed["attempts"] == 1 and claimed["started_at"] is not None
    assert claimed["started_at"].tzinfo is not None
    records.dispose()


def test_lease_fencing_and_takeover(db_url: str) -> None:
    records = Records(db_url)
    job, _ = records.create_job(FAST_SPEC, "h")
    jid = job["id"]
    assert records.claim(jid, "old", 60, 3)
    assert records.claim(jid, "new", 60, 3) is None  # lease still valid
    assert records.heartbeat(jid, "old", 60) == "running"
    expire(records, jid)
    assert records.claim(jid, "new", 60, 3)  # expired lease: taken over
    # the old worker is fenced out of every write
    assert records.heartbeat(jid, "old", 60) is None
    assert not records.record_progress(jid, "old", attempt=1, step=5, total_steps=60,
                                       losses={}, metrics={}, lease_seconds=60)
    assert not records.finish(jid, "old", "failed", "x")
    assert not records.finish_succeeded(jid, "old", model_id="m0", model_metadata={},
                                        onnx_uri="u", onnx_sha256="s")
    assert records.record_progress(jid, "new", attempt=2, step=20, total_steps=60,
                                   losses={"critic": 1.5}, metrics={}, lease_seconds=60)
    assert [e["step"] for e in records.events_since(jid)] == [20]
    assert records.finish_succeeded(jid, "new", model_id="m1", model_metadata={"a": 1},
                                    onnx_uri="u", onnx_sha256="s")
    done = records.get_job(jid)
    assert done is not None and done["status"] == "succeeded" and done["model_id"] == "m1"
    assert done["attempts"] == 2 and done["lease_owner"] is None
    model = records.get_model("m1")
    assert model is not None and model["metadata"] == {"a": 1} and model["job_id"] == jid
    assert records.claim(jid, "late", 60, 3) is None  # a late duplicate message is dropped
    records.dispose()


def test_reaper_requeues_then_fails(db_url: str) -> None:
    records = Records(db_url)
    jid = records.create_job(FAST_SPEC, "h")[0]["id"]
    for attempt in (1, 2, 3):
        assert records.claim(jid, f"w{attempt}", 60, 3)
        assert records.reap(3).requeued == []  # lease valid
        expire(records, jid)
        reaped = records.reap(3)
        if attempt < 3:
            assert reaped.requeued == [jid] and reaped.failed == []
            job = records.get_job(jid)
            assert job is not None and job["status"] == "queued" and job["lease_owner"] is None
        else:
            assert reaped.failed == [jid]
    job = records.get_job(jid)
    assert job is not None and job["status"] == "failed" and "lost 3 times" in job["error"]
    records.dispose()


def test_cancel_paths(db_url: str) -> None:
    records = Records(db_url)
    queued = records.create_job(FAST_SPEC, "h")[0]["id"]
    job = records.request_cancel(queued)
    assert job is not None and job["status"] == "cancelled"
    assert records.claim(queued, "w", 60, 3) is None
    running = records.create_job(FAST_SPEC, "h")[0]["id"]
    records.claim(running, "w", 60, 3)
    job = records.request_cancel(running)
    assert job is not None and job["status"] == "cancelling"
    assert records.heartbeat(running, "w", 60) == "cancelling"
    assert records.finish(running, "w", "cancelled")
    # a worker lost while cancelling: the reaper ends the job cancelled
    lost = records.create_job(FAST_SPEC, "h")[0]["id"]
    records.claim(lost, "w", 60, 3)
    records.request_cancel(lost)
    expire(records, lost)
    assert records.reap(3).cancelled == [lost]
    assert records.request_cancel("nope") is None
    records.dispose()


def test_release_and_stale_queued(db_url: str) -> None:
    records = Records(db_url)
    jid = records.create_job(FAST_SPEC, "h")[0]["id"]
    records.claim(jid, "w", 60, 3)
    assert records.release(jid, "w")
    job = records.get_job(jid)
    assert job is not None and job["status"] == "queued" and job["attempts"] == 0
    assert records.stale_queued(3600) == []
    # enqueued an hour ago (set, not slept: a loaded machine cannot make a fresh mark stale)
    with records.engine.begin() as conn:
        conn.execute(update(jobs).where(jobs.c.id == jid)
                     .values(enqueued_at=utcnow() - timedelta(hours=1)))
    assert records.stale_queued(60) == [jid]
    assert records.stale_queued(60) == []  # just marked as re-sent: a minute is far away
    records.dispose()


def test_idempotency_key_race(db_url: str) -> None:
    records = Records(db_url)

    def create(key: str) -> tuple[str, bool]:
        other = Records(db_url)
        try:
            job, created = other.create_job(FAST_SPEC, "h", idempotency_key=key)
            return job["id"], created
        finally:
            other.dispose()

    # Three rounds of six callers of one key: most rounds send some of them past the look-up
    # into the insert that loses (IntegrityError), whose answer must be the winner's job.
    for key in ("k1", "k2", "k3"):
        results = race(create, [key] * 6)  # every caller got an answer: none raised
        assert len({job_id for job_id, _ in results}) == 1, results
        assert sum(created for _, created in results) == 1, results  # one made it, five found it
    assert records.list_jobs()[1] == 3
    records.dispose()
