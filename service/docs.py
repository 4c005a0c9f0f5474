"""/docs, /redoc and /openapi.json: open when the API is open, behind an API key (any scope)
when keys are configured, unless PUBLIC_DOCS says they may be public."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.security import HTTPAuthorizationCredentials

from service.auth import Principal, authenticate, bearer


async def docs_reader(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Principal | None:
    settings = request.app.state.services.settings
    if settings.PUBLIC_DOCS:
        return None
    principal = authenticate(settings, credentials.credentials if credentials else None)
    request.state.principal = principal
    return principal


def install(app: FastAPI) -> None:
    guard = [Depends(docs_reader)]

    @app.get("/openapi.json", include_in_schema=False, dependencies=guard)
    async def openapi() -> JSONResponse:
        return JSONResponse(app.openapi())

    @app.get("/docs", include_in_schema=False, dependencies=guard)
    async def swagger() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/openapi.json", title=f"{app.title} - docs")

    @app.get("/redoc", include_in_schema=False, dependencies=guard)
    async def redoc() -> HTMLResponse:
        return get_redoc_html(openapi_url="/openapi.json", title=f"{app.title} - ReDoc")
