"""The Celery app of the worker: `python -m worker` (or `celery -A worker.app worker ...`).

Chosen for long jobs that must run once and never be lost:
- `task_acks_late`: the message is acknowledged when the job ends, so a worker killed mid-job
  leaves it unacknowledged rather than lost;
- Redis `visibility_timeout` of 7 days (VISIBILITY_TIMEOUT_SECONDS): Redis re-delivers an
  unacknowledged message after it, so it must outlast any job or the job would run twice;
- `worker_prefetch_multiplier=1`, concurrency 1: one job at a time, none held back;
- the database, not Redis, decides who runs a job: a worker claims it with an atomic UPDATE
  and a lease it renews; a message for a job it cannot claim is dropped. A reaper thread in
  every worker re-queues jobs whose lease expired (their worker died) and re-sends jobs whose
  message was lost, so a job survives both a killed worker and a Redis restart.
"""

from __future__ import annotations

from celery import Celery
from kombu import Exchange, Queue

from gan_platform.settings import get_settings

settings = get_settings()

# The tasks module imports this app; Celery imports it (include) when a worker starts.
app = Celery("gan-worker", include=["worker.tasks"])
app.conf.update(settings.celery_config())
app.conf.update(
    task_queues=[Queue(settings.TASK_QUEUE, Exchange(settings.TASK_QUEUE),
                       routing_key=settings.TASK_QUEUE)],
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    worker_concurrency=1,
    # One job at a time; the job itself runs in a child process of this one
    # (worker/job_process.py), which dies with it.
    worker_pool="solo",
    worker_hijack_root_logger=True,
    broker_connection_retry=True,
    broker_connection_max_retries=None,  # wait for Redis to come back, forever
    worker_cancel_long_running_tasks_on_connection_loss=False,
    worker_send_task_events=False,
)
