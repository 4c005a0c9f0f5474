"""Health, readiness, Prometheus metrics and structured (JSON) logs. Torch-free.

- `GET /healthz`: the process is alive (no dependency checked: a liveness probe).
- `GET /readyz`: the database answers, the broker answers, and at least one worker is
  reachable (it answers a Celery ping, or holds a live lease on a running job: a solo-pool
  worker in the middle of a job cannot answer pings). 503 with the failing parts otherwise.
- `GET /metrics`: Prometheus text format (scope `admin` when keys are configured):
  `gan_http_request_duration_seconds{method,route,status}`, `gan_jobs{state}`,
  `gan_broker_queue_depth`, `gan_sampled_rows_total`, `gan_sampling_rows_per_second`,
  `gan_gpu_memory_used_bytes{gpu}` (when NVML can be loaded).
- Logs: `LOG_FORMAT=json` gives one JSON object per line with `ts`, `level`, `logger`, `msg`
  and, where known, `job_id`, `method`, `path`, `status`, `duration_s`, `key`.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterable
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import exc as sa_exc
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gan_platform.logs import JOB_ID, JsonFormatter, configure_logging
from gan_platform.records import STATUSES
from service import problems
from service.auth import require

log = logging.getLogger("service.access")
_JOB_PATH = re.compile(r"/v1/jobs/([0-9a-fA-F-]{36})")

__all__ = ["JOB_ID", "JsonFormatter", "configure_logging", "install"]

class Metrics:
    """One registry per app (several apps live in one test process)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Histogram(
            "gan_http_request_duration_seconds", "HTTP request latency",
            ["method", "route", "status"], registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
        )
        self.sampled_rows = Counter("gan_sampled_rows", "rows returned by sampling requests",
                                    registry=self.registry)
        self.rows_per_second = Gauge("gan_sampling_rows_per_second",
                                     "rows/s of the last sampling request",
                                     registry=self.registry)


class StateCollector(Collector):
    """Read at scrape time: jobs by state, broker queue depth, GPU memory."""

    def __init__(self, app: Any) -> None:
        self.app = app

    def collect(self) -> Iterable[GaugeMetricFamily]:
        services = getattr(self.app.state, "services", None)
        if services is None:
            return
        by_state = GaugeMetricFamily("gan_jobs", "jobs by state", labels=["state"])
        try:
            counts = services.records.count_by_status()
            for state in STATUSES:
                by_state.add_metric([state], float(counts.get(state, 0)))
            yield by_state
        except Exception:
            log.warning("metrics: database unreachable")
        depth = broker_queue_size(services)
        if depth is not None:
            yield GaugeMetricFamily("gan_broker_queue_depth", "train messages waiting",
                                    value=float(depth))
        gpu = GaugeMetricFamily("gan_gpu_memory_used_bytes", "GPU memory in use",
                                labels=["gpu"])
        found = False
        for index, used in gpu_memory():
            gpu.add_metric([str(index)], float(used))
            found = True
        if found:
            yield gpu


def gpu_memory() -> list[tuple[int, int]]:
    try:
        import pynvml  # nvidia-ml-py, optional
    except ImportError:
        return []
    try:
        pynvml.nvmlInit()
        return [(i, int(pynvml.nvmlDeviceGetMemoryInfo(pynvml.nvmlDeviceGetHandleByIndex(i)).used))
                for i in range(pynvml.nvmlDeviceGetCount())]
    except Exception:
        return []


def broker_queue_size(services: Any) -> int | None:
    settings = services.settings
    if not settings.broker_url:
        return None
    try:
        with services.sender.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
            with conn.channel() as channel:
                _, count, _ = channel.queue_declare(queue=settings.TASK_QUEUE)
                return int(count)
    except Exception:
        return None


