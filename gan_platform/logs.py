"""Structured logs: LOG_FORMAT=json writes one JSON object a line, with the job id where known.

Dependency-free (the worker imports it too). The API sets JOB_ID from the request path; the
worker sets it around each job, so every line a job's code logs carries its `job_id`.
"""

from __future__ import annotations

import contextvars
import json
import logging
import time
from typing import Any

# The job a log line is about (set by the worker around a job, by the API from the path).
JOB_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("job_id", default=None)


class JsonFormatter(logging.Formatter):
    FIELDS = ("job_id", "method", "path", "status", "duration_s", "key", "request_id")

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        job_id = getattr(record, "job_id", None) or JOB_ID.get()
        if job_id:
            out["job_id"] = job_id
        for name in self.FIELDS[1:]:
            value = getattr(record, name, None)
            if value is not None:
                out[name] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def configure_logging(level: str, fmt: str) -> None:
    """`fmt`: "json" (one object a line) or "text"."""
    root = logging.getLogger()
    if fmt == "json":
        handler = logging.StreamHandler()
        handler.setFormatter(JsonFormatter())
        root.handlers[:] = [handler]
        root.setLevel(level)
    else:
        logging.basicConfig(level=level, format="%(asctime)s %(name)s %(message)s")
