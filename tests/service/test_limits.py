"""Limits, each answered with a clear 4xx problem: body size, n, upload size, queued jobs per
key, training steps, and the request time limit."""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from gan_platform.settings import Settings
from service.auth import hash_key
from service.main import create_app
from tests.conftest import FAST_SPEC, fast_spec
from tests.service.test_api import make_settings, register_model

KEY = "limits-key-0123456789"
H = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(
        tmp_path, f"sqlite:///{tmp_path}/limits.db",
        API_KEYS=[f"lim:train+sample:{hash_key(KEY)}"],
        MAX_BODY_BYTES=4096, MAX_UPLOAD_BYTES=2048, MAX_QUEUED_JOBS_PER_KEY=2,
        MAX_TRAINING_STEPS=5000, MAX_SAMPLES_PER_REQUEST=100,
    )


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as c:
        yield c


def _problem(r, status: int, word: str) -> None:  # type: ignore[no-untyped-def]
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert word in r.json()["detail"]


def test_body_too_large_by_length_and_chunked(client: TestClient) -> None:
    big = b'{"objective": "wgan-gp", "pad": "' + b"x" * 10_000 + b'"}'
    r = client.post("/v1/jobs", content=big, headers={**H, "Content-Type": "application/json"})
    _problem(r, 413, "MAX_BODY_BYTES")

    def chunks() -> Iterator[bytes]:  # no Content-Length
        for _ in range(10):
            yield b" " * 1000
    r = client.post("/v1/jobs", content=chunks(), headers={**H, "Content-Type": "application/json"})
    _problem(r, 413, "MAX_BODY_BYTES")


def test_upload_too_large(client: TestClient) -> None:
    data = b"x,y\n" + b"1.0,2.0\n" * 1000
    r = client.post("/v1/datasets", files={"file": ("d.csv", io.BytesIO(data), "text/csv")},
                    headers=H)
    _problem(r, 413, "MAX_UPLOAD_BYTES")


def test_n_per_sampling_request(client: TestClient, settings: Settings, tmp_path: Path) -> None:
    model_id = register_model(settings, tmp_path, owner="lim")
    _problem(client.get(f"/v1/models/{model_id}/samples?n=101", headers=H), 422,
             "MAX_SAMPLES_PER_REQUEST")
    assert client.get(f"/v1/models/{model_id}/samples?n=100", headers=H).status_code == 200


def test_training_steps(client: TestClient) -> None:
    _problem(client.post("/v1/jobs", json=fast_spec(steps=5001), headers=H), 422,
             "MAX_TRAINING_STEPS")


def test_queued_jobs_per_key(client: TestClient) -> None:
    for _ in range(2):
        assert client.post("/v1/jobs", json=FAST_SPEC, headers=H).status_code == 202
    r = client.post("/v1/jobs", json=FAST_SPEC, headers=H)
    _problem(r, 429, "MAX_QUEUED_JOBS_PER_KEY")
    assert r.headers["retry-after"]
    first = client.get("/v1/jobs", headers=H).json()["items"][0]
    client.post(f"/v1/jobs/{first['id']}/cancel", headers=H)
    assert client.post("/v1/jobs", json=FAST_SPEC, headers=H).status_code == 202


def test_request_timeout(tmp_path: Path) -> None:
    conf = make_settings(tmp_path, f"sqlite:///{tmp_path}/t.db", REQUEST_TIMEOUT_SECONDS=0.5)
    app = create_app(conf)

    @app.get("/slow-for-test")
    async def slow() -> dict:
        import asyncio
        await asyncio.sleep(5)
        return {}

    with TestClient(app) as c:
        t0 = time.monotonic()
        r = c.get("/slow-for-test")
        assert time.monotonic() - t0 < 3
        _problem(r, 503, "REQUEST_TIMEOUT_SECONDS")
        assert c.get("/healthz").status_code == 200
