"""The API in-process (TestClient), on SQLite and PostgreSQL: jobs, errors, models, samples,
uploads. No worker here: jobs stay queued; models are registered as a worker would."""

from __future__ import annotations

import copy
import hashlib
import io
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from fastapi.testclient import TestClient

from cli.main import parse_sse
from gan_platform.artifacts import ArtifactStore, model_key, sha256_file
from gan_platform.records import Records
from gan_platform.settings import Settings
from models.spec import OBJECTIVE_NAMES
from service.main import create_app
from tests.conftest import (
    FAST_SPEC,
    ROOT,
    RedisSpace,
    expected_provider,
    fast_spec,
    make_linear_onnx,
)

PROBLEM = "application/problem+json"


def make_settings(tmp_path: Path, db_url: str, **extra: object) -> Settings:
    (tmp_path / "data").mkdir(exist_ok=True)
    values: dict[str, object] = {
        "DATABASE_URL": db_url,
        "REDIS_URL": None,
        "ARTIFACT_ROOT": str(tmp_path / "artifacts"),
        "WORK_ROOT": tmp_path / "work",
        "DATA_ROOTS": [tmp_path / "data"],
        "ALLOWED_HOSTS": ["data.example.org"],
        "MAX_SAMPLES_PER_REQUEST": 5000,
    }
    values.update(extra)
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture
def settings(tmp_path: Path, db_url: str) -> Settings:
    return make_settings(tmp_path, db_url)


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as c:
        yield c


def register_model(settings: Settings, tmp_path: Path, conditions: tuple[str, ...] = (),
                   owner: str | None = None) -> str:
    """Store an ONNX file and register it the way the worker does, as a model of a job that
    `owner` (an API key's name; None: auth off) submitted."""
    onnx_path = make_linear_onnx(
        tmp_path / f"gen-{uuid.uuid4().hex[:6]}.onnx", latent_dim=3, features=("x", "y"),
        conditions=conditions,
        weight=np.array([[1, 0], [0, 2], [0.5, 0.5]], dtype=np.float32),
        bias=np.array([10, -10], dtype=np.float32),
    )
    records = Records(settings.DATABASE_URL)
    store = ArtifactStore(settings.ARTIFACT_ROOT)
    job, _ = records.create_job(FAST_SPEC, "h" * 64, owner=owner)
    token = "test-worker"
    assert records.claim(job["id"], token, 60, 3) is not None
    model_id = str(uuid.uuid4())
    uri = store.put_file(onnx_path, model_key(model_id))
    meta = {"feature_names": ["x", "y"], "condition_names": list(conditions),
            "objective": "wgan-gp", "architecture": "mlp", "latent_dim": 3,
            "metrics": {"modes_captured": 8.0}}
    assert records.finish_succeeded(job["id"], token, model_id=model_id, model_metadata=meta,
                                    onnx_uri=uri, onnx_sha256=sha256_file(onnx_path))
    records.dispose()
    return model_id


def assert_problem(r, status: int) -> dict:  # type: ignore[no-untyped-def]
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith(PROBLEM), r.headers
    body = r.json()
    assert body["status"] == status and body["title"] and body["type"]
    return dict(body)


# --- jobs -------------------------------------------------------------------------------------


