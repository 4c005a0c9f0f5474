"""The batch sampling jobs' store on SQLite and PostgreSQL: atomic chunk claims, fencing by the
claim's token, the reaper's re-queue of a lapsed chunk or plan, cancel, the per-key quota."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from sqlalchemy import update

from gan_platform.records import (
    QuotaExceeded,
    Records,
    sampling_chunks,
    sampling_jobs,
    utcnow,
)
from tests.conftest import FAST_SPEC
from tests.service.test_records import race


def make_model(records: Records, owner: str | None = None) -> str:
    job, _ = records.create_job(FAST_SPEC, "h", owner=owner)
    assert records.claim(job["id"], "trainer", 60, 3)
    model_id = str(uuid.uuid4())
    assert records.finish_succeeded(job["id"], "trainer", model_id=model_id,
                                    model_metadata={}, onnx_uri="u", onnx_sha256="s")
    return model_id


def planned_job(records: Records, chunks: int = 4, owner: str | None = None) -> str:
    """A sampling job planned into `chunks` chunks of 10 rows, all queued."""
    job = records.create_sampling_job(model_id=make_model(records, owner), owner=owner,
                                      request={"n": 10 * chunks}, seed=7, chunk_rows=65536)
    assert job["status"] == "queued" and job["rows_done"] == 0
    assert records.claim_sampling_plan(job["id"], "planner", 60, 3) is not None
    bounds = [(10 * i, 10 * i + 10) for i in range(chunks)]
    assert records.plan_sampling_job(job["id"], "planner", total_rows=10 * chunks,
                                     bounds=bounds, plan={"conditions": []})
    return str(job["id"])


def expire_chunk(records: Records, job_id: str, chunk: int) -> None:
    with records.engine.begin() as conn:
        conn.execute(update(sampling_chunks)
                     .where(sampling_chunks.c.job_id == job_id, sampling_chunks.c.chunk == chunk)
                     .values(lease_until=utcnow() - timedelta(seconds=1)))


def finish(records: Records, job_id: str, chunk: int, token: str) -> bool:
    return records.finish_chunk(job_id, chunk, token, shard_key=f"k{chunk}", shard_bytes=1,
                                shard_sha256="s")


def test_a_chunk_claim_is_atomic(db_url: str) -> None:
    records = Records(db_url)
    job_id = planned_job(records)

    def claim(token: str) -> str | None:
        other = Records(db_url)
        try:
            return token if other.claim_chunk(job_id, 2, token, 60, 3) is not None else None
        finally:
            other.dispose()

    winners = [r for r in race(claim, [f"w{i}" for i in range(6)]) if r is not None]
    assert len(winners) == 1
    chunk = records.sampling_chunks(job_id)[2]
    assert chunk["status"] == "running" and chunk["lease_owner"] == winners[0]
    assert chunk["attempts"] == 1 and (chunk["start"], chunk["stop"]) == (20, 30)
    # the other chunks are untouched; a chunk of a job that is not running is not claimable
    assert {c["status"] for i, c in enumerate(records.sampling_chunks(job_id)) if i != 2} == {
        "queued"}
    records.dispose()


def test_fencing_counts_a_chunk_once_and_the_last_one_ends_the_job(db_url: str) -> None:
    records = Records(db_url)
    job_id = planned_job(records, chunks=2)
    assert records.claim_chunk(job_id, 0, "old", 60, 3)
    assert records.claim_chunk(job_id, 0, "new", 60, 3) is None  # its lease holds
    assert records.heartbeat_chunk(job_id, 0, "old", 60) == "running"
    expire_chunk(records, job_id, 0)
    assert records.claim_chunk(job_id, 0, "new", 60, 3)  # lapsed: taken over
    # the old claim is fenced out of every write
    assert records.heartbeat_chunk(job_id, 0, "old", 60) is None
    assert not finish(records, job_id, 0, "old")
    assert not records.fail_chunk(job_id, 0, "old", "x")
    assert not records.stop_chunk(job_id, 0, "old")
    assert not records.release_chunk(job_id, 0, "old")
    assert finish(records, job_id, 0, "new")
    assert not finish(records, job_id, 0, "new")  # once
    job = records.get_sampling_job(job_id)
    assert job is not None and job["status"] == "running"
    assert (job["rows_done"], job["chunks_done"]) == (10, 1)
    chunk = records.sampling_chunks(job_id)[0]
    assert chunk["attempts"] == 2 and chunk["done_by"] == "new" and chunk["seq"] == 1
    assert records.claim_chunk(job_id, 1, "w", 60, 3)
    assert finish(records, job_id, 1, "w")
    job = records.get_sampling_job(job_id)
    assert job is not None and job["status"] == "succeeded" and job["finished_at"] is not None
    assert (job["rows_done"], job["chunks_done"], job["chunks_total"]) == (20, 2, 2)
    events = records.sampling_events_since(job_id)
    assert [(e["id"], e["chunk"], e["rows_done"]) for e in events] == [(1, 0, 10), (2, 1, 20)]
    assert [e["id"] for e in records.sampling_events_since(job_id, 1)] == [2]
    records.dispose()


def test_the_reaper_requeues_a_lapsed_chunk_then_fails_the_job(db_url: str) -> None:
    records = Records(db_url)
    job_id = planned_job(records, chunks=3)
    assert records.claim_chunk(job_id, 1, "w1", 60, 2)
    assert records.reap_sampling(2).chunks == []  # a live lease is left alone
    expire_chunk(records, job_id, 1)
    reaped = race(lambda _: Records(db_url).reap_sampling(2), range(3))  # three reapers
    assert sum(len(r.chunks) for r in reaped) == 1  # re-queued by exactly one of them
    assert records.sampling_chunks(job_id)[1]["status"] == "queued"
    assert records.claim_chunk(job_id, 1, "w2", 60, 2)  # the second (last) attempt
    expire_chunk(records, job_id, 1)
    result = records.reap_sampling(2)
    assert result.failed == [job_id] and result.chunks == []
    job = records.get_sampling_job(job_id)
    assert job is not None and job["status"] == "failed"
    assert "chunk 1 (rows 10..20) was lost 2 times" in job["error"]
    # the chunks not started are cancelled, and no longer claimable
    assert [c["status"] for c in records.sampling_chunks(job_id)] == [
        "cancelled", "failed", "cancelled"]
    assert records.claim_chunk(job_id, 0, "w3", 60, 2) is None
    records.dispose()


def test_the_reaper_requeues_a_lapsed_plan(db_url: str) -> None:
    records = Records(db_url)
    job = records.create_sampling_job(model_id=make_model(records), owner=None,
                                      request={"n": 5}, seed=1, chunk_rows=65536)
    assert records.claim_sampling_plan(job["id"], "p1", 60, 3)
    assert records.claim_sampling_plan(job["id"], "p2", 60, 3) is None
    with records.engine.begin() as conn:
        conn.execute(update(sampling_jobs).where(sampling_jobs.c.id == job["id"])
                     .values(lease_until=utcnow() - timedelta(seconds=1)))
    assert records.reap_sampling(3).plans == [job["id"]]
    assert records.claim_sampling_plan(job["id"], "p2", 60, 3)
    # the first planner is fenced out
    assert not records.heartbeat_sampling_plan(job["id"], "p1", 60)
    assert not records.plan_sampling_job(job["id"], "p1", total_rows=5, bounds=[(0, 5)],
                                         plan={})
    assert records.plan_sampling_job(job["id"], "p2", total_rows=5, bounds=[(0, 5)], plan={})
    assert records.claim_sampling_plan(job["id"], "p3", 60, 3) is None  # planned once
    assert len(records.sampling_chunks(job["id"])) == 1
    records.dispose()


def test_cancel_skips_queued_chunks_and_waits_for_the_running_ones(db_url: str) -> None:
    records = Records(db_url)
    job_id = planned_job(records, chunks=3)
    assert records.claim_chunk(job_id, 0, "w", 60, 3)
    job = records.request_sampling_cancel(job_id)
    assert job is not None and job["status"] == "cancelling"
    assert [c["status"] for c in records.sampling_chunks(job_id)] == [
        "running", "cancelled", "cancelled"]
    assert records.claim_chunk(job_id, 1, "w2", 60, 3) is None  # not run
    assert records.heartbeat_chunk(job_id, 0, "w", 60) == "cancelling"
    assert records.stop_chunk(job_id, 0, "w")
    job = records.get_sampling_job(job_id)
    assert job is not None and job["status"] == "cancelled" and job["finished_at"]
    # a queued job is cancelled at once
    other = records.create_sampling_job(model_id=make_model(records), owner=None,
                                        request={"n": 5}, seed=1, chunk_rows=65536)
    cancelled = records.request_sampling_cancel(other["id"])
    assert cancelled is not None and cancelled["status"] == "cancelled"
    assert records.claim_sampling_plan(other["id"], "p", 60, 3) is None
    records.dispose()


def test_the_quota_of_sampling_jobs_is_atomic(db_url: str) -> None:
    records = Records(db_url)
    model_id = make_model(records, "alice")
    records.create_job(FAST_SPEC, "h", owner="alice")  # a queued training job of alice's

    def submit(i: int) -> bool:
        other = Records(db_url)
        try:
            other.create_sampling_job(model_id=model_id, owner="alice", request={"n": i},
                                      seed=i, chunk_rows=65536, max_active=3)
            return True
        except QuotaExceeded:
            return False
        finally:
            other.dispose()

    assert sum(race(submit, range(6))) == 3
    with pytest.raises(QuotaExceeded):
        records.create_sampling_job(model_id=model_id, owner="alice", request={"n": 1},
                                    seed=1, chunk_rows=65536, max_active=3)
    # its own quota: alice's queued training job did not count in it
    assert records.list_sampling_jobs(owner="alice")[1] == 3
    records.dispose()


def test_lost_messages_are_resent_once(db_url: str) -> None:
    records = Records(db_url)
    job_id = planned_job(records, chunks=2)
    queued = records.create_sampling_job(model_id=make_model(records), owner=None,
                                         request={"n": 5}, seed=1, chunk_rows=65536)
    with records.engine.begin() as conn:
        old = utcnow() - timedelta(seconds=60)
        conn.execute(update(sampling_chunks).values(enqueued_at=old))
        conn.execute(update(sampling_jobs).values(enqueued_at=old))
    plans, chunks = records.stale_sampling(30)
    assert plans == [queued["id"]] and sorted(chunks) == [(job_id, 0), (job_id, 1)]
    assert records.stale_sampling(30) == ([], [])
    records.dispose()
