"""Access control: API keys hashed in settings, scopes, 401/403, owners, per-owner views."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from gan_platform.settings import Settings
from service.auth import hash_key, parse_keys
from service.main import create_app
from tests.conftest import FAST_SPEC
from tests.service.test_api import make_settings, register_model

KEYS = {"alice": ("alice-key-0123456789", "train+sample"),
        "bob": ("bob-key-0123456789", "train+sample"),
        "sampler": ("sampler-key-0123456789", "sample"),
        "root": ("root-key-0123456789", "admin")}


def auth(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {KEYS[name][0]}"}


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    entries = [f"{n}:{scopes}:{hash_key(k)}" for n, (k, scopes) in KEYS.items()]
    return make_settings(tmp_path, f"sqlite:///{tmp_path}/auth.db", API_KEYS=entries)


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as c:
        yield c


def test_keys_are_stored_hashed_only(settings: Settings) -> None:
    for _, (key, _) in KEYS.items():
        assert not any(key in entry for entry in settings.API_KEYS)
    with pytest.raises(ValueError, match="SHA-256"):
        parse_keys(["alice:train:alice-key-0123456789"])  # a plain key is refused
    with pytest.raises(ValueError, match="scopes"):
        parse_keys([f"x:root:{hash_key('k')}"])


def test_401_without_or_with_a_wrong_key(client: TestClient) -> None:
    for path in ("/v1/jobs", "/v1/models", "/v1/jobs/x", "/v1/datasets/x"):
        r = client.get(path)
        assert r.status_code == 401, path
        assert r.headers["content-type"].startswith("application/problem+json")
        assert r.headers["www-authenticate"].startswith("Bearer")
        assert client.get(path, headers={"Authorization": "Bearer nope"}).status_code == 401
    assert client.post("/v1/jobs", json=FAST_SPEC).status_code == 401
    assert client.get("/healthz").status_code == 200  # health needs no key


def test_403_for_a_key_without_the_scope(client: TestClient) -> None:
    r = client.post("/v1/jobs", json=FAST_SPEC, headers=auth("sampler"))
    assert r.status_code == 403 and "train" in r.json()["detail"]
    assert client.get("/v1/jobs", headers=auth("sampler")).status_code == 403
    assert client.get("/v1/models", headers=auth("sampler")).status_code == 200


def test_owner_recorded_and_non_admin_sees_and_cancels_only_its_own(client: TestClient) -> None:
    a = client.post("/v1/jobs", json=FAST_SPEC, headers=auth("alice"))
    assert a.status_code == 202, a.text
    job = a.json()
    assert job["owner"] == "alice"
    b = client.post("/v1/jobs", json=FAST_SPEC, headers=auth("bob")).json()
    assert b["owner"] == "bob"

    mine = client.get("/v1/jobs", headers=auth("alice")).json()
    assert [j["id"] for j in mine["items"]] == [job["id"]] and mine["total"] == 1
    assert client.get(f"/v1/jobs/{job['id']}", headers=auth("bob")).status_code == 404
    assert client.get(f"/v1/jobs/{job['id']}/events", headers=auth("bob")).status_code == 404
    assert client.post(f"/v1/jobs/{job['id']}/cancel", headers=auth("bob")).status_code == 404
    assert client.get(f"/v1/jobs/{job['id']}/metrics", headers=auth("bob")).status_code == 404
    assert client.get(f"/v1/jobs/{job['id']}/metrics", headers=auth("alice")).status_code == 200
    assert client.get(f"/v1/jobs/{job['id']}", headers=auth("alice")).json()["status"] == "queued"

    everyone = client.get("/v1/jobs", headers=auth("root")).json()
    assert {j["id"] for j in everyone["items"]} == {job["id"], b["id"]}
    r = client.post(f"/v1/jobs/{job['id']}/cancel", headers=auth("alice"))
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    r = client.post(f"/v1/jobs/{b['id']}/cancel", headers=auth("root"))  # admin: any job
    assert r.status_code == 200


def test_idempotency_key_of_another_owner_does_not_leak(client: TestClient) -> None:
    h = {"Idempotency-Key": "shared-1"}
    first = client.post("/v1/jobs", json=FAST_SPEC, headers={**h, **auth("alice")})
    assert first.status_code == 202
    again = client.post("/v1/jobs", json=FAST_SPEC, headers={**h, **auth("bob")})
    assert again.status_code == 422 and first.json()["id"] not in again.text


def test_models_readable_with_the_sample_scope(client: TestClient, settings: Settings,
                                               tmp_path: Path) -> None:
    model_id = register_model(settings, tmp_path, owner="sampler")
    assert client.get(f"/v1/models/{model_id}/samples?n=3").status_code == 401
    r = client.get(f"/v1/models/{model_id}/samples?n=3&seed=1", headers=auth("sampler"))
    assert r.status_code == 200 and len(r.json()["data"]) == 3


def test_auth_required_without_keys_refuses(tmp_path: Path) -> None:
    conf = make_settings(tmp_path, f"sqlite:///{tmp_path}/req.db", AUTH_REQUIRED=True)
    with TestClient(create_app(conf)) as c:
        assert c.get("/v1/jobs").status_code == 401
        assert c.get("/healthz").status_code == 200


def test_open_without_keys(tmp_path: Path) -> None:
    conf = make_settings(tmp_path, f"sqlite:///{tmp_path}/open.db")
    with TestClient(create_app(conf)) as c:
        assert c.get("/v1/jobs").status_code == 200


def test_compose_turns_auth_on() -> None:
    import yaml

    from tests.conftest import ROOT

    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    env = compose["services"]["api"]["environment"]
    assert str(env["AUTH_REQUIRED"]).lower() == "true"
    assert "API_KEYS" in env


def test_launcher_refuses_open_on_a_non_loopback_address(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    from tests.conftest import ROOT

    env = {k: v for k, v in os.environ.items() if k != "API_KEYS"}
    env.update(API_HOST="0.0.0.0", GAN_VAR=str(tmp_path / "var"),
               DATABASE_URL=f"sqlite:///{tmp_path}/l.db", REDIS_URL="redis://127.0.0.1:1/0")
    r = subprocess.run([sys.executable, "-m", "service.launch"], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "API_KEYS" in r.stderr


def test_a_plain_key_in_the_settings_stops_the_start_up(tmp_path: Path) -> None:
    conf = make_settings(tmp_path, f"sqlite:///{tmp_path}/bad.db",
                         API_KEYS=["alice:train:not-a-sha256-digest"])
    with pytest.raises(ValueError, match="SHA-256"), TestClient(create_app(conf)):
        pass