def test_submit_get_list(client: TestClient) -> None:
    r = client.post("/v1/jobs", json=FAST_SPEC)
    assert r.status_code == 202, r.text
    job = r.json()
    assert r.headers["location"] == f"/v1/jobs/{job['id']}"
    assert job["status"] == "queued"
    assert job["progress"] == {"step": 0, "total_steps": 60, "losses": {}, "metrics": {}}
    # the stored spec is the resolved one: the paper's defaults filled in
    assert job["spec"]["training"]["n_critic"] == 5 and job["spec"]["training"]["lr_g"] == 1e-3
    got = client.get(f"/v1/jobs/{job['id']}").json()
    assert got["id"] == job["id"] and got["spec"] == job["spec"]
    for key in ("error", "model_id", "created_at", "started_at", "finished_at"):
        assert key in got
    client.post("/v1/jobs", json=FAST_SPEC)
    listing = client.get("/v1/jobs", params={"status": "queued", "limit": 1}).json()
    assert listing["total"] == 2 and len(listing["items"]) == 1
    assert client.get("/v1/jobs", params={"status": "running"}).json()["total"] == 0
    page2 = client.get("/v1/jobs", params={"limit": 1, "offset": 1}).json()
    assert page2["items"][0]["id"] != listing["items"][0]["id"]
    assert_problem(client.get("/v1/jobs", params={"status": "bogus"}), 422)


def test_idempotency_key(client: TestClient) -> None:
    first = client.post("/v1/jobs", json=FAST_SPEC, headers={"Idempotency-Key": "k-1"})
    again = client.post("/v1/jobs", json=FAST_SPEC, headers={"Idempotency-Key": "k-1"})
    assert first.status_code == again.status_code == 202
    assert first.json()["id"] == again.json()["id"]
    assert again.headers["idempotent-replayed"] == "true"
    assert client.get("/v1/jobs").json()["total"] == 1
    other = client.post("/v1/jobs", json=FAST_SPEC, headers={"Idempotency-Key": "k-2"})
    assert other.json()["id"] != first.json()["id"]
    body = assert_problem(client.post("/v1/jobs", json=fast_spec(steps=61),
                                      headers={"Idempotency-Key": "k-1"}), 422)
    assert first.json()["id"] in body["detail"]


def test_cancel_queued_job(client: TestClient) -> None:
    job = client.post("/v1/jobs", json=FAST_SPEC).json()
    r = client.post(f"/v1/jobs/{job['id']}/cancel")
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    assert r.json()["finished_at"] is not None
    assert_problem(client.post(f"/v1/jobs/{job['id']}/cancel"), 409)


def test_events_of_a_finished_job(client: TestClient, settings: Settings) -> None:
    job = client.post("/v1/jobs", json=FAST_SPEC).json()
    records = Records(settings.DATABASE_URL)
    assert records.claim(job["id"], "w", 60, 3)
    for step in (10, 20):
        assert records.record_progress(job["id"], "w", attempt=1, step=step, total_steps=60,
                                       losses={"critic": -1.0}, metrics={}, lease_seconds=60)
    records.finish(job["id"], "w", "failed", "data error: boom")
    records.dispose()
    with client.stream("GET", f"/v1/jobs/{job['id']}/events") as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        events = list(parse_sse(r.iter_lines()))
    assert [kind for kind, _, _ in events] == ["progress", "progress", "end"]
    assert [data["step"] for kind, data, _ in events if kind == "progress"] == [10, 20]
    end = events[-1][1]
    assert end["status"] == "failed" and end["error"] == "data error: boom"
    # resuming after the first event id skips it
    first_id = events[0][2]
    assert first_id is not None
    with client.stream("GET", f"/v1/jobs/{job['id']}/events",
                       headers={"Last-Event-ID": first_id}) as r:
        again = list(parse_sse(r.iter_lines()))
    assert [kind for kind, _, _ in again] == ["progress", "end"] and again[0][1]["step"] == 20


# --- bad input (issue item 7) ----------------------------------------------------------------


def test_invalid_spec_names_the_field(client: TestClient) -> None:
    body = assert_problem(client.post("/v1/jobs", json=fast_spec(steps=-1)), 422)
    assert body["errors"][0]["field"] == "training.steps"
    assert body["errors"][0]["loc"] == ["body", "training", "steps"]
    assert "training.steps" in body["detail"]
    body = assert_problem(client.post("/v1/jobs", json=fast_spec(colour="blue")), 422)
    assert body["errors"][0]["field"] == "training.colour"
    assert_problem(client.post("/v1/jobs", content=b"{not json",
                               headers={"content-type": "application/json"}), 422)


