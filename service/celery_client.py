"""The API's side of the queue: a tiny Celery app that only sends tasks, by name.

The API never imports the worker's code (nor torch): it sends "train" with the job id.
"""

from __future__ import annotations

import logging

from celery import Celery

from gan_platform.settings import Settings

log = logging.getLogger("service")

TRAIN_TASK = "train"


def make_sender(settings: Settings) -> Celery:
    app = Celery("gan-service-api", set_as_current=False)
    app.conf.update(settings.celery_config())
    return app


def send_train(app: Celery, settings: Settings, job_id: str) -> bool:
    """Publish a train message. False if the broker could not be reached: the job stays
    queued in the database and a worker's reaper sends it again later."""
    if not settings.broker_url:
        log.error("no broker configured (REDIS_URL unset): job %s waits for a reaper", job_id)
        return False
    try:
        app.send_task(TRAIN_TASK, args=[job_id], queue=settings.TASK_QUEUE)
        return True
    except Exception:  # the broker is down: the database still has the job
        log.exception("could not send job %s to the broker; a reaper will re-send it", job_id)
        return False
