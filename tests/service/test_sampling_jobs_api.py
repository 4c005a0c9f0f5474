"""Batch sampling jobs through the API, in-process (TestClient, SQLite and PostgreSQL): what is
refused at submit (422 naming the field), ownership (another key's job is a 404 on every
route, admins see all), the quota, cancel, and the result once the worker's own code
(in-process, no Celery) has run the job: the manifest, the shards, the event stream."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient

from cli.main import parse_sse
from gan_platform.artifacts import ArtifactStore
from gan_platform.records import Records
from gan_platform.settings import Settings
from service.auth import hash_key
from service.main import create_app
from tests.service.test_api import assert_problem, make_settings, register_model
from worker import sampling
from worker.runner import Context

KEYS = {"alice": ("alice-key-0123456789", "train+sample"),
        "bob": ("bob-key-0123456789", "sample"),
        "trainer": ("trainer-key-0123456789", "train"),
        "root": ("root-key-0123456789", "admin")}


def auth(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {KEYS[name][0]}"}


@pytest.fixture
def settings(tmp_path: Path, db_url: str) -> Settings:
    entries = [f"{n}:{scopes}:{hash_key(k)}" for n, (k, scopes) in KEYS.items()]
    return make_settings(tmp_path, db_url, API_KEYS=entries,
                         MAX_ACTIVE_SAMPLING_JOBS_PER_KEY=3, MAX_SAMPLING_JOB_ROWS=2_000_000)


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as c:
        yield c


def conditions_file(settings: Settings, rows: int = 200_000) -> tuple[Path, np.ndarray]:
    angle = np.random.default_rng(0).uniform(0, 6.3, rows)
    path = Path(settings.DATA_ROOTS[0]) / "c.parquet"
    pq.write_table(pa.table({"angle": angle, "theta": angle}), path)
    return path, angle


def run_worker(settings: Settings, job_id: str) -> None:
    """The job's plan and chunks, by the worker's code, here."""
    ctx = Context(settings=settings, records=Records(settings.DATABASE_URL),
                  store=ArtifactStore(settings.ARTIFACT_ROOT), resend=lambda _: None)
    sent: list[int] = []
    assert sampling.plan(ctx, job_id, lambda j, c: sent.append(c)) == "planned"
    for chunk in sent:
        assert sampling.run_chunk(ctx, job_id, chunk, lambda j, c: None) == "succeeded"
    ctx.records.dispose()


def test_submit_run_and_read_the_result(client: TestClient, settings: Settings,
                                        tmp_path: Path) -> None:
    model_id = register_model(settings, tmp_path, conditions=("angle",), owner="alice")
    path, angle = conditions_file(settings)
    r = client.post(f"/v1/models/{model_id}/sampling-jobs", headers=auth("alice"),
                    json={"dataset": {"uri": f"file://{path}"}, "seed": 9,
                          "chunk_rows": 131072})
    assert r.status_code == 202, r.text
    job = r.json()
    assert r.headers["Location"] == f"/v1/sampling-jobs/{job['id']}"
    assert job["status"] == "queued" and job["seed"] == 9 and job["owner"] == "alice"
    # the header told the rows: the total is known before a worker plans the job
    assert job["progress"] == {"rows_done": 0, "rows_total": 200_000, "chunks_done": 0,
                               "chunks_total": None}
    url = f"/v1/sampling-jobs/{job['id']}"
    assert_problem(client.get(f"{url}/result", headers=auth("alice")), 409)
    run_worker(settings, job["id"])
    done = client.get(url, headers=auth("alice")).json()
    assert done["status"] == "succeeded" and done["result_url"] == f"{url}/result"
    assert done["progress"] == {"rows_done": 200_000, "rows_total": 200_000,
                                "chunks_done": 2, "chunks_total": 2}
    assert (done["condition_columns"], done["feature_columns"]) == (["angle"], ["x", "y"])
    result = client.get(f"{url}/result", headers=auth("alice")).json()
    assert result["rows"] == 200_000 and result["columns"] == ["angle", "x", "y"]
    assert [(s["chunk"], s["start"], s["stop"]) for s in result["shards"]] == [
        (0, 0, 131072), (1, 131072, 200_000)]
    parts = []
    for shard in result["shards"]:
        got = client.get(shard["url"], headers=auth("alice"))
        assert got.status_code == 200 and got.headers["content-type"].startswith(
            "application/vnd.apache.parquet")
        assert got.headers["x-checksum-sha256"] == shard["sha256"]
        assert len(got.content) == shard["bytes"]
        parts.append(pq.read_table(io.BytesIO(got.content)))
    table = pa.concat_tables(parts)
    assert np.array_equal(table.column("angle").to_numpy(), angle)
    # one piece of it, through the REST samples route with the piece's seed: the same rows
    from serving.batch import piece_seed

    body = {"conditions": {"angle": angle[65536:65546].tolist()}, "seed": piece_seed(9, 1)}
    rest = client.post(f"/v1/models/{model_id}/samples", json=body, headers=auth("alice"))
    assert rest.status_code == 200, rest.text
    assert np.array_equal(np.array(rest.json()["data"], dtype=np.float32),
                          np.column_stack([table.column(c).to_numpy()[65536:65546]
                                           for c in ("x", "y")]))
    with client.stream("GET", f"{url}/events", headers=auth("alice")) as stream:
        events = [(k, d) for k, d, _ in parse_sse(stream.iter_lines())]
    assert [k for k, _ in events] == ["progress", "progress", "end"]
    assert [d["rows_done"] for k, d in events if k == "progress"] == [131072, 200_000]
    assert events[-1][1]["status"] == "succeeded"
    with client.stream("GET", f"{url}/events", headers={**auth("alice"),
                                                        "Last-Event-ID": "1"}) as stream:
        assert [k for k, _, _ in parse_sse(stream.iter_lines())] == ["progress", "end"]

    # another key: 404 on every route of the job; the admin: 200; lists: own jobs only
    for route in ("", "/result", "/events", "/shards/0"):
        assert_problem(client.get(url + route, headers=auth("bob")), 404)
        assert client.get(url + route, headers=auth("root")).status_code == 200, route
    assert_problem(client.post(f"{url}/cancel", headers=auth("bob")), 404)
    assert client.get("/v1/sampling-jobs", headers=auth("bob")).json()["total"] == 0
    assert client.get("/v1/sampling-jobs", headers=auth("root")).json()["total"] == 1
    mine = client.get("/v1/sampling-jobs?status=succeeded", headers=auth("alice")).json()
    assert [j["id"] for j in mine["items"]] == [job["id"]]
    assert_problem(client.post(f"{url}/cancel", headers=auth("alice")), 409)  # finished
    # another key may not sample alice's private model at all
    r = client.post(f"/v1/models/{model_id}/sampling-jobs", headers=auth("bob"),
                    json={"dataset": {"uri": f"file://{path}"}})
    assert_problem(r, 404)
    # the train scope alone is not enough: sampling jobs need `sample`
    assert_problem(client.get("/v1/sampling-jobs", headers=auth("trainer")), 403)


def test_what_is_refused_at_submit(client: TestClient, settings: Settings,
                                   tmp_path: Path) -> None:
    conditional = register_model(settings, tmp_path, conditions=("angle",), owner="alice")
    unconditional = register_model(settings, tmp_path, owner="alice")
    path, _ = conditions_file(settings)
    ok = {"uri": f"file://{path}"}

    def refused(model_id: str, body: dict, field: str, words: str) -> None:
        r = client.post(f"/v1/models/{model_id}/sampling-jobs", json=body,
                        headers=auth("alice"))
        problem = assert_problem(r, 422)
        assert problem["errors"][0]["field"] == field, problem
        assert words in problem["detail"], problem["detail"]

    refused(conditional, {"n": 10}, "n", "conditional")
    refused(conditional, {}, "dataset", "conditional")
    refused(unconditional, {"dataset": ok}, "dataset", "unconditional")
    refused(unconditional, {}, "n", "give the number of rows")
    refused(unconditional, {"n": 2_000_001}, "n", "MAX_SAMPLING_JOB_ROWS=2000000")
    refused(unconditional, {"n": 10, "chunk_rows": 100_000}, "chunk_rows", "multiple of 65536")
    refused(unconditional, {"n": 10, "chunk_rows": 65536 * 32}, "chunk_rows",
            "MAX_SAMPLING_CHUNK_ROWS")
    refused(conditional, {"dataset": {"uri": f"file://{path}", "conditions": ["nope"]}},
            "dataset.conditions", "no column(s) 'nope'")
    refused(conditional, {"dataset": {"uri": f"file://{path}", "conditions": ["a", "b"]}},
            "dataset.conditions", "the model takes 1")
    refused(conditional, {"dataset": {"uri": f"file://{path}", "conditions": ["x"]}},
            "dataset.conditions", "generated features")
    refused(conditional, {"dataset": {"uri": "file:///etc/passwd"}}, "dataset.uri",
            "outside the allowed data roots")
    refused(conditional, {"dataset": {"uri": "dataset://0b6f7e36-4c57-4c1e-9a53-4f0f8d8e1d11"}},
            "dataset.uri", "no uploaded data set")
    refused(conditional, {"dataset": {"uri": "https://elsewhere.org/c.parquet"}},
            "dataset.uri", "not allowed")
    big = Path(settings.DATA_ROOTS[0]) / "big.npy"
    np.save(big, np.zeros((2_000_001, 1), dtype=np.float32))
    refused(conditional, {"dataset": {"uri": f"file://{big}", "conditions": ["col0"]}},
            "dataset.max_rows", "MAX_SAMPLING_JOB_ROWS")
    r = client.post(f"/v1/models/{conditional}/sampling-jobs", headers=auth("alice"),
                    json={"dataset": {"uri": f"file://{big}", "conditions": ["col0"],
                                      "max_rows": 1000}})
    assert r.status_code == 202 and r.json()["progress"]["rows_total"] == 1000
    # a column renamed: the model's `angle` read from the file's `theta`
    r = client.post(f"/v1/models/{conditional}/sampling-jobs", headers=auth("alice"),
                    json={"dataset": {**ok, "conditions": ["theta"]}})
    assert r.status_code == 202, r.text


def test_another_keys_upload_is_refused(client: TestClient, settings: Settings,
                                        tmp_path: Path) -> None:
    model_id = register_model(settings, tmp_path, conditions=("angle",), owner="alice")
    path, _ = conditions_file(settings, 1000)
    with path.open("rb") as fh:
        r = client.post("/v1/datasets", files={"file": ("c.parquet", fh)},
                        headers=auth("root"))
    assert r.status_code == 201, r.text
    body = {"dataset": {"uri": r.json()["uri"]}}
    r = client.post(f"/v1/models/{model_id}/sampling-jobs", json=body, headers=auth("alice"))
    assert assert_problem(r, 422)["errors"][0]["field"] == "dataset.uri"
    r = client.post(f"/v1/models/{model_id}/sampling-jobs", json=body, headers=auth("root"))
    assert r.status_code == 202, r.text  # the admin's own upload, any model


def test_quota_and_cancel(client: TestClient, settings: Settings, tmp_path: Path) -> None:
    model_id = register_model(settings, tmp_path, owner="alice")
    url = f"/v1/models/{model_id}/sampling-jobs"
    ids = []
    for _ in range(3):
        r = client.post(url, json={"n": 100}, headers=auth("alice"))
        assert r.status_code == 202, r.text
        ids.append(r.json()["id"])
    problem = assert_problem(client.post(url, json={"n": 100}, headers=auth("alice")), 429)
    assert "MAX_ACTIVE_SAMPLING_JOBS_PER_KEY=3" in problem["detail"]
    r = client.post(f"/v1/sampling-jobs/{ids[0]}/cancel", headers=auth("alice"))
    assert r.status_code == 200 and r.json()["status"] == "cancelled"  # queued: at once
    assert client.post(url, json={"n": 100}, headers=auth("alice")).status_code == 202
    # a running job: cancelling until its chunks stop
    records = Records(settings.DATABASE_URL)
    assert records.claim_sampling_plan(ids[1], "p", 60, 3)
    assert records.plan_sampling_job(ids[1], "p", total_rows=100, bounds=[(0, 100)], plan={})
    assert records.claim_chunk(ids[1], 0, "w", 60, 3)
    r = client.post(f"/v1/sampling-jobs/{ids[1]}/cancel", headers=auth("alice"))
    assert r.status_code == 202 and r.json()["status"] == "cancelling"
    assert records.stop_chunk(ids[1], 0, "w")
    assert client.get(f"/v1/sampling-jobs/{ids[1]}", headers=auth("alice")).json()[
        "status"] == "cancelled"
    records.dispose()
