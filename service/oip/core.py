"""The Open Inference Protocol core: an inference request (model name, input tensors as numpy
arrays with their datatype and shape, parameters, requested outputs) to the sampler, and the
protocol's errors. The REST routes and the gRPC servicer decode their wire format into an
`InferRequest`, call `Protocol`, and encode what comes back; nothing else.

Every trained model is a model of the protocol, named by its id, with one version, "1":

- inputs: `conditions` FP32 [-1, C] for a conditional model (columns in the model's
  condition order; a categorical condition as its codes, the index of its value in the
  model's `categories`), and an optional `seed` INT64 [1];
- parameters: `seed` (instead of the input), `n` (the number of rows: required by an
  unconditional model, which takes no conditions; for a conditional one it must equal the
  rows of `conditions` when given);
- output: `samples` FP32 [-1, F], one row per condition row; the response's parameters say
  the `seed` used (a random one when the request gave none).

The rows are those of GET/POST /v1/models/{id}/samples for the same seed and conditions (the
same sampler draws the same noise). The rules of those routes hold: who may see a model
(service.ownership), MAX_SAMPLES_PER_REQUEST, the rows in flight (RowsInFlight) and the
REQUEST_TIMEOUT_SECONDS deadline.
"""

from __future__ import annotations

import logging
import math
import secrets
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

from gan_platform.settings import Settings
from service.auth import Principal, authorize
from service.ownership import visible_model
from service.problems import Problem
from service.samples import check_n, code_matrix, loaded_model, run_sampling
from service.state import Services
from serving.sampling import LoadedModel

log = logging.getLogger("service.oip")

PLATFORM = "onnx_onnxv1"
SERVER_NAME = "gan-service"
SERVER_VERSION = "0.1.0"
EXTENSIONS = ("binary_tensor_data", "parameters")
MODEL_VERSION = "1"
CONDITIONS, SEED, SAMPLES = "conditions", "seed", "samples"
SCOPE = "sample"

# The protocol's fixed-size datatypes, as little-endian numpy types. BYTES (length-prefixed
# strings) is not one of them: no input here takes it.
DATATYPES: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype("?"), "UINT8": np.dtype("u1"), "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"), "UINT64": np.dtype("<u8"), "INT8": np.dtype("i1"),
    "INT16": np.dtype("<i2"), "INT32": np.dtype("<i4"), "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"), "FP32": np.dtype("<f4"), "FP64": np.dtype("<f8"),
}

Parameter = bool | int | float | str
T = TypeVar("T")


class InferError(Exception):
    """A request the protocol refuses. `status` is an HTTP status: REST answers it with
    `{"error": message}`, gRPC maps it to a status code (grpc_server.GRPC_CODES)."""

    def __init__(self, status: int, message: str,
                 headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message = status, message
        self.headers = dict(headers or {})


def bad_request(message: str) -> InferError:
    return InferError(400, message)


@contextmanager
def translated() -> Iterator[None]:
    """The service's Problems (404, 422, 429, 503, 401, 403) as InferErrors."""
    try:
        yield
    except Problem as exc:
        raise InferError(exc.status, exc.detail or exc.title, exc.headers) from exc


def authorized(settings: Settings, authorization: str | None) -> Principal:
    """The caller of an `authorization: Bearer <key>` value (gRPC metadata), holding the
    `sample` scope; InferError 401 or 403 otherwise (as the REST routes answer)."""
    token = None
    if authorization:
        scheme, _, value = authorization.strip().partition(" ")
        token = value.strip() if scheme.lower() == "bearer" else None
    with translated():
        return authorize(settings, token, SCOPE)


# --- tensors ------------------------------------------------------------------------------------


def decode_tensor(name: str, datatype: str, shape: Sequence[object], *,
                  raw: bytes | memoryview | None = None,
                  values: object = None) -> np.ndarray:
    """One input's elements as an array of `shape`: from its raw bytes (row-major,
    little-endian) or from its values (a flat or nested list, as JSON and gRPC's typed
    contents give them). The size is checked against the shape before anything is copied."""
    dtype = DATATYPES.get(datatype)
    if dtype is None:
        raise bad_request(f"input {name!r}: unsupported datatype {datatype!r} (use one of "
                          f"{', '.join(DATATYPES)})")
    if any(not isinstance(d, int) or isinstance(d, bool) or d < 0 for d in shape):
        raise bad_request(f"input {name!r}: the shape must be non-negative integers, not "
                          f"{list(shape)!r}"[:300])
    dims = [d for d in shape if isinstance(d, int)]  # all of them, checked above
    count = math.prod(dims)
    if raw is not None:
        if len(raw) != count * dtype.itemsize:
            raise bad_request(f"input {name!r}: {len(raw)} bytes of data, but {datatype} "
                              f"{dims} takes {count * dtype.itemsize}")
        return np.frombuffer(raw, dtype=dtype).reshape(dims)
    if values is None:
        raise bad_request(f"input {name!r} has no data")
    try:
        given = np.asarray(values)
    except (TypeError, ValueError, OverflowError) as exc:  # ragged lists
        raise bad_request(f"input {name!r}: its data is not a {datatype} array ({exc})"[:300]
                          ) from exc
    kinds = {"b": "b", "u": "biu", "i": "biu", "f": "biuf"}[dtype.kind]
    if given.dtype.kind not in kinds:
        raise bad_request(f"input {name!r}: its data is not {datatype} (found "
                          f"{given.dtype.kind!r} values: {'numbers' if given.dtype.kind in 'iuf' else 'text or objects'})")
    if given.size != count:
        raise bad_request(f"input {name!r}: {given.size} values, but the shape {dims} holds "
                          f"{count}")
    return given.astype(dtype).reshape(dims)


@dataclass
class Input:
    name: str
    datatype: str
    shape: list[int]
    data: np.ndarray


@dataclass
class RequestedOutput:
    name: str
    parameters: dict[str, Parameter] = field(default_factory=dict)


@dataclass
class InferRequest:
    model_name: str
    model_version: str = ""
    id: str = ""
    parameters: dict[str, Parameter] = field(default_factory=dict)
    inputs: list[Input] = field(default_factory=list)
    outputs: list[RequestedOutput] = field(default_factory=list)  # empty: every output


@dataclass
class Output:
    name: str
    datatype: str
    shape: list[int]
    data: np.ndarray
    requested: RequestedOutput | None = None  # how the request asked for it, if it did


@dataclass
class InferResult:
    model_name: str
    model_version: str
    id: str
    parameters: dict[str, Parameter]
    outputs: list[Output]


@dataclass
class TensorInfo:
    name: str
    datatype: str
    shape: list[int]

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": self.shape}


@dataclass
class ModelMetadata:
    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]
    # Beyond the protocol's fields (REST only: gRPC's message has no room for them).
    parameters: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "versions": self.versions, "platform": self.platform,
                "inputs": [i.as_dict() for i in self.inputs],
                "outputs": [o.as_dict() for o in self.outputs], "parameters": self.parameters}


