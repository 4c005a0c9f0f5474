"""Batch sampling jobs with real processes: an API and two Celery workers on the real Redis,
10^6 condition rows from an uploaded NPY file, sharded in chunks over both workers; the
result is every row in the input order, equal to the in-process sampler's rows piece by
piece; a worker SIGKILLed mid-job leaves its chunk to the other, and the result is the same."""

from __future__ import annotations

import io
import signal
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from gan_platform.records import Records
from gan_platform.settings import Settings
from serving.batch import PIECE_ROWS, piece_seed
from serving.sampling import load_model, sample
from tests.conftest import LiveStack
from tests.service.test_api import register_model

pytestmark = pytest.mark.integration

ROWS = 1_000_000
CHUNK = 4 * PIECE_ROWS


def _stack(live_stack: type[LiveStack], tmp_path: Path, workers: int = 1
           ) -> tuple[LiveStack, str, np.ndarray, list]:
    stack = live_stack(tmp_path, f"sqlite:///{tmp_path / 'gan.db'}", LEASE_SECONDS="8")
    conf = Settings(DATABASE_URL=stack.env["DATABASE_URL"],
                    ARTIFACT_ROOT=stack.env["ARTIFACT_ROOT"])
    model_id = register_model(conf, tmp_path, conditions=("angle",))
    stack.start_api()
    started = [stack.start_worker() for _ in range(workers)]  # all ready before the job
    angles = np.random.default_rng(3).uniform(-3, 3, (ROWS, 1)).astype(np.float32)
    buf = io.BytesIO()
    np.save(buf, angles)
    r = stack.client.post("/v1/datasets", files={"file": ("angles.npy", buf.getvalue())})
    assert r.status_code == 201, r.text
    spec = {"dataset": {"uri": r.json()["uri"], "conditions": ["col0"]}, "seed": 11,
            "chunk_rows": CHUNK}
    r = stack.client.post(f"/v1/models/{model_id}/sampling-jobs", json=spec)
    assert r.status_code == 202, r.text
    return stack, r.json()["id"], angles, started


def _result(stack: LiveStack, job_id: str) -> np.ndarray:
    result = stack.client.get(f"/v1/sampling-jobs/{job_id}/result").json()
    assert result["rows"] == ROWS and len(result["shards"]) == -(-ROWS // CHUNK)
    tables = [pq.read_table(io.BytesIO(stack.client.get(s["url"]).content))
              for s in sorted(result["shards"], key=lambda s: s["chunk"])]
    return np.column_stack([np.concatenate([t.column(c).to_numpy() for t in tables])
                            for c in result["columns"]])


def _expected(tmp_path: Path, angles: np.ndarray) -> np.ndarray:
    (onnx,) = (tmp_path / "artifacts").rglob("generator.onnx")
    model = load_model(onnx)
    pieces = [sample(model, len(angles[s:s + PIECE_ROWS]), piece_seed(11, p),
                     angles[s:s + PIECE_ROWS])
              for p, s in enumerate(range(0, ROWS, PIECE_ROWS))]
    return np.concatenate(pieces)


def _done_by(stack: LiveStack, job_id: str) -> set[str]:
    records = Records(stack.env["DATABASE_URL"])
    try:
        return {c["done_by"].split(":")[1] for c in records.sampling_chunks(job_id)}
    finally:
        records.dispose()


def test_a_million_rows_sharded_over_two_workers(live_stack: type[LiveStack],
                                                 tmp_path: Path) -> None:
    stack, job_id, angles, workers = _stack(live_stack, tmp_path, workers=2)
    job = _wait(stack, job_id)
    assert job["status"] == "succeeded", (job, stack.logs())
    assert job["progress"]["rows_done"] == ROWS, job
    rows = _result(stack, job_id)
    assert np.array_equal(rows[:, :1], angles)  # the conditions, in the input order
    assert np.array_equal(rows[:, 1:], _expected(tmp_path, angles))
    assert _done_by(stack, job_id) == {str(w.pid) for w in workers}


def test_a_worker_killed_mid_job_leaves_its_chunk_to_the_other(live_stack: type[LiveStack],
                                                               tmp_path: Path) -> None:
    stack, job_id, angles, (victim,) = _stack(live_stack, tmp_path)
    import time

    deadline = time.monotonic() + 120
    while stack.client.get(f"/v1/sampling-jobs/{job_id}").json()["progress"][
            "chunks_done"] < 1:
        assert time.monotonic() < deadline, stack.logs()
        time.sleep(0.05)
    victim.send_signal(signal.SIGKILL)
    victim.wait(10)
    stack.start_worker()
    job = _wait(stack, job_id)
    assert job["status"] == "succeeded", (job, stack.logs())
    rows = _result(stack, job_id)
    assert np.array_equal(rows[:, 1:], _expected(tmp_path, angles))


def _wait(stack: LiveStack, job_id: str, timeout: float = 240) -> dict:
    import time

    deadline = time.monotonic() + timeout
    job: dict = {}
    while time.monotonic() < deadline:
        job = stack.client.get(f"/v1/sampling-jobs/{job_id}").json()
        if job["status"] in ("succeeded", "failed", "cancelled"):
            return job
        time.sleep(0.25)
    raise AssertionError(f"sampling job still {job.get('status')}:\n{stack.logs()}")
