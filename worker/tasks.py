"""The "train" task (sent by name by the API) and the worker's start-up and shut-down hooks."""

from __future__ import annotations

import logging
from typing import Any

from celery import signals

from worker import runner
from worker.app import app
from worker.reaper import Reaper

log = logging.getLogger("worker")

_reaper: Reaper | None = None


def resend(job_id: str) -> None:
    app.send_task("train", args=[job_id], queue=app.conf.task_default_queue)
    try:
        runner.context(resend).records.mark_enqueued(job_id)
    except Exception:
        log.exception("job %s: could not record the re-send", job_id)


@app.task(name="train", acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def train(job_id: str) -> str:
    """Run job `job_id` if this worker can claim it; otherwise drop the message."""
    return runner.run(runner.context(resend), job_id)


def _send_chunk(job_id: str, chunk: int) -> None:
    from worker import sampling

    sampling.send_chunk(app, job_id, chunk)


@app.task(name="sampling_plan", acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def sampling_plan(job_id: str) -> str:
    """Plan batch sampling job `job_id` and queue its chunks (worker/sampling.py)."""
    from worker import sampling

    return sampling.plan(runner.context(resend), job_id, _send_chunk)


@app.task(name="sample_chunk", acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def sample_chunk(job_id: str, chunk: int) -> str:
    """Sample one chunk of batch sampling job `job_id` if this worker can claim it."""
    from worker import sampling

    return sampling.run_chunk(runner.context(resend), job_id, chunk, _send_chunk)


@signals.after_setup_logger.connect
def _json_logs(logger: logging.Logger, **_: Any) -> None:
    """LOG_FORMAT=json: one JSON object a line, with the job id (service/logs.py)."""
    from gan_platform.settings import get_settings

    if get_settings().LOG_FORMAT == "json":
        from gan_platform.logs import JsonFormatter

        for handler in logger.handlers:
            handler.setFormatter(JsonFormatter())


@signals.worker_ready.connect
def _start_reaper(**_: Any) -> None:
    global _reaper
    ctx = runner.context(resend)
    _reaper = Reaper(ctx.records, ctx.settings, app, resend)
    _reaper.start()
    log.info("reaper started (every %.1fs)", ctx.settings.reaper_interval)


@signals.worker_shutting_down.connect
def _shutting_down(**_: Any) -> None:
    # The running job (if any) stops at its next step and is handed back (runner.run).
    runner.SHUTTING_DOWN.set()
    if _reaper is not None:
        _reaper.stop()
