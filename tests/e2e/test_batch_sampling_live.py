"""Batch sampling jobs with real processes, mid-chunk: uvicorn and two Celery workers on the real
Redis, API keys on, 10^6 condition rows from an uploaded Parquet file, each piece of 65,536
rows slowed down by the test seam GAN_TEST_SAMPLING_PIECE_SECONDS so that the test can act
while chunks run.

- cancelled mid-way: the running chunks stop at their next piece, the chunks not started are
  never run, the job ends cancelled; the event stream's progress went up before;
- a worker SIGKILLed in the middle of a chunk: the other worker (its reaper) takes the chunk
  over once its lease lapses, and the result is every row, equal to the in-process
  sampler's rows piece by piece (on PostgreSQL);
- another key sees none of it (404).

The quick path (two workers, no pause) is tests/e2e/test_sampling_jobs_live.py."""

from __future__ import annotations

import io
import signal
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from gan_platform.records import Records
from gan_platform.settings import Settings
from service.auth import hash_key
from serving.batch import PIECE_ROWS, piece_seed, pieces
from serving.sampling import load_model, sample
from tests.conftest import LiveStack, read_sse
from tests.service.test_api import register_model

pytestmark = pytest.mark.integration

ROWS = 1_000_000
CHUNK = 2 * PIECE_ROWS  # 8 chunks of two pieces
KEYS = {"alice": "alice-key-0123456789", "bob": "bob-key-0123456789"}
ALICE = {"Authorization": f"Bearer {KEYS['alice']}"}
BOB = {"Authorization": f"Bearer {KEYS['bob']}"}


def start(live_stack: type[LiveStack], tmp_path: Path, db: str, pause: float
          ) -> tuple[LiveStack, str, str, np.ndarray]:
    """The stack with two workers, alice's model and her upload of 10^6 angles."""
    keys = ",".join(f"{name}:train+sample:{hash_key(key)}" for name, key in KEYS.items())
    stack = live_stack(tmp_path, db, API_KEYS=keys,
                       GAN_TEST_SAMPLING_PIECE_SECONDS=str(pause))
    conf = Settings(DATABASE_URL=db, ARTIFACT_ROOT=stack.env["ARTIFACT_ROOT"])
    model_id = register_model(conf, tmp_path, conditions=("angle",), owner="alice")
    stack.start_api()
    for _ in range(2):
        stack.start_worker()
    angle = np.random.default_rng(5).uniform(0, 6.3, ROWS)
    buf = io.BytesIO()
    pq.write_table(pa.table({"angle": angle}), buf)
    r = stack.client.post("/v1/datasets", files={"file": ("angle.parquet", buf.getvalue())},
                          headers=ALICE)
    assert r.status_code == 201, r.text
    return stack, model_id, r.json()["uri"], angle


def submit(stack: LiveStack, model_id: str, uri: str) -> str:
    r = stack.client.post(f"/v1/models/{model_id}/sampling-jobs", headers=ALICE,
                          json={"dataset": {"uri": uri}, "seed": 21, "chunk_rows": CHUNK})
    assert r.status_code == 202, r.text
    return str(r.json()["id"])


def job_of(stack: LiveStack, job_id: str) -> dict:
    return dict(stack.client.get(f"/v1/sampling-jobs/{job_id}", headers=ALICE).json())


