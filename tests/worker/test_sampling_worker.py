"""Batch sampling jobs in the worker's own code, in-process (no Celery): the plan and the chunks
on 10^6 rows, each source kind (an upload read in place, NPY, a CSV and a builtin copied by the
planner), categorical conditions, the failures a job names, and the seeding rule: the rows do
not depend on the chunk size, and a chunk run again writes the same bytes."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from gan_platform.artifacts import ArtifactStore
from gan_platform.records import Records
from gan_platform.settings import Settings
from serving.batch import PIECE_ROWS, piece_seed, pieces
from serving.sampling import load_model, sample
from tests.service.test_api import make_settings, register_model
from worker import sampling
from worker.runner import Context

N = 1_000_000


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path, f"sqlite:///{tmp_path / 'gan.db'}")


@pytest.fixture
def ctx(settings: Settings) -> Context:
    return Context(settings=settings, records=Records(settings.DATABASE_URL),
                   store=ArtifactStore(settings.ARTIFACT_ROOT), resend=lambda _: None)


def upload(ctx: Context, path: Path, fmt: str, owner: str | None = None) -> str:
    """An upload, stored as the API stores one; its dataset:// URI."""
    import uuid

    from gan_platform.artifacts import sha256_file, upload_key

    dataset_id = str(uuid.uuid4())
    uri = ctx.store.put_file(path, upload_key(dataset_id, "data"))
    ctx.records.create_dataset(dataset_id, filename=path.name, artifact_uri=uri, format=fmt,
                               size=path.stat().st_size, sha256=sha256_file(path), owner=owner)
    return f"dataset://{dataset_id}"


def run_job(ctx: Context, model_id: str, request: dict[str, Any],
            chunk_rows: int = 2 * PIECE_ROWS, before_chunk: Callable[[int], None] | None = None
            ) -> dict[str, Any]:
    """A sampling job planned and every chunk run here, in order; the job at the end."""
    job = ctx.records.create_sampling_job(model_id=model_id, owner=None, request=request,
                                          seed=int(request["seed"]), chunk_rows=chunk_rows)
    sent: list[tuple[str, int]] = []
    sampling.plan(ctx, job["id"], lambda j, c: sent.append((j, c)))
    for job_id, chunk in sent:
        if before_chunk is not None:
            before_chunk(chunk)
        sampling.run_chunk(ctx, job_id, chunk, lambda j, c: None)
    done = ctx.records.get_sampling_job(job["id"])
    assert done is not None
    return done


def result_table(ctx: Context, job_id: str) -> pa.Table:
    parts = [pq.read_table(ctx.store.local_path(c["shard_key"]))
             for c in ctx.records.sampling_chunks(job_id)]
    return pa.concat_tables(parts)


def expected_rows(ctx: Context, model_id: str, seed: int, conditions: np.ndarray | None,
                  n: int) -> np.ndarray:
    """The in-process sampler's rows, piece by piece, each from its piece's seed."""
    row = ctx.records.get_model(model_id)
    assert row is not None
    model = load_model(ctx.store.local_path(ctx.store.key_of(row["onnx_uri"])))
    out = [sample(model, stop - start, piece_seed(seed, p),
                  None if conditions is None else conditions[start:stop])
           for p, start, stop in pieces(0, n)]
    return np.concatenate(out)


def features(table: pa.Table, names: tuple[str, ...] = ("x", "y")) -> np.ndarray:
    return np.column_stack([table.column(n).to_numpy() for n in names])


def test_a_million_rows_from_an_upload_in_input_order(ctx: Context, settings: Settings,
                                                      tmp_path: Path) -> None:
    model_id = register_model(settings, tmp_path, conditions=("angle",))
    angle = np.random.default_rng(1).uniform(0, 6.3, N)
    path = tmp_path / "conditions.parquet"
    pq.write_table(pa.table({"angle": angle, "other": np.arange(N)}), path,
                   row_group_size=300_000)  # row groups that straddle the chunks
    uri = upload(ctx, path, "parquet")
    job = run_job(ctx, model_id, {"dataset": {"uri": uri}, "seed": 7})
    assert job["status"] == "succeeded", job["error"]
    assert (job["total_rows"], job["rows_done"], job["chunks_total"]) == (N, N, 8)
    assert job["plan"]["source"] == {"kind": "file", "format": "parquet"}  # read in place
    table = result_table(ctx, job["id"])
    assert table.column_names == ["angle", "x", "y"] and table.num_rows == N
    assert table.schema.field("angle").type == pa.float64()  # as given
    assert np.array_equal(table.column("angle").to_numpy(), angle)
    want = expected_rows(ctx, model_id, 7, angle.astype(np.float32).reshape(-1, 1), N)
    assert np.array_equal(features(table), want)

    # Another chunk size: the same rows. Chunk 3 run again (its worker lost): the same bytes.
    again = run_job(ctx, model_id, {"dataset": {"uri": uri}, "seed": 7},
                    chunk_rows=4 * PIECE_ROWS)
    assert again["chunks_total"] == 4
    assert features(result_table(ctx, again["id"])).tobytes() == want.tobytes()
    first = ctx.records.sampling_chunks(job["id"])[3]
    token_chunk = _rerun_chunk(ctx, job["id"], 3)
    assert token_chunk["shard_key"] != first["shard_key"]  # the new claim's own file
    assert token_chunk["shard_sha256"] == first["shard_sha256"]
    assert (ctx.store.local_path(token_chunk["shard_key"]).read_bytes()
            == ctx.store.local_path(first["shard_key"]).read_bytes())


