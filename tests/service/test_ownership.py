"""Ownership: models, reports, plots, ONNX files, uploads and event streams belong to the key
that made them; others get 404; admins see all; a model is shared only when its owner says
so. The documentation routes need a key when keys are configured; scopes fail closed."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import APIRouter, FastAPI
from fastapi.testclient import TestClient

from gan_platform.artifacts import plot_key, report_key
from gan_platform.records import Records
from gan_platform.settings import Settings
from service.auth import PrincipalDep, hash_key
from service.main import create_app
from service.problems import install
from tests.conftest import FAST_SPEC
from tests.service.test_api import make_settings, register_model

KEYS = {"alice": ("alice-key-0123456789", "train+sample"),
        "bob": ("bob-key-0123456789", "train+sample"),
        "reader": ("reader-key-0123456789", "sample"),
        "trainer": ("trainer-key-0123456789", "train"),
        "root": ("root-key-0123456789", "admin")}


def auth(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {KEYS[name][0]}"}


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    entries = [f"{n}:{scopes}:{hash_key(k)}" for n, (k, scopes) in KEYS.items()]
    return make_settings(tmp_path, f"sqlite:///{tmp_path}/own.db", API_KEYS=entries)


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as c:
        yield c


def _with_report(settings: Settings, model_id: str) -> None:
    """Give a registered model a report with one plot, as the worker stores them."""
    from gan_platform.artifacts import ArtifactStore

    records = Records(settings.DATABASE_URL)
    row = records.get_model(model_id)
    assert row is not None
    store = ArtifactStore(settings.ARTIFACT_ROOT)
    png = Path(settings.WORK_ROOT) / "p.png"
    png.parent.mkdir(parents=True, exist_ok=True)
    png.write_bytes(b"\x89PNG fake")
    store.put_file(png, plot_key(model_id, "marginals"))
    store.put_file(png, report_key(model_id))
    from sqlalchemy import update

    from gan_platform.records import models

    with records.engine.begin() as conn:
        conn.execute(update(models).where(models.c.id == model_id).values(
            metadata={**row["metadata"], "report": {"plots": ["marginals"], "auc": 0.5}}))
    records.dispose()


MODEL_ROUTES = ("", "/samples?n=2&seed=1", "/onnx", "/report", "/plots/marginals.png")


def test_a_model_is_its_owners_until_shared(client: TestClient, settings: Settings,
                                            tmp_path: Path) -> None:
    model_id = register_model(settings, tmp_path, owner="alice")
    _with_report(settings, model_id)
    base = f"/v1/models/{model_id}"
    for route in MODEL_ROUTES:
        assert client.get(base + route, headers=auth("alice")).status_code == 200, route
        assert client.get(base + route, headers=auth("root")).status_code == 200, route
        for other in ("bob", "reader"):
            r = client.get(base + route, headers=auth(other))
            assert r.status_code == 404, (route, other, r.text)
    r = client.post(base + "/samples", json={"n": 2}, headers=auth("bob"))
    assert r.status_code == 404
    listed = client.get("/v1/models", headers=auth("bob")).json()
    assert listed["total"] == 0 and listed["items"] == []
    assert client.get("/v1/models", headers=auth("root")).json()["total"] == 1
    mine = client.get("/v1/models", headers=auth("alice")).json()
    assert [m["id"] for m in mine["items"]] == [model_id]
    assert mine["items"][0]["owner"] == "alice"
    assert mine["items"][0]["visibility"] == "private"

    # Only the owner (or an admin) may share it; a sample-only key may not change models.
    assert client.patch(base, json={"visibility": "shared"}, headers=auth("bob")
                        ).status_code == 404
    assert client.patch(base, json={"visibility": "shared"}, headers=auth("reader")
                        ).status_code == 403
    assert client.patch(base, json={"visibility": "public"}, headers=auth("alice")
                        ).status_code == 422
    r = client.patch(base, json={"visibility": "shared"}, headers=auth("alice"))
    assert r.status_code == 200 and r.json()["visibility"] == "shared"
    for route in MODEL_ROUTES:
        assert client.get(base + route, headers=auth("reader")).status_code == 200, route
    assert client.get("/v1/models", headers=auth("bob")).json()["total"] == 1
    # Shared is not owned: bob still cannot change it.
    assert client.patch(base, json={"visibility": "private"}, headers=auth("bob")
                        ).status_code == 404
    assert client.patch(base, json={"visibility": "private"}, headers=auth("root")
                        ).status_code == 200
    assert client.get(base, headers=auth("bob")).status_code == 404


def test_uploads_are_their_owners(client: TestClient) -> None:
    csv = b"a,b\n" + b"".join(f"{i},{i * 3 % 7}\n".encode() for i in range(100))
    r = client.post("/v1/datasets", files={"file": ("d.csv", csv, "text/csv")},
                    headers=auth("alice"))
    assert r.status_code == 201, r.text
    uri, dataset_id = r.json()["uri"], r.json()["id"]
    assert client.get(f"/v1/datasets/{dataset_id}", headers=auth("alice")).status_code == 200
    assert client.get(f"/v1/datasets/{dataset_id}", headers=auth("bob")).status_code == 404
    assert client.get(f"/v1/datasets/{dataset_id}", headers=auth("root")).status_code == 200
    spec = {**FAST_SPEC, "dataset": {"uri": uri}}
    r = client.post("/v1/jobs", json=spec, headers=auth("bob"))
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "dataset.uri", r.text
    assert client.post("/v1/jobs", json=spec, headers=auth("alice")).status_code == 202
    assert client.post("/v1/jobs", json=spec, headers=auth("root")).status_code == 202


def test_the_training_curve_needs_the_train_scope(client: TestClient) -> None:
    job = client.post("/v1/jobs", json=FAST_SPEC, headers=auth("trainer")).json()
    url = f"/v1/jobs/{job['id']}/metrics"
    assert client.get(url, headers=auth("trainer")).status_code == 200
    assert client.get(url, headers=auth("reader")).status_code == 403
    assert client.get(url, headers=auth("bob")).status_code == 404  # another owner's job
    events = f"/v1/jobs/{job['id']}/events"
    assert client.get(events, headers=auth("bob")).status_code == 404


@pytest.mark.parametrize("path", ["/docs", "/redoc", "/openapi.json"])
def test_documentation_needs_a_key_when_keys_are_configured(client: TestClient,
                                                           tmp_path: Path, path: str) -> None:
    assert client.get(path).status_code == 401
    assert client.get(path, headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.get(path, headers=auth("reader")).status_code == 200
    public = make_settings(tmp_path, f"sqlite:///{tmp_path}/pub.db",
                           API_KEYS=[f"x:sample:{hash_key('x-key-0123456789')}"],
                           PUBLIC_DOCS=True)
    with TestClient(create_app(public)) as c:
        assert c.get(path).status_code == 200
    open_api = make_settings(tmp_path, f"sqlite:///{tmp_path}/open.db")
    with TestClient(create_app(open_api)) as c:
        assert c.get(path).status_code == 200


def test_a_route_without_a_scope_check_fails_closed() -> None:
    router = APIRouter()

    @router.get("/unguarded")
    def unguarded(principal: PrincipalDep) -> dict:
        return {"admin": principal.is_admin}

    app = FastAPI()
    install(app)
    app.include_router(router)
    with TestClient(app) as c:
        r = c.get("/unguarded")
    assert r.status_code == 500 and "scope" in r.json()["detail"]


def test_models_of_an_existing_database_are_private(tmp_path: Path) -> None:
    """A database made before models had a visibility gets the column, private."""
    import sqlite3

    db = tmp_path / "old.db"
    Records(f"sqlite:///{db}").dispose()
    with sqlite3.connect(db) as conn:
        conn.execute("ALTER TABLE models DROP COLUMN visibility")
        conn.execute("INSERT INTO jobs (id, status, spec, spec_hash, attempts, created_at) "
                     "VALUES ('j', 'succeeded', '{}', 'h', 1, '2026-01-01 00:00:00')")
        conn.execute("INSERT INTO models (id, job_id, metadata, onnx_uri, onnx_sha256, "
                     f"created_at) VALUES ('{uuid.uuid4()}', 'j', '{{}}', 'u', 's', "
                     "'2026-01-01 00:00:00')")
    records = Records(f"sqlite:///{db}")
    items, total = records.list_models()
    assert total == 1 and items[0]["visibility"] == "private"
    records.dispose()
