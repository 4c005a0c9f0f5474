"""The API: `uvicorn service.main:app` (or `python -m service.launch`, which also starts a
worker and an embedded broker). Never imports torch or the worker's code."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio.to_thread
from fastapi import Depends, FastAPI
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from gan_platform.settings import Settings, get_settings
from service import docs, observability, problems
from service.auth import parse_keys, require
from service.limits import LimitsMiddleware
from service.routers import datasets, jobs, models, objectives, oip, reports, sampling_jobs
from service.state import Services

DESCRIPTION = """Train GANs on tabular, toy or image data and sample them through ONNX Runtime.

Submit a job spec to `POST /v1/jobs`, follow it at `GET /v1/jobs/{id}/events`, then sample the
model it made at `GET /v1/models/{id}/samples`. Every error is `application/problem+json`."""


def create_app(settings: Settings | None = None) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        conf = settings or get_settings()
        observability.configure_logging(conf.LOG_LEVEL, conf.LOG_FORMAT)
        # A malformed API_KEYS entry (a plain key instead of its SHA-256, an unknown scope)
        # stops the start-up here with its reason, instead of failing every request later.
        parse_keys(conf.API_KEYS)
        # Few worker threads: each runnable thread queues for the GIL before the event loop
        # does, so 40 busy threads (anyio's default) kept /healthz waiting for seconds; the
        # requests beyond these wait on the limiter instead, without holding a thread.
        anyio.to_thread.current_default_thread_limiter().total_tokens = conf.API_THREADS
        services = await run_in_threadpool(Services.create, conf)
        app.state.services = services
        try:
            yield
        finally:
            services.close()

    # The documentation routes are added below, behind the API keys when keys are configured.
    app = FastAPI(title="GAN service", version="0.1.0", description=DESCRIPTION,
                  lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    problems.install(app)
    app.add_middleware(LimitsMiddleware, settings_of=lambda: settings or get_settings())
    observability.install(app)  # /readyz, /metrics, request timing and access log
    train, sample = Depends(require("train")), Depends(require("sample"))
    app.include_router(jobs.router, dependencies=[train])
    app.include_router(reports.job_router, dependencies=[train])
    app.include_router(models.router, dependencies=[sample])
    app.include_router(models.owner_router, dependencies=[train])
    app.include_router(datasets.router, dependencies=[train])
    app.include_router(reports.router, dependencies=[sample])
    # Batch sampling jobs: sampling a model, so the `sample` scope (owned like training jobs).
    app.include_router(sampling_jobs.model_router, dependencies=[sample])
    app.include_router(sampling_jobs.router, dependencies=[sample])
    app.include_router(objectives.router, dependencies=[train])
    # /v2: the Open Inference Protocol (KServe V2); its routes check the `sample` scope.
    app.include_router(oip.router)
    docs.install(app)

    @app.get("/healthz", tags=["health"])
    async def healthz() -> JSONResponse:
        """Liveness: 200 while the process serves requests. It checks nothing else (the
        dependencies are /readyz's) and runs on the event loop, never behind queued work."""
        return JSONResponse({"status": "ok"})

    return app


app = create_app()
