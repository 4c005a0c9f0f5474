"""Bad input gets a clear error and limits limit: repeated query parameters, CSV formula
names, numbers that are not finite or not integers, event ids, Accept headers, echoed
inputs, the rows in flight, the sampling deadline, streamed answers, health and readiness."""

from __future__ import annotations

import copy
import io
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine

from gan_platform.records import QuotaExceeded, Records
from gan_platform.settings import Settings
from service.main import create_app
from service.problems import Problem
from service.samples import RowsInFlight
from serving.formats import encode
from serving.sampling import SamplingTimeout, load_model, sample
from tests.conftest import FAST_SPEC, fast_spec, make_linear_onnx
from tests.service.test_api import assert_problem, make_settings, register_model


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path, f"sqlite:///{tmp_path}/h.db", MAX_SAMPLES_PER_REQUEST=200_000)


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as c:
        yield c


def test_a_repeated_query_parameter_is_refused(client: TestClient, settings: Settings,
                                               tmp_path: Path) -> None:
    model_id = register_model(settings, tmp_path, conditions=("angle",))
    url = f"/v1/models/{model_id}/samples"
    body = assert_problem(client.get(f"{url}?n=3&angle=1&angle=2"), 422)
    assert body["errors"][0]["field"] == "angle" and "2 times" in body["errors"][0]["msg"]
    body = assert_problem(client.get(f"{url}?n=3&n=4&angle=1"), 422)
    assert body["errors"][0]["field"] == "n"
    assert client.get(f"{url}?n=3&angle=1").status_code == 200


def test_csv_column_names_cannot_run_as_formulas(tmp_path: Path) -> None:
    path = make_linear_onnx(tmp_path / "f.onnx", features=("=cmd|' /C calc'!A0", "@x"))
    model = load_model(path)
    text = encode(sample(model, 2, 0), model.feature_names, "csv").decode()
    header = text.splitlines()[0]
    assert header.startswith("'=cmd") and header.endswith(",'@x"), header
    # the numbers stay numbers
    assert all(float(v) == float(v) for v in text.splitlines()[1].split(","))


@pytest.mark.parametrize("training, field", [
    ({"lr_g": 1e308}, "training.lr_g"),
    ({"steps": True}, "training.steps"),
    ({"steps": 5.5}, "training.steps"),
    ({"batch_size": "64"}, "training.batch_size"),
    ({"betas": [0.5, True]}, "training.betas.1"),
])
def test_numbers_must_be_numbers(client: TestClient, training: dict, field: str) -> None:
    body = assert_problem(client.post("/v1/jobs", json=fast_spec(**training)), 422)
    assert any(e["field"] == field for e in body["errors"]), body


@pytest.mark.parametrize("raw", ["Infinity", "-Infinity", "NaN"])
def test_json_infinity_and_nan_are_refused(client: TestClient, raw: str) -> None:
    text = json.dumps(FAST_SPEC).replace('"steps": 60', f'"steps": 60, "lr_d": {raw}')
    r = client.post("/v1/jobs", content=text, headers={"Content-Type": "application/json"})
    body = assert_problem(r, 422)
    assert any(e["field"] == "training.lr_d" for e in body["errors"]), body
    assert client.get("/v1/jobs").json()["total"] == 0


@pytest.mark.parametrize("value", ["99999999999999999999", "-1", "abc", "1e3"])
def test_last_event_id_must_be_an_event_id(client: TestClient, value: str) -> None:
    job = client.post("/v1/jobs", json=FAST_SPEC).json()
    r = client.get(f"/v1/jobs/{job['id']}/events", headers={"Last-Event-ID": value})
    body = assert_problem(r, 422)
    assert body["errors"][0]["field"] == "last-event-id"


