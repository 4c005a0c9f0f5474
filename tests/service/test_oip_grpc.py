"""The Open Inference Protocol over gRPC: `python -m service.oip.grpc_server` as a real process
on a free port, driven by NVIDIA's tritonclient.grpc. Liveness, readiness, metadata, infer
with raw (binary) and typed contents for a conditional and an unconditional model; the rows
equal those of POST /v1/models/{id}/samples for the same seed; wrong shapes and datatypes,
unknown models, missing keys and oversized messages get the protocol's status codes.

The server runs in its own process: its stubs and tritonclient's define the same protobuf
package (`inference`), which one process cannot load twice."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from fastapi.testclient import TestClient

from gan_platform.settings import Settings
from service.main import create_app
from tests.conftest import ROOT, free_port, stop_process
from tests.service.test_api import register_model
from tests.service.test_oip_rest import AUTH, OTHER, TRAINER, keyed_settings, reference

tritonclient_grpc = pytest.importorskip("tritonclient.grpc")
from tritonclient.grpc import service_pb2 as triton_pb  # noqa: E402
from tritonclient.utils import InferenceServerException  # noqa: E402

BEARER = {"authorization": AUTH["Authorization"]}
MAX_BODY = 200_000  # MAX_SAMPLING_BODY_BYTES of the server: its receive limit too


class Server:
    def __init__(self, url: str, settings: Settings, tmp: Path, log: Path) -> None:
        self.url, self.settings, self.tmp, self.log = url, settings, tmp, log
        self.model_id = register_model(settings, tmp, conditions=("p", "eta"), owner="alice")
        self.free = register_model(settings, tmp, owner="alice")

    def client(self) -> Any:
        return tritonclient_grpc.InferenceServerClient(self.url)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("oip-grpc")
    settings = keyed_settings(tmp, MAX_SAMPLES_PER_REQUEST=5000,
                              MAX_SAMPLING_BODY_BYTES=MAX_BODY)
    port = free_port()
    env = {**os.environ, "DATABASE_URL": settings.DATABASE_URL,
           "ARTIFACT_ROOT": settings.ARTIFACT_ROOT, "WORK_ROOT": str(settings.WORK_ROOT),
           "API_KEYS": json.dumps(settings.API_KEYS), "MAX_SAMPLES_PER_REQUEST": "5000",
           "MAX_SAMPLING_BODY_BYTES": str(MAX_BODY), "GRPC_PORT": str(port),
           "GRPC_MAX_SEND_MESSAGE_BYTES": "100000", "GRPC_WORKERS": "2",
           "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    env.pop("REDIS_URL", None)
    log = tmp / "grpc.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "service.oip.grpc_server"], cwd=ROOT,
                                env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while "gRPC inference server on" not in log.read_text():
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        yield Server(f"127.0.0.1:{port}", settings, tmp, log)
    finally:
        stop_process(proc)
        assert proc.returncode == 0, log.read_text()  # SIGTERM: a clean stop


def expect(status: grpc.StatusCode, call: Callable[[], object]) -> str:
    with pytest.raises(InferenceServerException) as caught:
        call()
    assert caught.value.status() == str(status), caught.value
    return str(caught.value.message())


def test_health_and_metadata(server: Server) -> None:
    client = server.client()
    assert client.is_server_live() and client.is_server_ready()
    assert client.get_server_metadata(headers=BEARER).name == "gan-service"
    assert client.is_model_ready(server.model_id, headers=BEARER)
    assert client.is_model_ready(server.model_id, "1", headers=BEARER)
    meta = client.get_model_metadata(server.model_id, headers=BEARER, as_json=True)
    assert meta["name"] == server.model_id and meta["platform"] == "onnx_onnxv1"
    assert meta["versions"] == ["1"]
    assert meta["inputs"] == [{"name": "conditions", "datatype": "FP32", "shape": ["-1", "2"]},
                              {"name": "seed", "datatype": "INT64", "shape": ["1"]}]
    assert meta["outputs"] == [{"name": "samples", "datatype": "FP32", "shape": ["-1", "2"]}]
    free = client.get_model_metadata(server.free, headers=BEARER)
    assert [i.name for i in free.inputs] == ["seed"]


def test_infer_raw_and_typed_equal_the_samples_route(server: Server) -> None:
    conditions = np.random.default_rng(3).normal(size=(40, 2)).astype(np.float32)
    with TestClient(create_app(server.settings)) as rest:
        expected = reference(rest, server.model_id, 21, conditions)
        expected_free = reference(rest, server.free, 22, n=25)
    client = server.client()
    inputs = [tritonclient_grpc.InferInput("conditions", [40, 2], "FP32"),
              tritonclient_grpc.InferInput("seed", [1], "INT64")]
    inputs[0].set_data_from_numpy(conditions)
    inputs[1].set_data_from_numpy(np.array([21], np.int64))
    result = client.infer(server.model_id, inputs,
                          outputs=[tritonclient_grpc.InferRequestedOutput("samples")],
                          headers=BEARER, request_id="q1")
    assert np.array_equal(result.as_numpy("samples"), expected)
    response = result.get_response()
    assert response.id == "q1" and response.model_version == "1"
    assert response.parameters["seed"].int64_param == 21
    assert len(response.raw_output_contents) == 1  # outputs come raw
    # unconditional: n and the seed as parameters
    free = client.infer(server.free, [], parameters={"n": 25, "seed": 22}, headers=BEARER)
    assert np.array_equal(free.as_numpy("samples"), expected_free)
    # typed contents (the JSON-like form of gRPC), through the raw stub
    request = triton_pb.ModelInferRequest(model_name=server.model_id)
    tensor = request.inputs.add(name="conditions", datatype="FP32", shape=[40, 2])
    tensor.contents.fp32_contents.extend(conditions.reshape(-1).tolist())
    seed = request.inputs.add(name="seed", datatype="INT64", shape=[1])
    seed.contents.int64_contents.append(21)
    answer = client._client_stub.ModelInfer(request, metadata=tuple(BEARER.items()))
    samples = np.frombuffer(answer.raw_output_contents[0], "<f4").reshape(40, 2)
    assert np.array_equal(samples, expected)
    # no seed: a random one, returned, reproduces the rows
    random = client.infer(server.free, [], parameters={"n": 25}, headers=BEARER)
    again = client.infer(server.free, [], headers=BEARER, parameters={
        "n": 25, "seed": random.get_response().parameters["seed"].int64_param})
    assert np.array_equal(random.as_numpy("samples"), again.as_numpy("samples"))


def test_status_codes(server: Server) -> None:
    client = server.client()
    code = grpc.StatusCode

    def infer(model: str, tensors: list[tuple[str, str, np.ndarray]],
              headers: dict[str, str] | None = BEARER, **params: object) -> object:
        inputs = []
        for name, datatype, data in tensors:
            inputs.append(tritonclient_grpc.InferInput(name, list(data.shape), datatype))
            inputs[-1].set_data_from_numpy(data)
        return client.infer(model, inputs, headers=headers, parameters=params or None)

    good = np.ones((4, 2), np.float32)
    m = server.model_id
    invalid = {
        "wrong shape": lambda: infer(m, [("conditions", "FP32", np.ones((4, 3), np.float32))]),
        "wrong datatype": lambda: infer(m, [("conditions", "FP64", good.astype(np.float64))]),
        "INT32 conditions": lambda: infer(m, [("conditions", "INT32", good.astype(np.int32))]),
        "missing conditions": lambda: infer(m, []),
        "unknown input": lambda: infer(m, [("conditions", "FP32", good), ("x", "FP32", good)]),
        "seed twice": lambda: infer(m, [("conditions", "FP32", good),
                                        ("seed", "INT64", np.array([1], np.int64))], seed=1),
        "n missing": lambda: infer(server.free, []),
        "too many rows": lambda: infer(server.free, [], n=5001),
        "non-finite": lambda: infer(m, [("conditions", "FP32",
                                         np.array([[1, np.nan]], np.float32))]),
    }
    for name, call in invalid.items():
        assert expect(code.INVALID_ARGUMENT, call), name
    assert "MAX_SAMPLES_PER_REQUEST" in expect(code.INVALID_ARGUMENT, invalid["too many rows"])
    # raw contents that do not match the shape
    request = triton_pb.ModelInferRequest(model_name=m)
    request.inputs.add(name="conditions", datatype="FP32", shape=[4, 2])
    request.raw_input_contents.append(b"\x00" * 12)
    with pytest.raises(grpc.RpcError) as caught:
        client._client_stub.ModelInfer(request, metadata=tuple(BEARER.items()))
    assert caught.value.code() == code.INVALID_ARGUMENT
    # unknown models and versions; another key's model is unknown to it
    expect(code.NOT_FOUND, lambda: client.get_model_metadata("nope", headers=BEARER))
    expect(code.NOT_FOUND, lambda: client.is_model_ready("nope", headers=BEARER))
    expect(code.NOT_FOUND, lambda: client.get_model_metadata(m, "2", headers=BEARER))
    expect(code.NOT_FOUND, lambda: infer("nope", [("conditions", "FP32", good)]))
    bob = {"authorization": f"Bearer {OTHER}"}
    expect(code.NOT_FOUND, lambda: infer(m, [("conditions", "FP32", good)], headers=bob))
    # keys: none, unknown, without the sample scope
    expect(code.UNAUTHENTICATED, lambda: infer(m, [("conditions", "FP32", good)], headers=None))
    expect(code.UNAUTHENTICATED, lambda: client.get_model_metadata(
        m, headers={"authorization": "Bearer wrong"}))
    expect(code.UNAUTHENTICATED, lambda: client.get_server_metadata())
    expect(code.PERMISSION_DENIED, lambda: client.get_model_metadata(
        m, headers={"authorization": f"Bearer {TRAINER}"}))
    # beyond the message limits: RESOURCE_EXHAUSTED (the request's, then the answer's)
    big = np.ones((MAX_BODY // 8 + 10_000, 2), np.float32)
    expect(code.RESOURCE_EXHAUSTED, lambda: infer(m, [("conditions", "FP32", big)]))
    assert "GRPC_MAX_SEND_MESSAGE_BYTES" in expect(
        code.RESOURCE_EXHAUSTED, lambda: infer(server.free, [], n=5000))
    # the RPCs of Triton's service that are not served here
    expect(code.UNIMPLEMENTED, lambda: client.get_model_config(m, headers=BEARER))
    # the server is still serving after all that
    assert client.is_server_live()
    assert "Traceback" not in server.log.read_text()
