"""The Open Inference Protocol over REST (/v2): in-process for the protocol's details and
errors, and with NVIDIA's tritonclient.http against a real uvicorn. Liveness, readiness,
metadata, infer with JSON and binary tensors for a conditional and an unconditional model;
the rows equal those of POST /v1/models/{id}/samples for the same seed; wrong shapes and
datatypes, unknown models and missing keys get 4xx `{"error": ...}`, never a crash."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from gan_platform.settings import Settings
from service.auth import hash_key
from service.main import create_app
from tests.conftest import LiveStack
from tests.service.test_api import make_settings, register_model

KEY, OTHER, TRAINER = "oip-key-0123456789", "oip-other-0123456789", "oip-trainer-0123456789"
AUTH = {"Authorization": f"Bearer {KEY}"}
HEADER = "Inference-Header-Content-Length"


def keyed_settings(tmp_path: Path, **extra: object) -> Settings:
    keys = [f"alice:sample+train:{hash_key(KEY)}", f"bob:sample:{hash_key(OTHER)}",
            f"carol:train:{hash_key(TRAINER)}"]
    return make_settings(tmp_path, f"sqlite:///{tmp_path / 'gan.db'}", API_KEYS=keys, **extra)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return keyed_settings(tmp_path, MAX_SAMPLES_PER_REQUEST=5000, MAX_BODY_BYTES=16384,
                          MAX_SAMPLING_BODY_BYTES=400_000)


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as c:
        yield c


def reference(client: TestClient, model_id: str, seed: int, conditions: np.ndarray | None = None,
              n: int | None = None) -> np.ndarray:
    """The rows of the REST samples route (npy answer) for the same seed."""
    body: dict[str, object] = {"seed": seed}
    if conditions is not None:
        body["conditions"] = {"p": conditions[:, 0].tolist(), "eta": conditions[:, 1].tolist()}
    else:
        body["n"] = n
    r = client.post(f"/v1/models/{model_id}/samples", json=body,
                    headers={**AUTH, "accept": "application/x-npy"})
    assert r.status_code == 200, r.text
    return np.load(io.BytesIO(r.content))


def tensor(name: str, datatype: str, data: np.ndarray) -> dict[str, object]:
    return {"name": name, "datatype": datatype, "shape": list(data.shape),
            "data": data.reshape(-1).tolist()}


def binary_request(inputs: list[tuple[str, str, np.ndarray]], **doc: object
                   ) -> tuple[bytes, dict[str, str]]:
    """The binary data extension: the JSON, then each input's raw bytes."""
    head = {**doc, "inputs": [{"name": n, "datatype": t, "shape": list(a.shape),
                               "parameters": {"binary_data_size": a.nbytes}}
                              for n, t, a in inputs]}
    text = json.dumps(head).encode()
    body = text + b"".join(a.tobytes() for _, _, a in inputs)
    return body, {HEADER: str(len(text)), "content-type": "application/octet-stream", **AUTH}


def error(r: httpx.Response, status: int) -> str:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json"), r.headers
    body = r.json()
    assert set(body) == {"error"} and body["error"], body
    return str(body["error"])


