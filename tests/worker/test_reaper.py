"""The reaper against the real Redis: lapsed leases are re-sent, lost messages are re-sent
only while the broker queue is empty (a full queue may still hold them)."""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path

import pytest
from celery import Celery
from sqlalchemy import update

from gan_platform.records import Records, jobs, utcnow
from gan_platform.settings import Settings
from tests.conftest import FAST_SPEC, RedisSpace
from worker.reaper import broker_queue_size, reap_once


@pytest.fixture
def broker(tmp_path: Path, redis_space: RedisSpace):  # type: ignore[no-untyped-def]
    settings = Settings(DATABASE_URL=f"sqlite:///{tmp_path / 'db.sqlite'}",
                        REDIS_URL=redis_space.url, REDIS_KEY_PREFIX=redis_space.prefix,
                        TASK_QUEUE=redis_space.queue, REQUEUE_AFTER_SECONDS=0.05,
                        MAX_ATTEMPTS=2)
    app = Celery("test", set_as_current=False)
    app.conf.update(settings.celery_config())
    yield settings, app
    app.close()


def test_reaper_resends(broker) -> None:  # type: ignore[no-untyped-def]
    settings, app = broker
    records = Records(settings.DATABASE_URL)
    sent: list[str] = []

    def send(job_id: str) -> None:
        sent.append(job_id)
        app.send_task("train", args=[job_id], queue=settings.TASK_QUEUE)

    assert broker_queue_size(app, settings.TASK_QUEUE) == 0
    lost = records.create_job(FAST_SPEC, "h")[0]["id"]  # its message never sent
    time.sleep(0.1)
    assert reap_once(records, settings, app, send)["resent"] == [lost]
    assert broker_queue_size(app, settings.TASK_QUEUE) == 1
    time.sleep(0.1)
    # the queue holds a message now: nothing more is re-sent while it waits
    assert reap_once(records, settings, app, send)["resent"] == []
    # a lapsed lease: re-sent, then failed at MAX_ATTEMPTS
    dead = records.create_job(FAST_SPEC, "h")[0]["id"]
    for attempt in (1, 2):
        assert records.claim(dead, f"w{attempt}", 60, settings.MAX_ATTEMPTS)
        with records.engine.begin() as conn:
            conn.execute(update(jobs).where(jobs.c.id == dead)
                         .values(lease_until=utcnow() - timedelta(seconds=1)))
        result = reap_once(records, settings, app, send)
        if attempt == 1:
            assert dead in result["resent"]
        else:
            assert result["failed"] == [dead]
    assert sent.count(dead) == 1
    records.dispose()


def test_queue_size_when_broker_down() -> None:
    app = Celery("test", set_as_current=False)
    app.conf.update(Settings(REDIS_URL="redis://127.0.0.1:1/0").celery_config())
    assert broker_queue_size(app, "gpu") is None