def wait(stack: LiveStack, job_id: str, done: object, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    job: dict = {}
    while time.monotonic() < deadline:
        job = job_of(stack, job_id)
        if callable(done) and done(job):
            return job
        time.sleep(0.05)
    raise AssertionError(f"sampling job {job_id}: {job}\n{stack.logs()}")


def empty_tables(db: str) -> None:
    from gan_platform.records import metadata

    records = Records(db)
    with records.engine.begin() as conn:
        for table in reversed(metadata.sorted_tables):
            conn.execute(table.delete())
    records.dispose()


def chunks(db: str, job_id: str) -> list[dict]:
    records = Records(db)
    try:
        return records.sampling_chunks(job_id)
    finally:
        records.dispose()


def test_cancel_mid_way(live_stack: type[LiveStack], tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'gan.db'}"
    stack, model_id, uri, _ = start(live_stack, tmp_path, db, pause=0.4)
    job_id = submit(stack, model_id, uri)
    url = f"/v1/sampling-jobs/{job_id}"
    events: list[tuple[str, dict]] = []
    reader = threading.Thread(target=lambda: events.extend(
        read_sse(stack.client, f"{url}/events", timeout=120, headers=ALICE)))
    reader.start()
    wait(stack, job_id, lambda j: j["progress"]["chunks_done"] >= 2)
    # Cancel while a chunk is in its first piece (claimed under 0.3 s ago: a chunk reads its
    # job's status before its second piece), so that one chunk is stopped mid-way.
    deadline = time.monotonic() + 60
    while True:
        now = datetime.now(UTC)
        fresh = [c for c in chunks(db, job_id) if c["status"] == "running"
                 and now - c["started_at"] < timedelta(seconds=0.3)]
        if fresh:
            break
        assert time.monotonic() < deadline, stack.logs()
        time.sleep(0.02)
    r = stack.client.post(f"{url}/cancel", headers=ALICE)
    assert r.status_code in (200, 202), r.text
    job = wait(stack, job_id, lambda j: j["status"] in ("cancelled", "succeeded", "failed"))
    reader.join(60)
    assert job["status"] == "cancelled", job
    rows = chunks(db, job_id)
    states = [(c["status"], c["attempts"]) for c in rows]
    done = [s for s in states if s[0] == "succeeded"]
    never_run = [s for s in states if s == ("cancelled", 0)]
    assert 2 <= len(done) <= 5 and len(never_run) >= 2, states
    assert {s for s, _ in states} <= {"succeeded", "cancelled"}, states
    assert states[fresh[0]["chunk"]] == ("cancelled", 1), states  # stopped at its next piece
    assert job["progress"]["rows_done"] == sum(c["stop"] - c["start"] for c in rows
                                               if c["status"] == "succeeded")
    assert stack.client.get(f"{url}/result", headers=ALICE).status_code == 409
    # the stream: progress going up, one event per chunk done, then the cancelled job
    progress = [d["rows_done"] for k, d in events if k == "progress"]
    assert len(progress) == len(done) and progress == sorted(progress) and progress[0] > 0
    assert events[-1][0] == "end" and events[-1][1]["status"] == "cancelled"
    # bob: 404 on every route of alice's job, and none listed
    for route in ("", "/result", "/events", "/shards/0"):
        assert stack.client.get(url + route, headers=BOB).status_code == 404, route
    assert stack.client.post(f"{url}/cancel", headers=BOB).status_code == 404
    assert stack.client.get("/v1/sampling-jobs", headers=BOB).json()["total"] == 0
    r = stack.client.post(f"/v1/models/{model_id}/sampling-jobs", headers=BOB,
                          json={"dataset": {"uri": uri}})
    assert r.status_code == 404  # alice's private model


def test_a_worker_killed_mid_chunk(live_stack: type[LiveStack], tmp_path: Path,
                                   pg_url: str) -> None:
    empty_tables(pg_url)  # no other test's queued jobs for these workers' reapers to re-send
    stack, model_id, uri, angle = start(live_stack, tmp_path, pg_url, pause=0.5)
    job_id = submit(stack, model_id, uri)
    victim, survivor = stack.workers

    def victim_mid_chunk() -> dict | None:
        for c in chunks(pg_url, job_id):
            owner = c["lease_owner"] or ""
            if c["status"] == "running" and f":{victim.pid}:" in owner:
                return c
        return None

    deadline = time.monotonic() + 60
    while (killed := victim_mid_chunk()) is None:
        assert time.monotonic() < deadline, stack.logs()
        time.sleep(0.05)
    time.sleep(0.2)  # inside its first piece's pause: mid-chunk
    victim.send_signal(signal.SIGKILL)
    victim.wait(10)
    job = wait(stack, job_id, lambda j: j["status"] in ("succeeded", "failed", "cancelled"))
    assert job["status"] == "succeeded", (job, stack.logs())
    rows = chunks(pg_url, job_id)
    again = rows[killed["chunk"]]
    assert again["attempts"] == 2 and f":{survivor.pid}:" in again["done_by"], again
    assert all(c["attempts"] == 1 for c in rows if c["chunk"] != killed["chunk"])

    result = stack.client.get(f"/v1/sampling-jobs/{job_id}/result", headers=ALICE).json()
    tables = [pq.read_table(io.BytesIO(stack.client.get(s["url"], headers=ALICE).content))
              for s in result["shards"]]
    table = pa.concat_tables(tables)
    assert table.num_rows == ROWS and table.column_names == ["angle", "x", "y"]
    assert np.array_equal(table.column("angle").to_numpy(), angle)  # the input order
    (onnx,) = (tmp_path / "artifacts").rglob("generator.onnx")
    model = load_model(onnx)
    conditions = angle.astype(np.float32).reshape(-1, 1)
    want = np.concatenate([sample(model, b - a, piece_seed(21, p), conditions[a:b])
                           for p, a, b in pieces(0, ROWS)])
    got = np.column_stack([table.column(c).to_numpy() for c in ("x", "y")])
    assert np.array_equal(got, want)