def test_health_and_metadata(client: TestClient, settings: Settings, tmp_path: Path) -> None:
    assert client.get("/v2/health/live").json() == {"live": True}
    assert client.get("/v2/health/ready").json() == {"ready": True}
    meta = client.get("/v2", headers=AUTH).json()
    assert meta["name"] == "gan-service" and "binary_tensor_data" in meta["extensions"]
    model_id = register_model(settings, tmp_path, conditions=("p", "eta"), owner="alice")
    free = register_model(settings, tmp_path, owner="alice")
    got = client.get(f"/v2/models/{model_id}", headers=AUTH).json()
    assert got["name"] == model_id and got["platform"] == "onnx_onnxv1"
    assert got["versions"] == ["1"]
    assert got["inputs"] == [{"name": "conditions", "datatype": "FP32", "shape": [-1, 2]},
                             {"name": "seed", "datatype": "INT64", "shape": [1]}]
    assert got["outputs"] == [{"name": "samples", "datatype": "FP32", "shape": [-1, 2]}]
    assert got["parameters"]["condition_names"] == ["p", "eta"]
    assert client.get(f"/v2/models/{model_id}/versions/1", headers=AUTH).json() == got
    unconditional = client.get(f"/v2/models/{free}", headers=AUTH).json()
    assert [i["name"] for i in unconditional["inputs"]] == ["seed"]
    for path in (f"/v2/models/{model_id}/ready", f"/v2/models/{model_id}/versions/1/ready"):
        assert client.get(path, headers=AUTH).json() == {"name": model_id, "ready": True}
    error(client.get(f"/v2/models/{model_id}/versions/2", headers=AUTH), 404)
    error(client.get(f"/v2/models/{model_id}/versions/2/ready", headers=AUTH), 404)


def test_infer_json_and_binary_equal_the_samples_route(client: TestClient, settings: Settings,
                                                       tmp_path: Path) -> None:
    model_id = register_model(settings, tmp_path, conditions=("p", "eta"), owner="alice")
    conditions = np.random.default_rng(1).normal(size=(50, 2)).astype(np.float32)
    expected = reference(client, model_id, 7, conditions)
    # JSON tensors, the seed as a parameter
    r = client.post(f"/v2/models/{model_id}/infer", headers=AUTH, json={
        "id": "r1", "parameters": {"seed": 7},
        "inputs": [tensor("conditions", "FP32", conditions)]})
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["id"] == "r1" and doc["model_name"] == model_id and doc["model_version"] == "1"
    assert doc["parameters"] == {"seed": 7}
    (out,) = doc["outputs"]
    assert out["name"] == "samples" and out["datatype"] == "FP32" and out["shape"] == [50, 2]
    assert np.array_equal(np.array(out["data"], np.float32).reshape(50, 2), expected)
    # binary tensors both ways, the seed as an INT64 input
    body, headers = binary_request([("conditions", "FP32", conditions),
                                    ("seed", "INT64", np.array([7], np.int64))],
                                   parameters={"binary_data_output": True})
    r = client.post(f"/v2/models/{model_id}/versions/1/infer", content=body, headers=headers)
    assert r.status_code == 200, r.text
    cut = int(r.headers[HEADER])
    doc = json.loads(r.content[:cut])
    assert doc["outputs"][0]["parameters"] == {"binary_data_size": 400}
    assert np.array_equal(np.frombuffer(r.content[cut:], "<f4").reshape(50, 2), expected)
    # one output asked as binary by its own parameter
    r = client.post(f"/v2/models/{model_id}/infer", headers=AUTH, json={
        "parameters": {"seed": 7}, "inputs": [tensor("conditions", "FP32", conditions)],
        "outputs": [{"name": "samples", "parameters": {"binary_data": True}}]})
    cut = int(r.headers[HEADER])
    assert np.array_equal(np.frombuffer(r.content[cut:], "<f4").reshape(50, 2), expected)
    # no seed: a random one, returned, reproduces the rows
    r = client.post(f"/v2/models/{model_id}/infer", headers=AUTH,
                    json={"inputs": [tensor("conditions", "FP32", conditions)]}).json()
    again = reference(client, model_id, r["parameters"]["seed"], conditions)
    assert np.array_equal(np.array(r["outputs"][0]["data"], np.float32).reshape(50, 2), again)


def test_unconditional_takes_n(client: TestClient, settings: Settings, tmp_path: Path) -> None:
    free = register_model(settings, tmp_path, owner="alice")
    expected = reference(client, free, 3, n=20)
    r = client.post(f"/v2/models/{free}/infer", headers=AUTH,
                    json={"inputs": [], "parameters": {"n": 20, "seed": 3}})
    assert r.status_code == 200, r.text
    data = np.array(r.json()["outputs"][0]["data"], np.float32).reshape(20, 2)
    assert np.array_equal(data, expected)
    assert "parameter n" in error(client.post(f"/v2/models/{free}/infer", headers=AUTH,
                                              json={"inputs": []}), 400)


