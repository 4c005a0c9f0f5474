"""/v2: the Open Inference Protocol (KServe V2) over REST, with Triton's binary tensor data
extension, for every trained model (its name: the model id). The protocol itself is
service.oip.core; this module reads and writes its JSON and binary bodies.

Every answer of these routes, errors included, is the protocol's: `{"error": "..."}` with a
4xx or 5xx status. The health routes are open, as /healthz and /readyz; the others need an
API key with the `sample` scope, as /v1/models does.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Coroutine, Sequence
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from service.auth import Principal, require
from service.deps import ServicesDep
from service.oip.core import (
    InferError,
    InferRequest,
    InferResult,
    Input,
    Parameter,
    Protocol,
    RequestedOutput,
    bad_request,
    decode_tensor,
)
from service.problems import Problem
from service.state import Services
from serving.formats import json_numbers
from serving.sampling import SamplingError

log = logging.getLogger("service.oip")

HEADER_LENGTH = "Inference-Header-Content-Length"
BINARY = "application/octet-stream"
TAG = "open inference protocol"


class OipRoute(APIRoute):
    """Answers every failure of the route, its dependencies (the API key) and its parameters
    included, as the protocol's `{"error": "..."}` rather than a problem document."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def protocol_errors(request: Request) -> Response:
            try:
                return await handler(request)
            except InferError as exc:
                return error_response(exc.status, exc.message, exc.headers)
            except Problem as exc:
                return error_response(exc.status, exc.detail or exc.title, exc.headers)
            except RequestValidationError as exc:
                shown = "; ".join(f"{'.'.join(str(p) for p in e.get('loc', ()))}: "
                                  f"{e.get('msg', '')}" for e in exc.errors()[:5])
                return error_response(400, shown[:1000] or "invalid request")
            except Exception:
                log.exception("unhandled error on %s %s", request.method, request.url.path)
                return error_response(500, "internal error; see the service log")

        return protocol_errors


def error_response(status: int, message: str,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message[:2000]}, status_code=status, headers=headers)


router = APIRouter(prefix="/v2", tags=[TAG], route_class=OipRoute)
Caller = Annotated[Principal, Depends(require("sample"))]


async def protocol(services: ServicesDep) -> Protocol:
    return Protocol(services)


ProtocolDep = Annotated[Protocol, Depends(protocol)]


# --- documentation of the bodies (the routes read and write them themselves) -----------------


class OipError(BaseModel):
    error: str


class OipTensorMetadata(BaseModel):
    name: str
    datatype: str
    shape: list[int]


class OipModelMetadata(BaseModel):
    name: str
    versions: list[str]
    platform: str
    inputs: list[OipTensorMetadata]
    outputs: list[OipTensorMetadata]
    parameters: dict[str, Any] = Field(
        default_factory=dict, description="beyond the protocol: the condition and feature "
        "names in column order, the categories of categorical conditions")


class OipServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str]


class OipInputTensor(BaseModel):
    name: str
    datatype: str
    shape: list[int]
    parameters: dict[str, Any] = Field(default_factory=dict,
                                       description="binary_data_size: its bytes follow the JSON")
    data: list[Any] | None = None


class OipRequestedOutput(BaseModel):
    name: str
    parameters: dict[str, Any] = Field(default_factory=dict,
                                       description="binary_data: true for raw bytes")


class OipInferRequest(BaseModel):
    id: str | None = None
    parameters: dict[str, Any] = Field(
        default_factory=dict, description="seed, n (unconditional models), binary_data_output")
    inputs: list[OipInputTensor]
    outputs: list[OipRequestedOutput] | None = None


class OipOutputTensor(BaseModel):
    name: str
    datatype: str
    shape: list[int]
    parameters: dict[str, Any] = Field(default_factory=dict)
    data: list[Any] | None = None


class OipInferResponse(BaseModel):
    model_name: str
    model_version: str
    id: str | None = None
    parameters: dict[str, Any] = Field(default_factory=dict, description="seed: the seed used")
    outputs: list[OipOutputTensor]


def _errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {s: {"model": OipError, "description": "the protocol's error"} for s in statuses}


KEYED = _errors(400, 401, 403, 404, 503)


# --- health and metadata ------------------------------------------------------------------------


@router.get("/health/live", responses=_errors(500))
async def live() -> dict[str, bool]:
    """Liveness, as /healthz."""
    return {"live": True}


@router.get("/health/ready", responses=_errors(503))
def ready(proto: ProtocolDep) -> Response:
    """200 when models can be looked up (the database answers)."""
    why = proto.server_ready()
    if why is not None:
        return error_response(503, why)
    return JSONResponse({"ready": True})


@router.get("", response_model=OipServerMetadata, responses=_errors(401, 403))
def server_metadata(proto: ProtocolDep, caller: Caller) -> dict[str, Any]:
    return proto.server_metadata()


