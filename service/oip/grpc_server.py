"""The Open Inference Protocol over gRPC: `inference.GRPCInferenceService` (KServe V2, as
Triton's clients call it) on GRPC_HOST:GRPC_PORT, in a process of its own:

    python -m service.oip.grpc_server          # make run starts it next to the API

ServerLive, ServerReady, ModelReady, ServerMetadata, ModelMetadata and ModelInfer; any other
RPC of Triton's service answers UNIMPLEMENTED. The calls go to service.oip.core, as the REST
routes' do: the same models, API keys (metadata `authorization: Bearer <key>`, the `sample`
scope), limits (MAX_SAMPLES_PER_REQUEST, the rows in flight of this process,
REQUEST_TIMEOUT_SECONDS or the client's shorter deadline) and rows for the same seed.
Outputs come as `raw_output_contents`.

Messages: received up to MAX_SAMPLING_BODY_BYTES (+ 64 KiB for the rest of the request),
sent up to GRPC_MAX_SEND_MESSAGE_BYTES. At most GRPC_WORKERS calls run at once, and
4 x GRPC_WORKERS are accepted (running or waiting); beyond: RESOURCE_EXHAUSTED.

This module's generated stubs define the protobuf package `inference`: a process cannot also
import tritonclient.grpc's (the same names in one descriptor pool). The server runs alone.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from concurrent import futures
from contextlib import contextmanager
from typing import Any, TypeVar

import grpc

from gan_platform.settings import Settings, get_settings
from service import observability
from service.auth import Principal
from service.oip import core
from service.oip.core import (
    InferError,
    InferRequest,
    InferResult,
    Input,
    Parameter,
    Protocol,
    RequestedOutput,
    decode_tensor,
)
from service.oip.proto import grpc_service_pb2 as pb
from service.oip.proto import grpc_service_pb2_grpc as pb_grpc
from service.state import Services

log = logging.getLogger("service.oip.grpc")

# InferError's HTTP status -> gRPC status code.
GRPC_CODES: Mapping[int, grpc.StatusCode] = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    422: grpc.StatusCode.INVALID_ARGUMENT,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    503: grpc.StatusCode.UNAVAILABLE,
}
REQUEST_MARGIN = 64 * 1024  # the request's names, shapes and parameters beyond its data
GRPC_MAX_MESSAGE = 2**31 - 1

# Which typed field of InferTensorContents holds a datatype's values.
CONTENTS_FIELD: Mapping[str, str] = {
    "BOOL": "bool_contents", "INT8": "int_contents", "INT16": "int_contents",
    "INT32": "int_contents", "INT64": "int64_contents", "UINT8": "uint_contents",
    "UINT16": "uint_contents", "UINT32": "uint_contents", "UINT64": "uint64_contents",
    "FP32": "fp32_contents", "FP64": "fp64_contents",
}

T = TypeVar("T")


def parameter_value(param: pb.InferParameter) -> Parameter | None:
    which = param.WhichOneof("parameter_choice")
    return None if which is None else getattr(param, which)


def set_parameter(target: pb.InferParameter, value: Parameter) -> None:
    if isinstance(value, bool):
        target.bool_param = value
    elif isinstance(value, int):
        target.int64_param = value
    elif isinstance(value, float):
        target.double_param = value
    else:
        target.string_param = str(value)


def _parameters(entries: Mapping[str, pb.InferParameter]) -> dict[str, Parameter]:
    out: dict[str, Parameter] = {}
    for key, param in entries.items():
        value = parameter_value(param)
        if value is not None:
            out[key] = value
    return out


def decode_request(request: pb.ModelInferRequest) -> InferRequest:
    """The protocol's request from the message: raw contents (one per input, in order) or
    the typed contents of each input."""
    raw = list(request.raw_input_contents)
    if raw and len(raw) != len(request.inputs):
        raise core.bad_request(f"{len(raw)} raw_input_contents for {len(request.inputs)} "
                               "inputs: give one per input, or none")
    inputs: list[Input] = []
    for i, tensor in enumerate(request.inputs):
        shape = list(tensor.shape)
        if raw:
            if tensor.HasField("contents"):
                raise core.bad_request(f"input {tensor.name!r} has both raw and typed contents")
            data = decode_tensor(tensor.name, tensor.datatype, shape, raw=raw[i])
        else:
            field = CONTENTS_FIELD.get(tensor.datatype)
            if field is None:  # BYTES, FP16 (raw only) or unknown: decode_tensor says which
                data = decode_tensor(tensor.name, tensor.datatype, shape, raw=b"")
            else:
                data = decode_tensor(tensor.name, tensor.datatype, shape,
                                     values=list(getattr(tensor.contents, field)))
        inputs.append(Input(tensor.name, tensor.datatype, list(data.shape), data))
    outputs = [RequestedOutput(o.name, _parameters(o.parameters)) for o in request.outputs]
    return InferRequest(model_name=request.model_name, model_version=request.model_version,
                        id=request.id, parameters=_parameters(request.parameters),
                        inputs=inputs, outputs=outputs)


def encode_result(result: InferResult) -> pb.ModelInferResponse:
    response = pb.ModelInferResponse(model_name=result.model_name,
                                     model_version=result.model_version, id=result.id)
    for key, value in result.parameters.items():
        set_parameter(response.parameters[key], value)
    for output in result.outputs:
        response.outputs.add(name=output.name, datatype=output.datatype, shape=output.shape)
        response.raw_output_contents.append(output.data.astype("<f4", copy=False).tobytes())
    return response


class InferenceServicer(pb_grpc.GRPCInferenceServiceServicer):
    """The six RPCs, each a translation to and from service.oip.core."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self.protocol = Protocol(services)

    @property
    def settings(self) -> Settings:
        return self.services.settings

    @contextmanager
    def _answering(self, context: grpc.ServicerContext, rpc: str) -> Iterator[None]:
        """InferErrors as their status codes; anything else INTERNAL, logged."""
        try:
            yield
        except InferError as exc:
            code = GRPC_CODES.get(exc.status, grpc.StatusCode.INTERNAL)
            if "Retry-After" in exc.headers:
                context.set_trailing_metadata((("retry-after", exc.headers["Retry-After"]),))
            context.abort(code, exc.message[:2000])
        except Exception:
            log.exception("unhandled error in %s", rpc)
            context.abort(grpc.StatusCode.INTERNAL, "internal error; see the service log")

    def _caller(self, context: grpc.ServicerContext) -> Principal:
        metadata = dict(context.invocation_metadata() or ())
        value = metadata.get("authorization")
        return core.authorized(self.settings, value if isinstance(value, str) else None)

    def _call(self, context: grpc.ServicerContext, rpc: str, work: Callable[[], T]) -> T:
        with self._answering(context, rpc):
            return work()
        raise AssertionError("unreachable: context.abort raised")  # pragma: no cover

    def ServerLive(self, request: pb.ServerLiveRequest,  # noqa: N802 (the protocol's names)
                   context: grpc.ServicerContext) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    def ServerReady(self, request: pb.ServerReadyRequest,  # noqa: N802
                    context: grpc.ServicerContext) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self.protocol.server_ready() is None)

    def ServerMetadata(self, request: pb.ServerMetadataRequest,  # noqa: N802
                       context: grpc.ServicerContext) -> pb.ServerMetadataResponse:
        def work() -> pb.ServerMetadataResponse:
            self._caller(context)
            return pb.ServerMetadataResponse(**self.protocol.server_metadata())

        return self._call(context, "ServerMetadata", work)

    def ModelReady(self, request: pb.ModelReadyRequest,  # noqa: N802
                   context: grpc.ServicerContext) -> pb.ModelReadyResponse:
        def work() -> pb.ModelReadyResponse:
            why = self.protocol.model_ready(request.name, request.version,
                                            self._caller(context))
            return pb.ModelReadyResponse(ready=why is None)

        return self._call(context, "ModelReady", work)

    def ModelMetadata(self, request: pb.ModelMetadataRequest,  # noqa: N802
                      context: grpc.ServicerContext) -> pb.ModelMetadataResponse:
        def work() -> pb.ModelMetadataResponse:
            meta = self.protocol.model_metadata(request.name, request.version,
                                                self._caller(context))
            tensor = pb.ModelMetadataResponse.TensorMetadata
            return pb.ModelMetadataResponse(
                name=meta.name, versions=meta.versions, platform=meta.platform,
                inputs=[tensor(name=t.name, datatype=t.datatype, shape=t.shape)
                        for t in meta.inputs],
                outputs=[tensor(name=t.name, datatype=t.datatype, shape=t.shape)
                         for t in meta.outputs])

        return self._call(context, "ModelMetadata", work)

    def ModelInfer(self, request: pb.ModelInferRequest,  # noqa: N802
                   context: grpc.ServicerContext) -> pb.ModelInferResponse:
        def work() -> pb.ModelInferResponse:
            caller = self._caller(context)
            infer = decode_request(request)
            remaining = context.time_remaining()
            return self.protocol.infer(
                infer, caller, encode_result, timeout=remaining,
                max_answer_bytes=self.settings.GRPC_MAX_SEND_MESSAGE_BYTES - REQUEST_MARGIN)

        return self._call(context, "ModelInfer", work)


