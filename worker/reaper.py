"""Recovers jobs whose worker died and jobs whose message was lost.

Runs in a thread of every worker, at start-up and then every REAPER_INTERVAL_SECONDS
(LEASE_SECONDS / 3 by default). Every state change is a guarded UPDATE, so any number of
workers can reap concurrently: each job is re-sent by one of them.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from celery import Celery

from gan_platform.records import Records
from gan_platform.settings import Settings

log = logging.getLogger("worker.reaper")


def broker_queue_size(app: Celery, queue: str) -> int | None:
    """Messages waiting in the broker queue; None if the broker cannot be asked."""
    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1)
            with conn.channel() as channel:
                # Not passive: kombu's passive check misses queues under a global_keyprefix.
                # Declaring our own queue is harmless; the answer carries its length.
                _, count, _ = channel.queue_declare(queue=queue)
                return int(count)
    except Exception:
        log.warning("reaper: cannot reach the broker", exc_info=True)
        return None


def reap_once(records: Records, settings: Settings, app: Celery,
              send: Callable[[str], None]) -> dict[str, list[str]]:
    reaped = records.reap(settings.MAX_ATTEMPTS)
    for job_id in reaped.failed:
        log.warning("job %s failed: its worker was lost %d times", job_id, settings.MAX_ATTEMPTS)
    for job_id in reaped.cancelled:
        log.info("job %s cancelled (its worker was lost while cancelling)", job_id)
    resent: list[str] = []
    for job_id in reaped.requeued:
        log.warning("job %s: its worker stopped renewing the lease; re-sending", job_id)
        send(job_id)
        resent.append(job_id)
    # Queued jobs whose message was lost (Redis restarted without persistence): re-send the
    # ones older than REQUEUE_AFTER_SECONDS, but only while the broker queue is empty; a
    # non-empty queue may still hold their messages behind others.
    queue_empty = broker_queue_size(app, settings.TASK_QUEUE) == 0
    if queue_empty:
        for job_id in records.stale_queued(settings.REQUEUE_AFTER_SECONDS):
            log.warning("job %s queued with no message in the broker; re-sending", job_id)
            send(job_id)
            resent.append(job_id)
    # Batch sampling jobs: their plans and chunks, by the same rules (worker/sampling.py).
    from worker.sampling import reap as reap_sampling

    sampling = reap_sampling(records, settings, app, queue_empty)
    return {"resent": resent, "failed": reaped.failed, "cancelled": reaped.cancelled,
            **sampling}


class Reaper(threading.Thread):
    def __init__(self, records: Records, settings: Settings, app: Celery,
                 send: Callable[[str], None]) -> None:
        super().__init__(name="reaper", daemon=True)
        self.records, self.settings, self.app, self.send = records, settings, app, send
        self.stopped = threading.Event()

    def run(self) -> None:
        while True:
            try:
                reap_once(self.records, self.settings, self.app, self.send)
            except Exception:
                log.exception("reaper pass failed")
            if self.settings.WORKER_HEALTH_FILE is not None:
                try:
                    self.settings.WORKER_HEALTH_FILE.touch()
                except OSError:
                    log.warning("cannot touch %s", self.settings.WORKER_HEALTH_FILE)
            if self.stopped.wait(self.settings.reaper_interval):
                return

    def stop(self) -> None:
        self.stopped.set()
