"""The reaper against the real Redis: lapsed leases are re-sent, lost messages are re-sent
only while the broker queue is empty (a full queue may still hold them)."""

from __future__ import annotations

import time
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from celery import Celery
from sqlalchemy import update

from gan_platform.records import Records, jobs, utcnow
from gan_platform.settings import Settings
from tests.conftest import FAST_SPEC, TEST_REDIS_URL, redis_up
from worker.reaper import broker_queue_size, reap_once


@pytest.fixture
def broker(tmp_path: Path):  # type: ignore[no-untyped-def]
    if not redis_up():
        pytest.skip(f"Redis not reachable at {TEST_REDIS_URL}")
    import redis

    prefix = f"gantest-{uuid.uuid4().hex[:8]}:"
    settings = Settings(DATABASE_URL=f"sqlite:///{tmp_path / 'db.sqlite'}",
                        REDIS_URL=TEST_REDIS_URL, REDIS_KEY_PREFIX=prefix,
                        TASK_QUEUE=f"q-{uuid.uuid4().hex[:8]}", REQUEUE_AFTER_SECONDS=0.05,
                        MAX_ATTEMPTS=2)
    app = Celery("test", set_as_current=False)
    app.conf.update(settings.celery_config())
    yield settings, app
    app.close()
    r = redis.Redis.from_url(TEST_REDIS_URL)
    keys = list(r.scan_iter(f"{prefix}*"))
    if keys:
        r.delete(*keys)


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