def _metadata(proto: Protocol, name: str, version: str, caller: Principal) -> dict[str, Any]:
    return proto.model_metadata(name, version, caller).as_dict()


@router.get("/models/{name}", response_model=OipModelMetadata, responses=KEYED)
def model_metadata(name: str, proto: ProtocolDep, caller: Caller) -> dict[str, Any]:
    """Inputs `conditions` FP32 [-1, C] (conditional models) and `seed` INT64 [1]
    (optional), output `samples` FP32 [-1, F], platform onnx_onnxv1."""
    return _metadata(proto, name, "", caller)


@router.get("/models/{name}/versions/{version}", response_model=OipModelMetadata,
            responses=KEYED)
def model_version_metadata(name: str, version: str, proto: ProtocolDep,
                           caller: Caller) -> dict[str, Any]:
    return _metadata(proto, name, version, caller)


def _ready(proto: Protocol, name: str, version: str, caller: Principal) -> Response:
    why = proto.model_ready(name, version, caller)
    if why is not None:
        return JSONResponse({"name": name, "ready": False, "error": why}, status_code=503)
    return JSONResponse({"name": name, "ready": True})


@router.get("/models/{name}/ready", responses=KEYED)
def model_ready(name: str, proto: ProtocolDep, caller: Caller) -> Response:
    """200 when the model's ONNX file loads; 503 when it cannot be loaded now."""
    return _ready(proto, name, "", caller)


@router.get("/models/{name}/versions/{version}/ready", responses=KEYED)
def model_version_ready(name: str, version: str, proto: ProtocolDep,
                        caller: Caller) -> Response:
    return _ready(proto, name, version, caller)


# --- inference ----------------------------------------------------------------------------------


def _parameters(value: object, where: str) -> dict[str, Parameter]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise bad_request(f"{where} must be an object")
    out: dict[str, Parameter] = {}
    for key, item in value.items():
        if not isinstance(item, bool | int | float | str):
            raise bad_request(f"{where}.{key} must be a boolean, a number or a string"[:200])
        out[str(key)] = item
    return out


def parse_infer(body: bytes, header_length: str | None, name: str, version: str,
                json_limit: int) -> InferRequest:
    """An infer request's JSON, and the binary data of its inputs after it when
    `Inference-Header-Content-Length` says where the JSON ends."""
    if header_length is not None:
        try:
            cut = int(header_length)
        except ValueError:
            raise bad_request(f"{HEADER_LENGTH} must be an integer") from None
        if not 0 < cut <= len(body):
            raise bad_request(f"{HEADER_LENGTH}={cut} but the body has {len(body)} bytes")
    else:
        cut = len(body)
    if cut > json_limit:
        raise InferError(413, f"the JSON part of the request has {cut} bytes, more than "
                         f"MAX_BODY_BYTES={json_limit}; send large tensors as binary data "
                         f"({HEADER_LENGTH} and binary_data_size)")
    try:
        doc = json.loads(body[:cut])
    except (ValueError, UnicodeDecodeError) as exc:
        raise bad_request(f"the request is not JSON: {exc}"[:300]) from None
    if not isinstance(doc, dict):
        raise bad_request("the request must be a JSON object")
    binary = memoryview(body)[cut:]
    offset = 0
    inputs: list[Input] = []
    given = doc.get("inputs")
    if not isinstance(given, list):
        raise bad_request("the request needs a list of inputs")
    for i, item in enumerate(given):
        if not isinstance(item, dict):
            raise bad_request(f"inputs[{i}] must be an object")
        tname, datatype, shape = item.get("name"), item.get("datatype"), item.get("shape")
        if not isinstance(tname, str) or not isinstance(datatype, str) \
                or not isinstance(shape, list):
            raise bad_request(f"inputs[{i}] needs a name, a datatype and a shape")
        params = _parameters(item.get("parameters"), f"inputs[{i}].parameters")
        size = params.get("binary_data_size")
        if size is not None:
            if isinstance(size, bool) or not isinstance(size, int) or size < 0:
                raise bad_request(f"input {tname!r}: binary_data_size must be a non-negative "
                                  "integer"[:200])
            if offset + size > len(binary):
                raise bad_request(f"input {tname!r}: binary_data_size={size} but only "
                                  f"{len(binary) - offset} bytes of binary data are left")
            data = decode_tensor(tname, datatype, shape, raw=binary[offset:offset + size])
            offset += size
        else:
            data = decode_tensor(tname, datatype, shape, values=item.get("data"))
        inputs.append(Input(tname, datatype, list(data.shape), data))
    if offset != len(binary):
        raise bad_request(f"{len(binary) - offset} bytes of binary data belong to no input")
    outputs: list[RequestedOutput] = []
    asked = doc.get("outputs")
    if asked is not None:
        if not isinstance(asked, list):
            raise bad_request("outputs must be a list")
        for i, item in enumerate(asked):
            if not isinstance(item, dict) or not isinstance(item.get("name"), str):
                raise bad_request(f"outputs[{i}] needs a name")
            outputs.append(RequestedOutput(item["name"], _parameters(
                item.get("parameters"), f"outputs[{i}].parameters")))
    request_id = doc.get("id", "")
    if not isinstance(request_id, str):
        raise bad_request("id must be a string")
    return InferRequest(model_name=name, model_version=version, id=request_id,
                        parameters=_parameters(doc.get("parameters"), "parameters"),
                        inputs=inputs, outputs=outputs)