def test_accept_with_q_zero_and_unknown_types(client: TestClient, settings: Settings,
                                             tmp_path: Path) -> None:
    model_id = register_model(settings, tmp_path)
    url = f"/v1/models/{model_id}/samples?n=2&seed=1"
    r = client.get(url, headers={"Accept": "application/x-npy;q=0, text/csv"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    r = client.get(url, headers={"Accept": "application/x-npy;q=0"})
    assert_problem(r, 406)
    assert_problem(client.get(url, headers={"Accept": "text/html, image/png"}), 406)
    r = client.get(url, headers={"Accept": "text/html, */*;q=0.1"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
    assert client.get(url).headers["content-type"].startswith("application/json")


def test_validation_errors_do_not_echo_huge_inputs(client: TestClient) -> None:
    spec = copy.deepcopy(FAST_SPEC)
    spec["objective"] = "x" * 100_000
    r = client.post("/v1/jobs", json=spec)
    assert r.status_code == 422 and len(r.content) < 10_000, len(r.content)
    spec = copy.deepcopy(FAST_SPEC)
    spec["dataset"]["uri"] = "builtin://" + "y" * 100_000
    r = client.post("/v1/jobs", json=spec)
    assert r.status_code == 422 and len(r.content) < 10_000, len(r.content)


def test_the_job_quota_holds_under_concurrent_submissions(db_url: str) -> None:
    records = Records(db_url)
    made, refused, crashed = [], [], []

    def submit() -> None:
        try:
            made.append(records.create_job(FAST_SPEC, "h", owner="alice", max_active=5)[0])
        except QuotaExceeded as exc:
            refused.append(exc.active)
        except BaseException as exc:  # a crash of a loser must fail the test, not warn
            crashed.append(exc)

    threads = [threading.Thread(target=submit) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not crashed, crashed
    assert len(made) == 5 and len(refused) == 11 and set(refused) == {5}
    # another owner has a quota of its own
    assert records.create_job(FAST_SPEC, "h", owner="bob", max_active=5)[1]
    records.dispose()


def test_rows_in_flight_refuse_at_once() -> None:
    rows = RowsInFlight(total=100, per_key=60)
    rows.acquire(50, "a")
    with pytest.raises(Problem) as per_key:
        rows.acquire(20, "a")
    assert per_key.value.status == 429 and per_key.value.headers == {"Retry-After": "1"}
    rows.acquire(40, "b")
    with pytest.raises(Problem) as total:
        rows.acquire(20, "c")
    assert total.value.status == 503
    rows.release(50, "a")
    rows.acquire(20, "c")
    rows.release(40, "b")
    rows.release(20, "c")
    assert rows.used == 0
    rows.acquire(1000, "d")  # alone, a request larger than the bound still runs
    rows.release(1000, "d")


def test_small_requests_are_never_locked_out_by_large_ones() -> None:
    rows = RowsInFlight(total=4_000_000, per_key=2_000_000)
    rows.acquire(1_000_000, "a")
    rows.acquire(1_000_000, "a")
    with pytest.raises(Problem):
        rows.acquire(100_000, "a")  # large: the key's bound holds
    for _ in range(100):
        rows.acquire(1000, "a")  # small: admitted, and counted
    assert rows.used == 2_100_000
    for _ in range(100):
        rows.release(1000, "a")
    rows.release(1_000_000, "a")
    rows.release(1_000_000, "a")
    assert rows.used == 0


def test_sampling_stops_at_its_deadline(tmp_path: Path) -> None:
    model = load_model(make_linear_onnx(tmp_path / "d.onnx"))
    with pytest.raises(SamplingTimeout):
        sample(model, 200_000, 0, deadline=0.0)  # time.monotonic() is already past it
    assert sample(model, 200_000, 0, deadline=None).shape == (200_000, 2)


def test_an_overdue_sampling_request_gets_503(tmp_path: Path) -> None:
    conf = make_settings(tmp_path, f"sqlite:///{tmp_path}/t.db", REQUEST_TIMEOUT_SECONDS=1e-9,
                         MAX_SAMPLES_PER_REQUEST=200_000)
    model_id = register_model(conf, tmp_path)
    with TestClient(create_app(conf)) as c:
        r = c.get(f"/v1/models/{model_id}/samples?n=200000&format=npy")
    # The middleware's timer or the sampler's deadline, whichever fires first: either way a
    # 503, and the sampler's thread stops at its next chunk (test_sampling_stops_at_...).
    body = assert_problem(r, 503)
    assert "REQUEST_TIMEOUT_SECONDS" in body["detail"] and r.headers["Retry-After"] == "1"


def test_large_answers_are_streamed_with_the_same_rows(client: TestClient, settings: Settings,
                                                       tmp_path: Path) -> None:
    model_id = register_model(settings, tmp_path)
    url = f"/v1/models/{model_id}/samples?n=100000&seed=3"
    as_npy = np.load(io.BytesIO(client.get(url + "&format=npy").content))
    r = client.get(url + "&format=json")
    assert r.status_code == 200 and "content-length" not in r.headers  # streamed
    assert np.array_equal(np.asarray(r.json()["data"], dtype=np.float32), as_npy)
    r = client.get(url + "&format=csv")
    assert "content-length" not in r.headers
    rows = np.loadtxt(io.StringIO(r.text), delimiter=",", skiprows=1, dtype=np.float32)
    assert np.array_equal(rows, as_npy)


def test_healthz_is_liveness_and_readyz_names_the_failing_parts(client: TestClient,
                                                                tmp_path: Path) -> None:
    services = client.app.state.services  # type: ignore[attr-defined]
    services.records.engine = create_engine("postgresql+psycopg://nobody@127.0.0.1:1/none")
    (tmp_path / "artifacts").mkdir(exist_ok=True)
    (tmp_path / "artifacts" / "_readyz").write_text("a file where the probe's folder goes")
    r = client.get("/healthz")
    assert r.status_code == 200 and r.json() == {"status": "ok"}
    r = client.get("/readyz")
    assert r.status_code == 503
    checks = r.json()["checks"]
    assert checks["database"] == "unreachable: OperationalError", checks
    assert checks["artifacts"].startswith("unreachable"), checks
    assert "nobody" not in r.text and "127.0.0.1:1" not in r.text  # no raw driver message