def test_unknown_objective_lists_the_names(client: TestClient) -> None:
    spec = {**FAST_SPEC, "objective": "wgan-xx"}
    body = assert_problem(client.post("/v1/jobs", json=spec), 422)
    assert body["errors"][0]["field"].startswith("objective")
    for name in OBJECTIVE_NAMES:
        assert name in body["detail"]


def test_unknown_architecture_lists_the_names(client: TestClient) -> None:
    spec = {**FAST_SPEC, "architecture": "transformer"}
    body = assert_problem(client.post("/v1/jobs", json=spec), 422)
    assert body["errors"][0]["field"] == "architecture.name"
    for name in ("mlp", "resmlp", "dcgan"):
        assert name in body["detail"]


@pytest.mark.parametrize(
    ("uri", "words"),
    [
        ("file:///etc/passwd", "outside the allowed data roots"),
        ("file://DATA/../outside.csv", "outside the allowed data roots"),
        ("file://DATA/link.csv", "outside the allowed data roots"),  # symlink out of the root
        ("file://DATA/missing.csv", "no such file"),
        ("ftp://example.org/x.csv", "unsupported URI scheme"),
        ("dataset://no-such-upload", "no uploaded data set"),
        ("https://evil.example.com/x.csv", "not allowed"),
        ("s3://some-bucket/x.csv", "not allowed"),
        ("builtin://9gaussians", "unknown builtin"),
    ],
)
def test_dataset_uri_refused(client: TestClient, settings: Settings, tmp_path: Path, uri: str,
                             words: str) -> None:
    data = settings.DATA_ROOTS[0]
    (tmp_path / "outside.csv").write_text("a,b\n1,2\n")
    link = data / "link.csv"
    if not link.exists():
        link.symlink_to(tmp_path / "outside.csv")
    spec = copy.deepcopy(FAST_SPEC)
    spec["dataset"]["uri"] = uri.replace("DATA", str(data))
    body = assert_problem(client.post("/v1/jobs", json=spec), 422)
    assert words in body["detail"], body
    assert body["errors"][0]["field"] == "dataset.uri"
    assert client.get("/v1/jobs").json()["total"] == 0


def test_dataset_uri_accepted(client: TestClient, settings: Settings) -> None:
    (settings.DATA_ROOTS[0] / "ok.csv").write_text("a,b\n1,2\n")
    for uri in (f"file://{settings.DATA_ROOTS[0]}/ok.csv", "https://data.example.org/x.csv",
                "builtin://25gaussians"):
        spec = copy.deepcopy(FAST_SPEC)
        spec["dataset"]["uri"] = uri
        assert client.post("/v1/jobs", json=spec).status_code == 202, uri


def test_unknown_ids_are_404(client: TestClient) -> None:
    for path in ("/v1/jobs/nope", "/v1/jobs/nope/events", "/v1/models/nope",
                 "/v1/models/nope/onnx", "/v1/models/nope/samples", "/v1/datasets/nope"):
        assert_problem(client.get(path), 404)
    assert_problem(client.post("/v1/jobs/nope/cancel"), 404)
    assert_problem(client.post("/v1/models/nope/samples", json={"n": 3}), 404)
    assert_problem(client.get("/v1/no-such-route"), 404)
    assert_problem(client.delete("/v1/jobs"), 405)


# --- models and samples ------------------------------------------------------------------------


def test_model_and_onnx(client: TestClient, settings: Settings, tmp_path: Path) -> None:
    model_id = register_model(settings, tmp_path)
    listing = client.get("/v1/models").json()
    assert listing["total"] == 1 and listing["items"][0]["id"] == model_id
    model = client.get(f"/v1/models/{model_id}").json()
    assert model["features"] == ["x", "y"] and model["conditions"] == []
    assert model["objective"] == "wgan-gp" and model["metrics"] == {"modes_captured": 8.0}
    assert model["provider"] == expected_provider()  # CUDA where onnxruntime offers it
    r = client.get(model["onnx_url"])
    assert r.status_code == 200
    assert hashlib.sha256(r.content).hexdigest() == model["onnx_sha256"]