def encode_infer(result: InferResult, binary_default: bool) -> Response:
    """The JSON answer, with the outputs asked as binary data after it."""
    outputs: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    for output in result.outputs:
        entry: dict[str, Any] = {"name": output.name, "datatype": output.datatype,
                                 "shape": output.shape}
        asked = output.requested.parameters.get("binary_data") if output.requested else None
        if asked if asked is not None else binary_default:
            blob = output.data.astype("<f4", copy=False).tobytes()
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            try:
                entry["data"] = orjson.Fragment(json_numbers(output.data.reshape(-1)))
            except SamplingError as exc:
                raise bad_request(f"output {output.name}: {exc}; ask for it as binary data "
                                  "(parameters.binary_data: true)") from exc
        outputs.append(entry)
    doc: dict[str, Any] = {"model_name": result.model_name,
                           "model_version": result.model_version,
                           "parameters": result.parameters, "outputs": outputs}
    if result.id:
        doc["id"] = result.id
    head = orjson.dumps(doc)
    if not blobs:
        return Response(head, media_type="application/json")
    return Response(b"".join([head, *blobs]), media_type=BINARY,
                    headers={HEADER_LENGTH: str(len(head))})


def inline_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The model's JSON schema with its $defs inlined: openapi_extra's schema stands alone."""
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return resolve(defs[ref.rsplit("/", 1)[1]])
            return {k: resolve(v) for k, v in node.items()}
        if isinstance(node, list):
            return [resolve(v) for v in node]
        return node

    return dict(resolve(schema))


INFER_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "The protocol's JSON; with the binary data extension, the JSON (its "
        f"length in {HEADER_LENGTH}) followed by the raw bytes of the inputs whose "
        "parameters give binary_data_size, in their order.",
        "content": {
            "application/json": {"schema": inline_schema(OipInferRequest)},
            BINARY: {"schema": {"type": "string", "format": "binary"}},
        },
    },
}
INFER_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"model": OipInferResponse, "description": "JSON; with binary outputs, "
          f"{BINARY}: the JSON ({HEADER_LENGTH} bytes) then the outputs' raw bytes",
          "content": {BINARY: {}}},
    **_errors(400, 401, 403, 404, 413, 422, 429, 503),
}


async def _infer(request: Request, name: str, version: str, services: Services,
                 caller: Principal) -> Response:
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        raise bad_request(f"Content-Encoding {encoding[:50]!r} is not accepted; send the "
                          "body uncompressed")
    body = await request.body()
    infer = parse_infer(body, request.headers.get(HEADER_LENGTH), name, version,
                        services.settings.MAX_BODY_BYTES)
    binary_default = infer.parameters.get("binary_data_output") is True
    proto = Protocol(services)

    def run() -> Response:
        return proto.infer(infer, caller, lambda result: encode_infer(result, binary_default))

    return await run_in_threadpool(run)


@router.post("/models/{name}/infer", responses=INFER_RESPONSES, openapi_extra=INFER_BODY,
             response_model=None)
async def infer(name: str, request: Request, services: ServicesDep,
                caller: Caller) -> Response:
    """Sample: one row of `samples` per row of the `conditions` input (an unconditional
    model: the parameter `n` rows); the seed from the input `seed`, the parameter `seed`, or
    random (the answer's parameters say which)."""
    return await _infer(request, name, "", services, caller)


@router.post("/models/{name}/versions/{version}/infer", responses=INFER_RESPONSES,
             openapi_extra=INFER_BODY, response_model=None)
async def infer_version(name: str, version: str, request: Request, services: ServicesDep,
                        caller: Caller) -> Response:
    return await _infer(request, name, version, services, caller)


METHODS: Sequence[str] = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")


@router.api_route("", methods=[m for m in METHODS if m != "GET"], include_in_schema=False)
@router.api_route("/{rest:path}", methods=list(METHODS), include_in_schema=False)
async def unknown(request: Request) -> Response:
    """Any other /v2 path or method: the protocol's 404, not a problem document."""
    return error_response(404, f"no such endpoint: {request.method} {request.url.path}"[:300])

