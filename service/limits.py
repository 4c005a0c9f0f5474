"""Request limits as pure ASGI middleware: the body size (413) and a time limit (503).

Uploads (`POST /v1/datasets`) have their own, larger limit (MAX_UPLOAD_BYTES); binary sampling
bodies (npy, Arrow or Parquet conditions to `POST /v1/models/{id}/samples`, and Open Inference
Protocol infer requests, `POST /v2/models/.../infer`) theirs (MAX_SAMPLING_BODY_BYTES); every
other body is capped by MAX_BODY_BYTES. Both are checked by Content-Length first and by counting the bytes
as they arrive (a chunked body has no length): an upload is cut at its limit while it streams,
before the multipart parser has spooled more than that.
Server-sent event streams are exempt from the time limit. Under /v2 the errors are the Open
Inference Protocol's `{"error": "..."}`, not problem documents.
"""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gan_platform.settings import Settings
from service.binary_conditions import CONDITION_MEDIA_TYPES, media_type
from service.problems import MEDIA_TYPE, TYPE_BASE

UPLOAD_PATH = "/v1/datasets"
SAMPLES_PATH = re.compile(r"^/v1/models/[^/]+/samples/?$")
INFER_PATH = re.compile(r"^/v2/models/[^/]+(/versions/[^/]+)?/infer/?$")


def is_sampling_body(path: str, headers: dict[bytes, bytes]) -> bool:
    """A POST whose body is binary sampling data (MAX_SAMPLING_BODY_BYTES applies)."""
    if INFER_PATH.match(path):
        return True
    content_type = headers.get(b"content-type", b"").decode("latin-1")
    return bool(SAMPLES_PATH.match(path)) and media_type(content_type) in CONDITION_MEDIA_TYPES


async def _send_problem(send: Send, status: int, title: str, detail: str,
                        type_: str, headers: dict[str, str] | None = None,
                        protocol: bool = False) -> None:
    """A problem document; with `protocol`, the Open Inference Protocol's {"error": ...}."""
    if protocol:
        body, media = json.dumps({"error": detail}).encode(), "application/json"
    else:
        body = json.dumps({"type": TYPE_BASE + type_, "title": title, "status": status,
                           "detail": detail}).encode()
        media = MEDIA_TYPE
    raw = [(b"content-type", media.encode()), (b"content-length", str(len(body)).encode())]
    raw += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


class BodyTooLarge(StarletteHTTPException):
    """Raised from `receive` once a streamed body passes its limit: the multipart parser stops
    there, so at most the limit is spooled, and the client gets a 413."""

    def __init__(self, detail: str) -> None:
        super().__init__(413, detail)


def _counting(receive: Receive, limit: int, detail: str) -> Receive:
    """`receive`, counting the body bytes as they arrive (a chunked upload has no length)."""
    received = 0

    async def counted() -> Message:
        nonlocal received
        message = await receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > limit:
                raise BodyTooLarge(detail)
        return message

    return counted


class LimitsMiddleware:
    def __init__(self, app: ASGIApp, settings_of: Any) -> None:
        self.app = app
        self.settings_of = settings_of  # () -> Settings (the app's, once started)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        settings: Settings = self.settings_of()
        path: str = scope.get("path", "")
        is_upload = scope.get("method") == "POST" and path.rstrip("/") == UPLOAD_PATH
        headers = dict(scope.get("headers") or [])
        is_sampling = scope.get("method") == "POST" and is_sampling_body(path, headers)
        protocol = path == "/v2" or path.startswith("/v2/")
        if is_upload:
            limit, name = settings.MAX_UPLOAD_BYTES + 64 * 1024, "MAX_UPLOAD_BYTES"
        elif is_sampling:
            limit, name = settings.MAX_SAMPLING_BODY_BYTES, "MAX_SAMPLING_BODY_BYTES"
        else:
            limit, name = settings.MAX_BODY_BYTES, "MAX_BODY_BYTES"
        length = headers.get(b"content-length")
        too_large = f"the request body is larger than {name}={limit}"
        if length is not None:
            try:
                declared = int(length)
            except ValueError:
                await _send_problem(send, 400, "Bad Request", "invalid Content-Length",
                                    "bad-request", protocol=protocol)
                return
            if declared > limit:
                await _send_problem(send, 413, "Request body too large", too_large,
                                    "body-too-large", protocol=protocol)
                return

        if not is_upload:
            # Read the (small) body here, counting: a chunked body has no Content-Length.
            chunks: list[bytes] = []
            received = 0
            while True:
                message = await receive()
                if message["type"] != "http.request":
                    break
                chunks.append(message.get("body", b""))
                received += len(chunks[-1])
                if received > limit:
                    await _send_problem(send, 413, "Request body too large", too_large,
                                        "body-too-large", protocol=protocol)
                    return
                if not message.get("more_body", False):
                    break
            replayed = False

            async def replay() -> Message:
                nonlocal replayed
                if not replayed:
                    replayed = True
                    return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
                return await receive()

            receive_next: Receive = replay
        else:
            receive_next = _counting(receive, limit, too_large)
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        if path.endswith("/events") or is_upload:
            await self.app(scope, receive_next, tracking_send)
            return
        try:
            await asyncio.wait_for(self.app(scope, receive_next, tracking_send),
                                   timeout=settings.REQUEST_TIMEOUT_SECONDS)
        except TimeoutError:
            if not started:
                await _send_problem(
                    send, 503, "Request timed out",
                    f"the request took longer than REQUEST_TIMEOUT_SECONDS="
                    f"{settings.REQUEST_TIMEOUT_SECONDS:g}", "timeout",
                    headers={"Retry-After": "1"}, protocol=protocol)