def test_samples_in_every_format(client: TestClient, settings: Settings,
                                 tmp_path: Path) -> None:
    model_id = register_model(settings, tmp_path)
    url = f"/v1/models/{model_id}/samples"
    as_json = client.get(url, params={"n": 500, "seed": 7, "format": "json"})
    assert as_json.headers["content-type"].startswith("application/json")
    body = as_json.json()
    assert body["columns"] == ["x", "y"]
    ref = np.asarray(body["data"], dtype=np.float32)
    assert ref.shape == (500, 2)
    # z ~ N(0, 1): x = z0 + 0.5 z2 + 10, y = 2 z1 + 0.5 z2 - 10
    assert abs(ref[:, 0].mean() - 10) < 0.3 and abs(ref[:, 1].mean() + 10) < 0.4
    npy = client.get(url, params={"n": 500, "seed": 7, "format": "npy"})
    assert np.array_equal(np.load(io.BytesIO(npy.content)), ref)
    arrow = client.get(url, params={"n": 500, "seed": 7},
                       headers={"Accept": "application/vnd.apache.arrow.stream"})
    assert arrow.headers["content-type"] == "application/vnd.apache.arrow.stream"
    table = pa.ipc.open_stream(arrow.content).read_all()
    assert table.column_names == ["x", "y"]
    assert np.array_equal(np.column_stack([table["x"].to_numpy(), table["y"].to_numpy()]), ref)
    csv = client.get(url, params={"n": 500, "seed": 7}, headers={"Accept": "text/csv"})
    assert csv.headers["content-type"].startswith("text/csv")
    lines = csv.text.strip().split("\n")
    assert lines[0] == "x,y" and len(lines) == 501
    parsed = np.array([[float(v) for v in line.split(",")] for line in lines[1:]], np.float32)
    assert np.array_equal(parsed, ref)
    # same model + seed = same bytes; another seed, other samples; no seed: a random one, told
    again = client.get(url, params={"n": 500, "seed": 7, "format": "npy"})
    assert again.content == npy.content and again.headers["x-seed"] == "7"
    other = client.get(url, params={"n": 500, "seed": 8, "format": "npy"})
    assert other.content != npy.content
    rand = client.get(url, params={"n": 5, "format": "npy"})
    seeded = client.get(url, params={"n": 5, "seed": rand.headers["x-seed"], "format": "npy"})
    assert rand.content == seeded.content
    # unconditional POST takes n
    posted = client.post(url, params={"format": "npy"}, json={"n": 500, "seed": 7})
    assert posted.content == npy.content


def test_sample_request_errors(client: TestClient, settings: Settings, tmp_path: Path) -> None:
    model_id = register_model(settings, tmp_path)
    url = f"/v1/models/{model_id}/samples"
    body = assert_problem(client.get(url, params={"n": 5001}), 422)
    assert body["errors"][0]["field"] == "n" and "5000" in body["detail"]
    assert_problem(client.get(url, params={"n": 0}), 422)
    assert_problem(client.get(url, params={"format": "xml"}), 422)
    body = assert_problem(client.get(url, params={"n": 3, "p": 1.0}), 422)
    assert body["errors"][0]["field"] == "p"
    assert_problem(client.post(url, json={"conditions": {"p": [1.0]}}), 422)
    assert_problem(client.post(url, json={"n": 5001}), 422)
    assert_problem(client.post(url, json={}), 422)
    assert_problem(client.post(url, json={"n": 3, "colour": 1}), 422)


