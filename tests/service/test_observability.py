"""/healthz, /readyz, /metrics and the JSON access log."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from fastapi.testclient import TestClient

from gan_platform.records import Records
from service.auth import hash_key
from service.main import create_app
from service.observability import JsonFormatter
from tests.conftest import FAST_SPEC, RedisSpace
from tests.service.test_api import make_settings, register_model

ADMIN = "obs-admin-key-0123456789"
USER = "obs-user-key-0123456789"
KEYS = [f"root:admin:{hash_key(ADMIN)}", f"u:train+sample:{hash_key(USER)}"]


def test_metrics(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, f"sqlite:///{tmp_path}/m.db", API_KEYS=KEYS)
    model_id = register_model(settings, tmp_path, owner="u")
    with TestClient(create_app(settings)) as c:
        user = {"Authorization": f"Bearer {USER}"}
        assert c.post("/v1/jobs", json=FAST_SPEC, headers=user).status_code == 202
        r = c.get(f"/v1/models/{model_id}/samples?n=50&seed=1", headers=user)
        assert r.status_code == 200
        assert c.get("/metrics").status_code == 401
        assert c.get("/metrics", headers=user).status_code == 403
        text = c.get("/metrics", headers={"Authorization": f"Bearer {ADMIN}"}).text
    assert 'gan_http_request_duration_seconds_count{method="POST",route="/v1/jobs",' \
           'status="202"} 1.0' in text
    assert 'route="/v1/models/{model_id}/samples"' in text
    assert 'gan_jobs{state="queued"} 1.0' in text
    assert 'gan_jobs{state="succeeded"} 1.0' in text
    assert "gan_sampled_rows_total 50.0" in text
    assert "gan_sampling_rows_per_second" in text


def test_readyz_without_broker_is_503_and_healthz_200(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, f"sqlite:///{tmp_path}/r.db")
    with TestClient(create_app(settings)) as c:
        assert c.get("/healthz").status_code == 200
        r = c.get("/readyz")
        assert r.status_code == 503 and r.json()["checks"]["broker"] == "not configured"


def test_readyz_needs_a_worker(tmp_path: Path, redis_space: RedisSpace) -> None:
    settings = make_settings(tmp_path, f"sqlite:///{tmp_path}/w.db", REDIS_URL=redis_space.url,
                             TASK_QUEUE=redis_space.queue, REDIS_KEY_PREFIX=redis_space.prefix)
    with TestClient(create_app(settings)) as c:
        r = c.get("/readyz")
        assert r.status_code == 503, r.text
        checks = r.json()["checks"]
        assert checks["database"] == "ok" and checks["broker"] == "ok"
        assert "worker" in r.json()["detail"]
        # A worker holding a live lease (busy, so it would not answer a ping) counts.
        records = Records(settings.DATABASE_URL)
        job, _ = records.create_job(FAST_SPEC, "h" * 64)
        assert records.claim(job["id"], "w1", 60, 3) is not None
        r = c.get("/readyz")
        assert r.status_code == 200, r.text
        records.dispose()


def test_json_log_lines_carry_the_job_id() -> None:
    record = logging.LogRecord("worker", logging.INFO, __file__, 1, "job %s claimed",
                               ("abc",), None)
    record.job_id = "11111111-2222-3333-4444-555555555555"
    line = json.loads(JsonFormatter().format(record))
    assert line["job_id"] == record.job_id and line["msg"] == "job abc claimed"
    assert line["level"] == "INFO" and line["ts"].endswith("Z")