def _rerun_chunk(ctx: Context, job_id: str, chunk: int) -> dict[str, Any]:
    """Run a finished chunk once more, as a worker that took over a lapsed lease would."""
    from sqlalchemy import update

    from gan_platform.records import sampling_chunks, sampling_jobs

    with ctx.records.engine.begin() as conn:
        conn.execute(update(sampling_chunks).where(sampling_chunks.c.job_id == job_id,
                                                   sampling_chunks.c.chunk == chunk)
                     .values(status="queued"))
        conn.execute(update(sampling_jobs).where(sampling_jobs.c.id == job_id)
                     .values(status="running"))
    assert sampling.run_chunk(ctx, job_id, chunk, lambda j, c: None) == "succeeded"
    return ctx.records.sampling_chunks(job_id)[chunk]


@pytest.mark.parametrize("kind", ["npy", "csv", "builtin"])
def test_other_sources(kind: str, ctx: Context, settings: Settings, tmp_path: Path) -> None:
    """NPY is read in place (a memory map); a CSV file and a builtin are copied once by the
    planner, one Parquet file per chunk; every one gives the same kind of result."""
    model_id = register_model(settings, tmp_path, conditions=("angle",))
    n = 80_000 if kind == "builtin" else 150_000  # the builtin has 100,000 rows
    angle = np.random.default_rng(2).uniform(0, 6.3, n).astype(np.float32)
    data = tmp_path / "data"
    conditions: list[str] | None = ["col1"]
    if kind == "npy":
        np.save(data / "c.npy", np.column_stack([np.zeros(n, np.float32), angle]))
        uri = f"file://{data / 'c.npy'}"
    elif kind == "csv":
        (data / "c.csv").write_text("angle\n" + "\n".join(f"{a!r}" for a in angle.tolist()))
        uri, conditions = f"file://{data / 'c.csv'}", None
    else:
        uri, conditions = "builtin://conditional-ring", None
    dataset: dict[str, Any] = {"uri": uri, "conditions": conditions}
    if kind == "builtin":
        dataset["max_rows"] = n
    job = run_job(ctx, model_id, {"dataset": dataset, "seed": 3})
    assert job["status"] == "succeeded", job["error"]
    assert job["plan"]["source"]["kind"] == ("file" if kind == "npy" else "copy")
    table = result_table(ctx, job["id"])
    column = "col1" if kind == "npy" else "angle"
    assert table.column_names == [column, "x", "y"] and table.num_rows == n
    given = table.column(column).to_numpy()
    if kind != "builtin":
        assert np.array_equal(given.astype(np.float32), angle)
    want = expected_rows(ctx, model_id, 3, given.astype(np.float32).reshape(-1, 1), n)
    assert np.array_equal(features(table), want)


def test_unconditional_n_rows(ctx: Context, settings: Settings, tmp_path: Path) -> None:
    model_id = register_model(settings, tmp_path)
    job = run_job(ctx, model_id, {"n": 200_000, "seed": 11})
    assert job["status"] == "succeeded" and job["chunks_total"] == 2
    table = result_table(ctx, job["id"])
    assert table.column_names == ["x", "y"]
    assert np.array_equal(features(table), expected_rows(ctx, model_id, 11, None, 200_000))