def test_protocol_errors(client: TestClient, settings: Settings, tmp_path: Path) -> None:
    model_id = register_model(settings, tmp_path, conditions=("p", "eta"), owner="alice")
    url = f"/v2/models/{model_id}/infer"
    good = np.ones((4, 2), np.float32)

    def infer(doc: dict) -> httpx.Response:
        return client.post(url, headers=AUTH, json=doc)

    cases = {
        "wrong shape": {"inputs": [tensor("conditions", "FP32", np.ones((4, 3), np.float32))]},
        "1-D": {"inputs": [tensor("conditions", "FP32", np.ones(4, np.float32))]},
        "wrong datatype": {"inputs": [tensor("conditions", "FP64", good.astype(np.float64))]},
        "BYTES": {"inputs": [{"name": "conditions", "datatype": "BYTES", "shape": [1],
                              "data": ["a"]}]},
        "data and shape disagree": {"inputs": [{"name": "conditions", "datatype": "FP32",
                                                "shape": [4, 2], "data": [1.0, 2.0]}]},
        "text data": {"inputs": [{"name": "conditions", "datatype": "FP32", "shape": [1, 2],
                                  "data": ["1", "2"]}]},
        "ragged data": {"inputs": [{"name": "conditions", "datatype": "FP32", "shape": [2, 2],
                                    "data": [[1.0], [1.0, 2.0]]}]},
        "negative shape": {"inputs": [{"name": "conditions", "datatype": "FP32",
                                       "shape": [-1, 2], "data": []}]},
        "no data": {"inputs": [{"name": "conditions", "datatype": "FP32", "shape": [1, 2]}]},
        "missing conditions": {"inputs": []},
        "unknown input": {"inputs": [tensor("conditions", "FP32", good),
                                     tensor("z", "FP32", good)]},
        "input twice": {"inputs": [tensor("conditions", "FP32", good)] * 2},
        "unknown output": {"inputs": [tensor("conditions", "FP32", good)],
                           "outputs": [{"name": "logits"}]},
        "n disagrees": {"inputs": [tensor("conditions", "FP32", good)], "parameters": {"n": 3}},
        "seed twice": {"inputs": [tensor("conditions", "FP32", good),
                                  tensor("seed", "INT64", np.array([1]))],
                       "parameters": {"seed": 1}},
        "seed of 2 elements": {"inputs": [tensor("conditions", "FP32", good),
                                          tensor("seed", "INT64", np.array([1, 2]))]},
        "seed FP32": {"inputs": [tensor("conditions", "FP32", good),
                                 tensor("seed", "FP32", np.array([1.0]))]},
        "negative seed": {"inputs": [tensor("conditions", "FP32", good)],
                          "parameters": {"seed": -1}},
        "seed a string": {"inputs": [tensor("conditions", "FP32", good)],
                          "parameters": {"seed": "7"}},
        "inputs not a list": {"inputs": {"conditions": 1}},
        "parameters nested": {"inputs": [], "parameters": {"seed": {"a": 1}}},
    }
    for name, doc in cases.items():
        assert error(infer(doc), 400), name
    # non-finite conditions and too many rows: the sampling routes' 422
    nan = np.array([[1.0, np.inf]], np.float32)
    body, headers = binary_request([("conditions", "FP32", nan)])
    assert "eta" in error(client.post(url, content=body, headers=headers), 422)
    big = np.ones((5001, 2), np.float32)
    body, headers = binary_request([("conditions", "FP32", big)])
    assert "MAX_SAMPLES_PER_REQUEST" in error(client.post(url, content=body, headers=headers),
                                              422)
    # malformed bodies and binary framing
    assert "JSON" in error(client.post(url, content=b"{nope", headers=AUTH), 400)
    body, headers = binary_request([("conditions", "FP32", good)])
    for cut in ("0", "abc", str(len(body) + 1)):
        error(client.post(url, content=body, headers={**headers, HEADER: cut}), 400)
    error(client.post(url, content=body + b"xx", headers=headers), 400)  # unclaimed bytes
    error(client.post(url, content=body[:-4], headers=headers), 400)  # short data
    error(client.post(url, content=body, headers={**headers, "content-encoding": "gzip"}), 400)
    # the JSON part is capped by MAX_BODY_BYTES, the whole by MAX_SAMPLING_BODY_BYTES
    many = {"inputs": [tensor("conditions", "FP32", np.ones((3000, 2), np.float32))]}
    assert "MAX_BODY_BYTES" in error(infer(many), 413)
    body, headers = binary_request([("conditions", "FP32", np.ones((60_000, 2), np.float32))])
    assert "MAX_SAMPLING_BODY_BYTES" in error(client.post(url, content=body, headers=headers),
                                              413)
    # unknown models, versions and routes
    for path in ("/v2/models/nope", "/v2/models/nope/ready", "/v2/nothing", "/v2/models"):
        error(client.get(path, headers=AUTH), 404)
    error(client.post("/v2/models/nope/infer", headers=AUTH, json=cases["missing conditions"]),
          404)
    error(client.post(f"/v2/models/{model_id}/versions/9/infer", headers=AUTH,
                      json={"inputs": [tensor("conditions", "FP32", good)]}), 404)
    error(client.delete("/v2", headers=AUTH), 404)