def _integer(value: object, what: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise bad_request(f"{what} must be an integer, not {value!r}"[:200])
    number = int(value)
    if not low <= number < high:
        raise bad_request(f"{what} must be in [{low}, {high}), not {number}")
    return number


# --- the protocol -------------------------------------------------------------------------------


class Protocol:
    """The protocol's calls over one process's Services (database, artifact store, model
    cache, rows in flight)."""

    def __init__(self, services: Services) -> None:
        self.services = services

    @property
    def settings(self) -> Settings:
        return self.services.settings

    def server_metadata(self) -> dict[str, Any]:
        return {"name": SERVER_NAME, "version": SERVER_VERSION, "extensions": list(EXTENSIONS)}

    def server_ready(self) -> str | None:
        """None when the database answers (models are found there), else why not."""
        try:
            self.services.records.ping()
        except Exception as exc:
            return f"the database cannot be reached ({type(exc).__name__})"
        return None

    def _row(self, name: str, version: str, principal: Principal) -> dict[str, Any]:
        with translated():
            row = visible_model(self.services.records, name, principal)
        if version not in ("", MODEL_VERSION):
            raise InferError(404, f"model {name!r} has no version {version!r}"[:300]
                             + f" (versions: {MODEL_VERSION})")
        return row

    def _load(self, row: Mapping[str, Any]) -> LoadedModel:
        try:
            return loaded_model(row, self.services.store, self.services.cache)
        except Exception as exc:
            log.exception("model %s cannot be loaded", row["id"])
            raise InferError(503, f"model {row['id']!r} cannot be loaded now "
                             f"({type(exc).__name__}); see the service log") from exc

    def model(self, name: str, version: str, principal: Principal
              ) -> tuple[dict[str, Any], LoadedModel]:
        """The model's row and session; 404 when the caller may not see it (or it has no
        such version), 503 when its ONNX file cannot be loaded."""
        row = self._row(name, version, principal)
        return row, self._load(row)

    def model_ready(self, name: str, version: str, principal: Principal) -> str | None:
        """None when the model can be sampled, else why not; 404 for an unknown model."""
        row = self._row(name, version, principal)
        try:
            self._load(row)
        except InferError as exc:
            return exc.message
        return None

    def model_metadata(self, name: str, version: str, principal: Principal) -> ModelMetadata:
        _, model = self.model(name, version, principal)
        inputs = [TensorInfo(CONDITIONS, "FP32", [-1, len(model.condition_names)])] \
            if model.condition_names else []
        inputs.append(TensorInfo(SEED, "INT64", [1]))
        return ModelMetadata(
            name=name, versions=[MODEL_VERSION], platform=PLATFORM, inputs=inputs,
            outputs=[TensorInfo(SAMPLES, "FP32", [-1, len(model.feature_names)])],
            parameters={"condition_names": model.condition_names,
                        "feature_names": model.feature_names,
                        "categories": model.categories,
                        "optional_inputs": [SEED],
                        "n_parameter": "required" if not model.condition_names else "optional"})

    def infer(self, request: InferRequest, principal: Principal,
              encode: Callable[[InferResult], T], *, timeout: float | None = None,
              max_answer_bytes: int | None = None) -> T:
        """Sample and `encode` the result, holding the rows in RowsInFlight until it is
        encoded. `timeout`: a shorter deadline than REQUEST_TIMEOUT_SECONDS (a gRPC
        client's); `max_answer_bytes`: the largest answer the transport can send (413
        before any sampling when the samples would be larger)."""
        settings = self.settings
        _, model = self.model(request.model_name, request.model_version, principal)
        inputs = self._inputs(model, request.inputs)
        params = request.parameters
        n_param = None if params.get("n") is None else \
            _integer(params["n"], "the parameter n", 1, 2**63)
        conditions = None
        if model.condition_names:
            given = inputs.get(CONDITIONS)
            if given is None:
                raise bad_request(f"input {CONDITIONS!r} is missing: this model takes FP32 "
                                  f"[-1, {len(model.condition_names)}] conditions (columns "
                                  f"{model.condition_names})")
            self._check(given, "FP32", [-1, len(model.condition_names)])
            n = given.shape[0]
            if n_param is not None and n_param != n:
                raise bad_request(f"the parameter n={n_param} but the conditions have {n} rows")
        else:
            if n_param is None:
                raise bad_request("this model is unconditional: give the number of rows as "
                                  "the parameter n")
            n = n_param
        with translated():
            check_n(n, settings.MAX_SAMPLES_PER_REQUEST, ["parameters", "n"])
            if model.condition_names:
                conditions = code_matrix(model, inputs[CONDITIONS].data, [CONDITIONS])
        seed = self._seed(inputs.get(SEED), params.get(SEED))
        wanted = self._outputs(request.outputs)
        width = len(model.feature_names)
        if max_answer_bytes is not None and n * width * 4 > max_answer_bytes:
            raise InferError(413, f"{n} rows of {width} FP32 features take {n * width * 4} "
                             f"bytes, more than the {max_answer_bytes} an answer may hold "
                             "(GRPC_MAX_SEND_MESSAGE_BYTES); ask for fewer rows")
        limit = settings.REQUEST_TIMEOUT_SECONDS if timeout is None else \
            max(min(timeout, settings.REQUEST_TIMEOUT_SECONDS), 0.0)
        rows, key = self.services.rows, principal.owner
        with translated():
            rows.acquire(n, key)
        try:
            with translated():
                samples = run_sampling(model, n, seed, conditions, limit)
            result = InferResult(
                model_name=request.model_name, model_version=MODEL_VERSION, id=request.id,
                parameters={SEED: seed},
                outputs=[Output(SAMPLES, "FP32", [n, width], samples, wanted)])
            return encode(result)
        finally:
            rows.release(n, key)

    def _inputs(self, model: LoadedModel, given: Sequence[Input]) -> dict[str, Input]:
        known = ([CONDITIONS] if model.condition_names else []) + [SEED]
        inputs: dict[str, Input] = {}
        for tensor in given:
            if tensor.name not in known:
                raise bad_request(f"unknown input {tensor.name!r}"[:200] + "; this model takes "
                                  f"{', '.join(known)}")
            if tensor.name in inputs:
                raise bad_request(f"input {tensor.name!r} is given twice")
            inputs[tensor.name] = tensor
        return inputs

    @staticmethod
    def _check(tensor: Input, datatype: str, shape: list[int]) -> None:
        if tensor.datatype != datatype:
            raise bad_request(f"input {tensor.name!r} has the datatype {tensor.datatype}; "
                              f"the model takes {datatype}")
        if len(tensor.shape) != len(shape) or any(
                want != -1 and got != want for got, want in zip(tensor.shape, shape,
                                                                strict=True)):
            raise bad_request(f"input {tensor.name!r} has the shape {tensor.shape}; the model "
                              f"takes {shape}")

    def _seed(self, tensor: Input | None, parameter: object) -> int:
        if tensor is not None and parameter is not None:
            raise bad_request("give the seed once: as the input seed or the parameter seed")
        if tensor is not None:
            self._check(tensor, "INT64", [1])
            return _integer(tensor.data.reshape(-1)[0], "the seed", 0, 2**63)
        if parameter is not None:
            return _integer(parameter, "the parameter seed", 0, 2**63)
        return secrets.randbits(63)

    @staticmethod
    def _outputs(requested: Sequence[RequestedOutput]) -> RequestedOutput | None:
        wanted = None
        for output in requested:
            if output.name != SAMPLES:
                raise bad_request(f"unknown output {output.name!r}"[:200]
                                  + f"; the model gives {SAMPLES!r}")
            wanted = output
        return wanted