def test_categorical_conditions_take_their_values(ctx: Context, settings: Settings,
                                                  tmp_path: Path) -> None:
    from tests.service.test_categorical_api import COLOURS, register_categorical_model

    model_id = register_categorical_model(settings, tmp_path)
    rng = np.random.default_rng(4)
    n = 70_000
    digits = rng.integers(0, 10, n)
    colours = np.array(COLOURS, dtype=object)[rng.integers(0, 3, n)]
    path = tmp_path / "data" / "c.parquet"
    pq.write_table(pa.table({"d": digits, "colour": colours}), path)
    dataset = {"uri": f"file://{path}", "conditions": ["d", "colour"]}
    job = run_job(ctx, model_id, {"dataset": dataset, "seed": 5})
    assert job["status"] == "succeeded", job["error"]
    table = result_table(ctx, job["id"])
    assert table.column("colour").to_pylist() == colours.tolist()  # strings, as given
    codes = np.array([COLOURS.index(c) for c in colours])
    assert np.array_equal(table.column("x").to_numpy(), digits + 100 * codes)
    # an unknown category fails the job, naming the column and the row
    colours[12_345] = "purple"
    pq.write_table(pa.table({"d": digits, "colour": colours}), path)
    job = run_job(ctx, model_id, {"dataset": dataset, "seed": 5})
    assert job["status"] == "failed"
    assert "chunk 0 (rows 0..70000)" in job["error"] and "'colour'" in job["error"]
    assert "'purple'" in job["error"], job["error"]


def test_failures_name_their_reason(ctx: Context, settings: Settings, tmp_path: Path) -> None:
    model_id = register_model(settings, tmp_path, conditions=("angle",))
    data = tmp_path / "data"
    pq.write_table(pa.table({"theta": np.linspace(0, 1, 1000)}), data / "c.parquet")
    job = run_job(ctx, model_id, {"dataset": {"uri": f"file://{data / 'c.parquet'}"},
                                  "seed": 1})
    assert job["status"] == "failed"
    assert "unknown column(s) 'angle'" in job["error"] and "'theta'" in job["error"]
    assert ctx.records.sampling_chunks(job["id"]) == []

    values = np.linspace(0, 1, 200_000)
    values[150_007] = np.nan
    pq.write_table(pa.table({"angle": values}), data / "nan.parquet")
    job = run_job(ctx, model_id, {"dataset": {"uri": f"file://{data / 'nan.parquet'}"},
                                  "seed": 1})
    assert job["status"] == "failed"
    assert job["error"].startswith("chunk 1 (rows 131072..200000): column 'angle'")
    assert "row 150007" in job["error"], job["error"]
    assert [c["status"] for c in ctx.records.sampling_chunks(job["id"])] == [
        "succeeded", "failed"]

    small = ctx.settings.model_copy(update={"MAX_SAMPLING_JOB_ROWS": 100})
    job = run_job(Context(small, ctx.records, ctx.store, ctx.resend), model_id,
                  {"dataset": {"uri": f"file://{data / 'nan.parquet'}"}, "seed": 1})
    assert job["status"] == "failed" and "MAX_SAMPLING_JOB_ROWS=100" in job["error"]


def test_a_cancelled_job_stops_at_the_next_piece(ctx: Context, settings: Settings,
                                                 tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Cancelled while its first chunk samples: that chunk stops before its next piece, the
    chunks not started are never run, and the job ends cancelled."""
    model_id = register_model(settings, tmp_path)
    job = ctx.records.create_sampling_job(model_id=model_id, owner=None,
                                          request={"n": 5 * PIECE_ROWS, "seed": 1}, seed=1,
                                          chunk_rows=2 * PIECE_ROWS)
    sent: list[int] = []
    sampling.plan(ctx, job["id"], lambda j, c: sent.append(c))
    assert sent == [0, 1, 2]
    calls: list[int] = []

    def pause() -> None:  # before each piece: cancel before the second one
        calls.append(1)
        if len(calls) == 2:
            ctx.records.request_sampling_cancel(job["id"])

    monkeypatch.setattr(sampling, "_test_pause", pause)
    monkeypatch.setattr(sampling, "STATUS_POLL_SECONDS", 0.0)
    assert sampling.run_chunk(ctx, job["id"], 0, lambda j, c: None) == "cancelled"
    assert len(calls) == 2  # one piece sampled, the second never started
    for chunk in (1, 2):
        assert sampling.run_chunk(ctx, job["id"], chunk, lambda j, c: None) == "dropped"
    done = ctx.records.get_sampling_job(job["id"])
    assert done is not None and done["status"] == "cancelled" and done["rows_done"] == 0
    chunks = ctx.records.sampling_chunks(job["id"])
    assert [(c["status"], c["attempts"]) for c in chunks] == [
        ("cancelled", 1), ("cancelled", 0), ("cancelled", 0)]