def test_conditional_samples(client: TestClient, settings: Settings, tmp_path: Path) -> None:
    model_id = register_model(settings, tmp_path, conditions=("p", "eta"))
    url = f"/v1/models/{model_id}/samples"
    assert client.get(f"/v1/models/{model_id}").json()["conditions"] == ["p", "eta"]
    r = client.get(url, params={"n": 4, "seed": 1, "p": 100, "eta": 1, "format": "npy"})
    out = np.load(io.BytesIO(r.content))
    # conditions @ ones(2, 2) adds p + eta = 101 to both columns
    assert out.shape == (4, 2) and abs(out[:, 0].mean() - 111) < 3
    body = assert_problem(client.get(url, params={"n": 4, "p": 1}), 422)
    assert [e["field"] for e in body["errors"]] == ["eta"]
    body = assert_problem(client.get(url, params={"n": 4, "p": 1, "eta": 2, "phi": 3}), 422)
    assert [e["field"] for e in body["errors"]] == ["phi"]
    assert_problem(client.get(url, params={"n": 4, "p": "high", "eta": 2}), 422)
    rows = {"p": [0.0, 100.0, 1000.0], "eta": [0.0, 0.0, 0.0]}
    r = client.post(url, params={"format": "npy"}, json={"conditions": rows, "seed": 3})
    out = np.load(io.BytesIO(r.content))
    assert out.shape == (3, 2) and out[2, 0] > out[1, 0] > out[0, 0]
    again = client.post(url, params={"format": "npy"}, json={"conditions": rows, "seed": 3})
    assert again.content == r.content
    assert_problem(client.post(url, json={"conditions": {"p": [1.0]}}), 422)  # eta missing
    assert_problem(client.post(url, json={"conditions": {"p": [1.0], "eta": [1, 2]}}), 422)
    assert_problem(client.post(url, json={"conditions": {"p": [1.0], "eta": [1.0],
                                                           "phi": [0.0]}}), 422)
    big = {"p": [0.0] * 5001, "eta": [0.0] * 5001}
    assert_problem(client.post(url, json={"conditions": big}), 422)


# --- uploads ------------------------------------------------------------------------------------


def test_upload_then_train_on_it(client: TestClient) -> None:
    csv = b"x,y\n" + b"".join(f"{i},{i * 2}\n".encode() for i in range(100))
    r = client.post("/v1/datasets", files={"file": ("my data.csv", csv, "text/csv")})
    assert r.status_code == 201, r.text
    up = r.json()
    assert up["uri"] == f"dataset://{up['id']}" and up["size"] == len(csv)
    assert up["sha256"] == hashlib.sha256(csv).hexdigest() and up["filename"] == "my_data.csv"
    assert client.get(f"/v1/datasets/{up['id']}").json() == up
    spec = copy.deepcopy(FAST_SPEC)
    spec["dataset"]["uri"] = up["uri"]
    assert client.post("/v1/jobs", json=spec).status_code == 202
    assert_problem(client.post("/v1/datasets", files={"file": ("empty.csv", b"", "text/csv")}),
                   422)
    assert_problem(client.post("/v1/datasets",
                               files={"file": ("a.exe", b"MZ\x90\x00binary", "x/y")}), 422)


def test_upload_too_large(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, f"sqlite:///{tmp_path / 'db.sqlite'}",
                             MAX_UPLOAD_BYTES=1000)
    with TestClient(create_app(settings)) as client:
        big = b"x,y\n" + b"1,2\n" * 1000
        assert_problem(client.post("/v1/datasets", files={"file": ("a.csv", big)}), 413)


def test_openapi_and_health(client: TestClient) -> None:
    assert client.get("/healthz").json()["status"] == "ok"
    paths = client.get("/openapi.json").json()["paths"]
    for path in ("/v1/jobs", "/v1/jobs/{job_id}", "/v1/jobs/{job_id}/cancel",
                 "/v1/jobs/{job_id}/events", "/v1/datasets", "/v1/models",
                 "/v1/models/{model_id}", "/v1/models/{model_id}/onnx",
                 "/v1/models/{model_id}/samples"):
        assert path in paths
    assert client.get("/docs").status_code == 200