def test_keys_scopes_and_owners(client: TestClient, settings: Settings, tmp_path: Path) -> None:
    model_id = register_model(settings, tmp_path, conditions=("p", "eta"), owner="alice")
    doc = {"inputs": [tensor("conditions", "FP32", np.ones((2, 2), np.float32))]}
    for path in ("/v2", f"/v2/models/{model_id}", f"/v2/models/{model_id}/ready"):
        error(client.get(path), 401)
        error(client.get(path, headers={"Authorization": "Bearer wrong"}), 401)
        error(client.get(path, headers={"Authorization": f"Bearer {TRAINER}"}), 403)
    error(client.post(f"/v2/models/{model_id}/infer", json=doc), 401)
    error(client.post(f"/v2/models/{model_id}/infer", json=doc,
                      headers={"Authorization": f"Bearer {TRAINER}"}), 403)
    # another key's model does not exist for bob
    bob = {"Authorization": f"Bearer {OTHER}"}
    error(client.get(f"/v2/models/{model_id}", headers=bob), 404)
    error(client.post(f"/v2/models/{model_id}/infer", json=doc, headers=bob), 404)
    # the health routes are open, as /healthz and /readyz
    assert client.get("/v2/health/live").status_code == 200
    assert client.get("/v2/health/ready").status_code == 200


def test_rows_in_flight_bound_applies(tmp_path: Path) -> None:
    settings = keyed_settings(tmp_path, MAX_SAMPLING_ROWS_PER_KEY=10)
    with TestClient(create_app(settings)) as client:
        free = register_model(settings, tmp_path, owner="alice")
        services = client.app.state.services  # type: ignore[attr-defined]
        services.rows.acquire(5, "alice")  # another request of alice's is sampling
        try:
            r = client.post(f"/v2/models/{free}/infer", headers=AUTH,
                            json={"inputs": [], "parameters": {"n": 8}})
            assert "MAX_SAMPLING_ROWS_PER_KEY" in error(r, 429)
            assert r.headers["retry-after"] == "1"
        finally:
            services.rows.release(5, "alice")
        assert services.rows.used == 0