class ObservabilityMiddleware:
    """Times every request (by route template) and writes one access log line."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500
        rows = 0
        match = _JOB_PATH.match(scope.get("path", ""))
        token = JOB_ID.set(match.group(1) if match else None)

        async def tracking_send(message: Message) -> None:
            nonlocal status, rows
            if message["type"] == "http.response.start":
                status = message["status"]
                for key, value in message.get("headers", []):
                    if key == b"x-rows":
                        rows = int(value)
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        finally:
            elapsed = time.perf_counter() - start
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            self.metrics.requests.labels(scope["method"], route, str(status)).observe(elapsed)
            if rows and status == 200:
                self.metrics.sampled_rows.inc(rows)
                self.metrics.rows_per_second.set(rows / max(elapsed, 1e-9))
            principal = (scope.get("state") or {}).get("principal")
            log.info("%s %s %d %.4fs", scope["method"], scope.get("path"), status, elapsed,
                     extra={"method": scope["method"], "path": scope.get("path"),
                            "status": status, "duration_s": round(elapsed, 6),
                            "key": getattr(principal, "name", None)})
            JOB_ID.reset(token)


def _worker_reachable(services: Any) -> str | None:
    """None when some worker is reachable, else why not."""
    if services.records.live_leases():
        return None
    try:
        replies = services.sender.control.ping(timeout=1.0)
    except Exception as exc:
        return f"cannot ping workers: {type(exc).__name__}"
    return None if replies else "no worker answered a ping within 1 s"


def _artifact_store_check(store: Any) -> str:
    """"ok" when the artifact store can be written and read back (a small probe object)."""
    import io

    key = "_readyz/probe"
    try:
        store.put_stream(io.BytesIO(b"ok"), key)
        with store.open(key) as f:
            if f.read() != b"ok":
                return "unreadable: the probe came back different"
        return "ok"
    except Exception as exc:
        return f"unreachable: {type(exc).__name__}"


def _database_down(exc: Exception) -> bool:
    if isinstance(exc, sa_exc.TimeoutError):  # the connection pool is exhausted or stuck
        return True
    return isinstance(exc, sa_exc.DBAPIError) and (
        exc.connection_invalidated
        or isinstance(exc, (sa_exc.OperationalError, sa_exc.InterfaceError)))


def install(app: Any) -> None:
    async def _db_error(request: Request, exc: Exception) -> Response:
        if not _database_down(exc):
            log.error("database error on %s %s", request.method, request.url.path,
                      exc_info=exc)
            return problems.problem_response(500, detail="internal error; see the service log",
                                             instance=request.url.path)
        log.warning("database unavailable on %s %s: %s", request.method, request.url.path,
                    type(exc).__name__)
        return problems.problem_response(
            503, title="Database unavailable", type=problems.TYPE_BASE + "database-unavailable",
            detail="the database cannot be reached; retry shortly",
            instance=request.url.path, headers={"Retry-After": "2"})

    app.add_exception_handler(sa_exc.DBAPIError, _db_error)
    app.add_exception_handler(sa_exc.TimeoutError, _db_error)
    metrics = Metrics()
    metrics.registry.register(StateCollector(app))
    app.state.metrics = metrics
    app.add_middleware(ObservabilityMiddleware, metrics=metrics)
    router = APIRouter(tags=["health"])

    @router.get("/readyz")
    def readyz(request: Request) -> JSONResponse:
        """200 when the database, the broker, the artifact store and at least one worker
        answer; else 503 naming the parts that do not (never a driver's raw message)."""
        services = request.app.state.services
        checks: dict[str, str] = {}
        try:
            services.records.ping()
            checks["database"] = "ok"
        except Exception as exc:
            checks["database"] = f"unreachable: {type(exc).__name__}"
        if not services.settings.broker_url:
            checks["broker"] = "not configured"
        else:
            try:
                with services.sender.connection_for_write() as conn:
                    conn.ensure_connection(max_retries=1, timeout=2)
                checks["broker"] = "ok"
            except Exception as exc:
                checks["broker"] = f"unreachable: {type(exc).__name__}"
        checks["artifacts"] = _artifact_store_check(services.store)
        if checks["database"] == "ok" and checks["broker"] == "ok":
            try:
                checks["worker"] = _worker_reachable(services) or "ok"
            except Exception as exc:
                checks["worker"] = f"unknown: {type(exc).__name__}"
        else:
            checks["worker"] = "not checked"
        if all(v == "ok" for v in checks.values()):
            return JSONResponse({"status": "ready", **checks})
        return problems.problem_response(503, detail="not ready: " + ", ".join(
            f"{k} {v}" for k, v in checks.items() if v != "ok"), extensions={"checks": checks})

    @router.get("/metrics", dependencies=[Depends(require("admin"))],
                response_class=Response,
                responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}})
    async def metrics_endpoint() -> Response:
        """Prometheus text format."""
        body = await run_in_threadpool(generate_latest, metrics.registry)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    app.include_router(router)
