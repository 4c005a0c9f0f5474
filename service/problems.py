"""Every error as application/problem+json (RFC 9457)."""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger("service")

MEDIA_TYPE = "application/problem+json"
TYPE_BASE = "urn:gan-service:problem:"
# A message that quotes the client's input is cut here: a 100 KB value is not echoed back.
MAX_ECHO = 500


def cut(text: str, limit: int = MAX_ECHO) -> str:
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text) - limit} more characters)"


class Problem(Exception):
    """An error answered as a problem document: raise it from any route."""

    def __init__(
        self,
        status: int,
        detail: str | None = None,
        *,
        title: str | None = None,
        type: str | None = None,
        errors: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
        **extensions: Any,
    ) -> None:
        super().__init__(detail or title or "")
        self.status = status
        self.title = title or HTTPStatus(status).phrase
        self.type = f"{TYPE_BASE}{type}" if type else "about:blank"
        self.detail = detail
        self.errors = errors
        self.headers = headers
        self.extensions = extensions


def not_found(kind: str, ident: str) -> Problem:
    return Problem(404, f"no {kind} with id {ident!r}", title=f"{kind.capitalize()} not found",
                   type="not-found")


def invalid(detail: str, loc: list[str | int], *, msg: str | None = None,
            type: str = "validation-error") -> Problem:
    """422 for one offending field (`loc` as in FastAPI: ['body', 'dataset', 'uri'])."""
    error = {"loc": loc, "field": _field(loc), "msg": msg or detail, "type": type}
    return Problem(422, detail, title="Invalid request", type="validation-error", errors=[error])


def _field(loc: list[Any] | tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc]
    if parts and parts[0] in ("body", "query", "path", "header"):
        parts = parts[1:]
    return ".".join(parts)


def problem_response(
    status: int,
    *,
    title: str | None = None,
    detail: str | None = None,
    type: str = "about:blank",
    instance: str | None = None,
    errors: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
    extensions: dict[str, Any] | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": type,
        "title": title or HTTPStatus(status).phrase,
        "status": status,
    }
    if detail:
        body["detail"] = cut(detail, 4 * MAX_ECHO)
    if instance:
        body["instance"] = instance
    if errors is not None:
        body["errors"] = [{k: cut(v) if isinstance(v, str) else v for k, v in e.items()}
                          for e in errors[:50]]
    body.update(extensions or {})
    return JSONResponse(body, status_code=status, media_type=MEDIA_TYPE, headers=headers)


def _clean_validation_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    errors = []
    for err in exc.errors():
        loc = list(err.get("loc", ()))
        # pydantic puts the union member's tag in the path ('objective', 'wgan-gp', 'gp_lambda'):
        # keep it, it tells which variant was being checked.
        loc = [cut(p, 100) if isinstance(p, str) else p for p in loc]
        errors.append({"loc": loc, "field": cut(_field(loc), 200),
                       "msg": cut(str(err.get("msg", ""))), "type": err.get("type", "")})
    return errors


def install(app: FastAPI) -> None:
    @app.exception_handler(Problem)
    async def _problem(request: Request, exc: Problem) -> JSONResponse:
        return problem_response(
            exc.status, title=exc.title, detail=exc.detail, type=exc.type,
            instance=request.url.path, errors=exc.errors, headers=exc.headers,
            extensions=exc.extensions,
        )

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = _clean_validation_errors(exc)
        shown = "; ".join(f"{e['field'] or 'body'}: {e['msg']}" for e in errors[:5])
        more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
        return problem_response(
            422, title="Invalid request", detail=shown + more,
            type=f"{TYPE_BASE}validation-error", instance=request.url.path, errors=errors,
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail: str | None = exc.detail if isinstance(exc.detail, str) else None
        if detail == HTTPStatus(exc.status_code).phrase:
            detail = None
        return problem_response(exc.status_code, detail=detail, instance=request.url.path,
                                headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unhandled(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return problem_response(500, detail="internal error; see the service log",
                                instance=request.url.path)