def test_openapi_documents_v2(client: TestClient) -> None:
    paths = create_app().openapi()["paths"]
    for path in ("/v2/health/live", "/v2/health/ready", "/v2", "/v2/models/{name}",
                 "/v2/models/{name}/versions/{version}", "/v2/models/{name}/ready",
                 "/v2/models/{name}/infer", "/v2/models/{name}/versions/{version}/infer"):
        assert path in paths, path
    body = paths["/v2/models/{name}/infer"]["post"]["requestBody"]["content"]
    assert "inputs" in body["application/json"]["schema"]["properties"]
    assert "application/octet-stream" in body


# --- tritonclient.http against a real server ---------------------------------------------------


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Settings, Path]]:
    """uvicorn serving the API (no broker: sampling needs none), with two registered models."""
    tmp = tmp_path_factory.mktemp("oip-live")
    settings = keyed_settings(tmp, MAX_SAMPLES_PER_REQUEST=5000)
    stack = LiveStack(tmp, settings.DATABASE_URL, broker=False,
                      API_KEYS=json.dumps(settings.API_KEYS), MAX_SAMPLES_PER_REQUEST="5000")
    try:
        stack.start_api()
        yield f"127.0.0.1:{stack.port}", settings, tmp
    finally:
        stack.close()


def test_tritonclient_http(live: tuple[str, Settings, Path]) -> None:
    import tritonclient.http as httpclient
    from tritonclient.utils import InferenceServerException

    url, settings, tmp = live

    def keyed() -> dict[str, str]:
        return dict(AUTH)  # a new dict each call: tritonclient writes its own headers into it
    model_id = register_model(settings, tmp, conditions=("p", "eta"), owner="alice")
    free = register_model(settings, tmp, owner="alice")
    conditions = np.random.default_rng(2).normal(size=(64, 2)).astype(np.float32)
    with TestClient(create_app(settings)) as rest:
        expected = reference(rest, model_id, 11, conditions)
        expected_free = reference(rest, free, 12, n=30)
    client = httpclient.InferenceServerClient(url)
    try:
        assert client.is_server_live() and client.is_server_ready()
        assert client.is_model_ready(model_id, headers=keyed())
        assert not client.is_model_ready(model_id)  # no key: not for this caller
        assert client.get_server_metadata(headers=keyed())["name"] == "gan-service"
        meta = client.get_model_metadata(model_id, headers=keyed())
        assert meta["platform"] == "onnx_onnxv1"
        assert [(i["name"], i["datatype"], i["shape"]) for i in meta["inputs"]] == [
            ("conditions", "FP32", [-1, 2]), ("seed", "INT64", [1])]
        for binary in (True, False):
            inputs = [httpclient.InferInput("conditions", [64, 2], "FP32"),
                      httpclient.InferInput("seed", [1], "INT64")]
            inputs[0].set_data_from_numpy(conditions, binary_data=binary)
            inputs[1].set_data_from_numpy(np.array([11], np.int64), binary_data=binary)
            outputs = [httpclient.InferRequestedOutput("samples", binary_data=binary)]
            result = client.infer(model_id, inputs, outputs=outputs, headers=keyed())
            assert np.array_equal(result.as_numpy("samples"), expected), binary
            assert result.get_response()["parameters"]["seed"] == 11
        # no outputs named: the client asks for binary data; the seed as a parameter
        free_result = client.infer(free, [], parameters={"n": 30, "seed": 12}, headers=keyed())
        assert np.array_equal(free_result.as_numpy("samples"), expected_free)
        # the protocol's errors reach the client as InferenceServerException with the status
        bad = httpclient.InferInput("conditions", [64, 2], "FP64")
        bad.set_data_from_numpy(conditions.astype(np.float64))
        failures = {
            "400": lambda: client.infer(model_id, [bad], headers=keyed()),
            "404": lambda: client.get_model_metadata("no-such-model", headers=keyed()),
            "401": lambda: client.infer(free, [], parameters={"n": 3}),
        }
        for status, call in failures.items():
            with pytest.raises(InferenceServerException) as caught:
                call()
            assert caught.value.status() == status, caught.value
            assert "decoding the response" not in caught.value.message()
    finally:
        client.close()