def receive_limit(settings: Settings) -> int:
    return min(settings.MAX_SAMPLING_BODY_BYTES + REQUEST_MARGIN, GRPC_MAX_MESSAGE)


def make_server(services: Services, host: str, port: int) -> tuple[grpc.Server, int]:
    """The server with the servicer added, bound to host:port (0: a free port); not started.
    Returns the port bound."""
    settings = services.settings
    workers = settings.GRPC_WORKERS
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="grpc"),
        options=[("grpc.max_receive_message_length", receive_limit(settings)),
                 ("grpc.max_send_message_length", settings.GRPC_MAX_SEND_MESSAGE_BYTES)],
        maximum_concurrent_rpcs=4 * workers)
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(InferenceServicer(services), server)
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    bound = server.add_insecure_port(address)
    if not bound:
        raise OSError(f"cannot listen on {address}")
    return server, bound


LOOPBACK = ("127.0.0.1", "localhost", "::1")


def main(argv: list[str] | None = None) -> int:
    settings = get_settings()
    observability.configure_logging(settings.LOG_LEVEL, settings.LOG_FORMAT)
    if not settings.API_KEYS and settings.GRPC_HOST not in LOOPBACK:
        print(f"refusing to serve gRPC without API keys on {settings.GRPC_HOST}: set API_KEYS "
              "or GRPC_HOST=127.0.0.1", file=sys.stderr)
        return 2
    services = Services.create(settings)
    stop = threading.Event()

    def request_stop(signum: int, _frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    try:
        server, port = make_server(services, settings.GRPC_HOST, settings.GRPC_PORT)
        server.start()
        # One line a supervisor (or a test) can wait for: the port is bound.
        print(f"gRPC inference server on {settings.GRPC_HOST}:{port}", flush=True)
        stop.wait()
        server.stop(grace=5).wait(10)
        return 0
    finally:
        services.close()


if __name__ == "__main__":
    sys.exit(main())