# --- the queue, the process boundary -------------------------------------------------------------


def test_submit_sends_a_train_message(tmp_path: Path, redis_space: RedisSpace) -> None:
    settings = make_settings(tmp_path, f"sqlite:///{tmp_path / 'db.sqlite'}",
                             REDIS_URL=redis_space.url, REDIS_KEY_PREFIX=redis_space.prefix,
                             TASK_QUEUE=redis_space.queue)
    with TestClient(create_app(settings)) as client:
        job = client.post("/v1/jobs", json=FAST_SPEC).json()
    raw = redis_space.client().lrange(f"{redis_space.prefix}{redis_space.queue}", 0, -1)
    assert len(raw) == 1
    message = json.loads(raw[0])
    assert message["headers"]["task"] == "train"
    assert json.loads(message["headers"]["argsrepr"].replace("'", '"')) == [job["id"]]


def test_broker_down_keeps_the_job(tmp_path: Path) -> None:
    """Nothing listens on the broker port: the job is still accepted, queued in the DB."""
    settings = make_settings(tmp_path, f"sqlite:///{tmp_path / 'db.sqlite'}",
                             REDIS_URL="redis://127.0.0.1:1/0")
    with TestClient(create_app(settings)) as client:
        r = client.post("/v1/jobs", json=FAST_SPEC)
        assert r.status_code == 202
        assert client.get(r.headers["location"]).json()["status"] == "queued"


def test_api_never_imports_torch(tmp_path: Path) -> None:
    code = """
import sys
from fastapi.testclient import TestClient
from service.main import create_app
from gan_platform.settings import Settings
s = Settings(DATABASE_URL="sqlite:///{db}", ARTIFACT_ROOT="{art}", DATA_ROOTS=["{data}"])
with TestClient(create_app(s)) as c:
    assert c.post("/v1/datasets", files={{"file": ("a.csv", b"x,y\\n1,2\\n3,4\\n")}}).status_code == 201
    assert c.post("/v1/jobs", json={spec}).status_code == 202
bad = [m for m in sys.modules if m == "torch" or m.startswith(("torch.", "worker"))]
assert not bad, bad
print("ok")
""".format(db=tmp_path / "db.sqlite", art=tmp_path / "art", data=tmp_path, spec=repr(FAST_SPEC))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr


def test_objectives_lists_every_recipe_and_a_job_gets_the_default_one(client: TestClient) -> None:
    r = client.get("/v1/objectives")
    assert r.status_code == 200, r.text
    objectives = r.json()["objectives"]
    assert set(objectives) == set(OBJECTIVE_NAMES)
    for name, entry in objectives.items():
        assert set(entry["recipes"]) == {"default", "paper"}, name
        assert entry["recipes"]["default"]["training"]["lr_schedule"] == "linear"
    gp = objectives["wgan-gp"]
    assert gp["recipes"]["default"]["objective"] == {"gp_lambda": 1.0}
    assert gp["recipes"]["paper"]["objective"] == {"gp_lambda": 10.0}
    assert gp["recipes"]["paper"]["training"]["n_critic"] == 5
    assert "gp_lambda" in gp["parameters"] and "one_sided" in gp["parameters"]
    assert objectives["hinge"]["recipes"]["default"]["critic"] == {"spectral_norm": True,
                                                                  "activation": "leaky_relu"}

    minimal = {"objective": "wgan-gp", "dataset": {"uri": "builtin://8gaussians"},
               "training": {"steps": 10, "seed": 1}}
    job = client.post("/v1/jobs", json=minimal).json()
    training = job["spec"]["training"]
    default = gp["recipes"]["default"]["training"]
    assert {k: training[k] for k in default} == default
    assert job["spec"]["objective"]["gp_lambda"] == 1.0
