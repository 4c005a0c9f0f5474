"""The API: `uvicorn service.main:app` (or `python -m service.launch`, which also starts a
worker and an embedded broker). Never imports torch or the worker's code."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI
from fastapi.responses import JSONResponse
from sqlalchemy import text
from starlette.concurrency import run_in_threadpool

from models.settings import Settings, get_settings
from service import observability, problems
from service.auth import require
from service.deps import ServicesDep
from service.limits import LimitsMiddleware
from service.routers import datasets, jobs, models, objectives, reports
from service.state import Services

DESCRIPTION = """Train GANs on tabular, toy or image data and sample them through ONNX Runtime.

Submit a job spec to `POST /v1/jobs`, follow it at `GET /v1/jobs/{id}/events`, then sample the
model it made at `GET /v1/models/{id}/samples`. Every error is `application/problem+json`."""


def create_app(settings: Settings | None = None) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        conf = settings or get_settings()
        observability.configure_logging(conf.LOG_LEVEL, conf.LOG_FORMAT)
        services = await run_in_threadpool(Services.create, conf)
        app.state.services = services
        try:
            yield
        finally:
            services.close()

    app = FastAPI(title="GAN service", version="0.1.0", description=DESCRIPTION,
                  lifespan=lifespan)
    problems.install(app)
    app.add_middleware(LimitsMiddleware, settings_of=lambda: settings or get_settings())
    observability.install(app)  # /readyz, /metrics, request timing and access log
    app.include_router(jobs.router, dependencies=[Depends(require("train"))])
    app.include_router(models.router, dependencies=[Depends(require("sample"))])
    app.include_router(datasets.router, dependencies=[Depends(require("train"))])
    app.include_router(reports.router, dependencies=[Depends(require("sample"))])
    app.include_router(objectives.router, dependencies=[Depends(require("train"))])

    @app.get("/healthz", tags=["health"])
    def healthz(services: ServicesDep) -> JSONResponse:
        """200 when the database answers (the broker is not needed to accept jobs)."""
        try:
            with services.records.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except Exception as exc:
            return problems.problem_response(503, detail=f"database unreachable: {exc}")
        return JSONResponse({"status": "ok", "database": "ok",
                             "broker": "configured" if services.settings.broker_url else "none"})

    return app


app = create_app()
