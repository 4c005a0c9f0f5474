"""Categorical conditions through the API (in-process, SQLite): sampling by value with GET and
POST, 422 for an unknown category listing the known ones, and a CSV upload with a string
condition column that trains (the worker's own code, in-process), samples and reports."""

from __future__ import annotations

import copy
import io
import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from torch import Tensor, nn

from gan_platform.artifacts import ArtifactStore, model_key, sha256_file
from gan_platform.records import Records
from gan_platform.settings import Settings
from models.export import export_onnx
from models.preprocessing import fit_transform
from service.main import create_app
from tests.conftest import FAST_SPEC
from tests.service.test_api import assert_problem, make_settings

DIGITS = list(range(10))
COLOURS = ["blue", "green", "red"]


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path, f"sqlite:///{tmp_path / 'gan.db'}")


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as c:
        yield c


class ByCategory(nn.Module):
    """x = digit + 100 * colour code (read off the one-hot blocks), y = z[:, 0]: the samples
    show which categories the graph was given."""

    latent_dim, n_features = 2, 2

    def __init__(self) -> None:
        super().__init__()
        self.n_conditions = len(DIGITS) + len(COLOURS)
        levels = [float(d) for d in DIGITS] + [100.0 * k for k in range(len(COLOURS))]
        self.register_buffer("levels", torch.tensor(levels).reshape(-1, 1))

    def forward(self, z: Tensor, a: Tensor | None = None) -> Tensor:
        assert a is not None
        return torch.cat([a @ self.levels, z[:, :1]], dim=1)


def register_categorical_model(settings: Settings, tmp_path: Path) -> str:
    """Export ByCategory with a one-hot condition transform (digit: ints, colour: strings) and
    register it the way the worker does."""
    codes = np.array([[d, d % 3] for d in DIGITS], dtype=np.float32)
    cond_tf = fit_transform("none", codes, categorical={0: len(DIGITS), 1: len(COLOURS)})
    categories = {"digit": DIGITS, "colour": COLOURS}
    meta = {"feature_names": ["x", "y"], "condition_names": ["digit", "colour"],
            "categories": categories, "latent_dim": 2, "objective": "wgan-gp",
            "architecture": "mlp"}
    path = tmp_path / f"gen-{uuid.uuid4().hex[:6]}.onnx"
    export_onnx(ByCategory(), path, feature_transform=fit_transform("none", np.zeros((2, 2))),
                condition_transform=cond_tf,
                metadata={k: v if isinstance(v, str) else json.dumps(v) for k, v in meta.items()})
    records = Records(settings.DATABASE_URL)
    store = ArtifactStore(settings.ARTIFACT_ROOT)
    job, _ = records.create_job(FAST_SPEC, "h" * 64)
    assert records.claim(job["id"], "test-worker", 60, 3) is not None
    model_id = str(uuid.uuid4())
    uri = store.put_file(path, model_key(model_id))
    assert records.finish_succeeded(job["id"], "test-worker", model_id=model_id,
                                    model_metadata=meta, onnx_uri=uri,
                                    onnx_sha256=sha256_file(path))
    records.dispose()
    return model_id


def test_sampling_by_category_value(client: TestClient, settings: Settings,
                                    tmp_path: Path) -> None:
    model_id = register_categorical_model(settings, tmp_path)
    assert client.get(f"/v1/models/{model_id}").json()["categories"] == {
        "digit": DIGITS, "colour": COLOURS}
    url = f"/v1/models/{model_id}/samples"
    r = client.get(url, params={"n": 100, "digit": 3, "colour": "red", "seed": 1})
    assert r.status_code == 200, r.text
    rows = np.array(r.json()["data"])
    assert rows.shape == (100, 2) and np.all(rows[:, 0] == 3 + 200)
    r = client.get(url, params={"n": 2, "digit": "7.0", "colour": "blue"})
    assert r.status_code == 200 and r.json()["data"][0][0] == 7
    body = {"conditions": {"digit": [3, 7, 0], "colour": ["blue", "green", "red"]}, "seed": 2}
    r = client.post(url, json=body)
    assert r.status_code == 200, r.text
    assert [row[0] for row in r.json()["data"]] == [3, 107, 200]
    again = client.post(url, params={"format": "npy"}, json=body)
    assert np.load(io.BytesIO(again.content))[:, 0].tolist() == [3, 107, 200]


def test_unknown_category_is_a_422_listing_the_known_ones(client: TestClient,
                                                          settings: Settings,
                                                          tmp_path: Path) -> None:
    model_id = register_categorical_model(settings, tmp_path)
    url = f"/v1/models/{model_id}/samples"
    body = assert_problem(client.get(url, params={"n": 5, "digit": 12, "colour": "red"}), 422)
    assert [e["field"] for e in body["errors"]] == ["digit"]
    assert "unknown category '12'" in body["detail"]
    assert "0, 1, 2, 3, 4, 5, 6, 7, 8, 9" in body["detail"]
    assert body["errors"][0]["ctx"]["expected"] == DIGITS
    body = assert_problem(client.get(url, params={"n": 5, "digit": "three", "colour": "red"}),
                          422)
    assert body["errors"][0]["field"] == "digit"
    body = assert_problem(client.post(url, json={"conditions": {
        "digit": [1, 2], "colour": ["red", "purple"]}}), 422)
    assert [e["field"] for e in body["errors"]] == ["conditions.colour"]
    assert "'purple'" in body["detail"] and "'blue', 'green', 'red'" in body["detail"]
    assert_problem(client.post(url, json={"conditions": {"digit": [1.5], "colour": ["red"]}}),
                   422)
    assert_problem(client.post(url, json={"conditions": {"digit": [1], "colour": ["red", "blue"]}}),
                   422)


def test_a_string_condition_in_a_csv_upload_trains_samples_and_reports(
        client: TestClient, settings: Settings) -> None:
    from worker.runner import Context, run

    rng = np.random.default_rng(0)
    colours = rng.choice(COLOURS, 300)
    x = rng.normal(size=300) + 4.0 * (colours == "red")
    lines = ["x,y,colour"] + [f"{a:.5f},{b:.5f},{c}" for a, b, c in
                              zip(x, rng.normal(size=300), colours, strict=True)]
    r = client.post("/v1/datasets", files={"file": ("c.csv", "\n".join(lines).encode(),
                                                    "text/csv")})
    assert r.status_code == 201, r.text
    spec = copy.deepcopy(FAST_SPEC)
    spec["dataset"] = {"uri": r.json()["uri"], "features": ["x", "y"], "conditions": ["colour"],
                       "categorical": ["colour", "y"]}
    body = assert_problem(client.post("/v1/jobs", json=spec), 422)
    assert "['y']" in body["detail"] and "feature" in body["detail"]
    spec["dataset"] = {"uri": r.json()["uri"], "conditions": ["colour"]}
    spec["training"] = {"steps": 20, "batch_size": 32, "checkpoint_every": 10,
                        "log_every": 10, "device": "cpu"}
    job = client.post("/v1/jobs", json=spec).json()
    records = Records(settings.DATABASE_URL)
    ctx = Context(settings=settings, records=records,
                  store=ArtifactStore(settings.ARTIFACT_ROOT), resend=lambda _id: None)
    try:
        assert run(ctx, job["id"]) == "succeeded", records.get_job(job["id"])
    finally:
        records.dispose()
    done = client.get(f"/v1/jobs/{job['id']}").json()
    model = client.get(f"/v1/models/{done['model_id']}").json()
    assert model["conditions"] == ["colour"] and model["categories"] == {"colour": COLOURS}
    url = f"/v1/models/{done['model_id']}/samples"
    r = client.get(url, params={"n": 50, "colour": "green", "seed": 3})
    assert r.status_code == 200, r.text
    assert np.isfinite(np.array(r.json()["data"])).all() and len(r.json()["data"]) == 50
    r = client.post(url, json={"conditions": {"colour": ["red", "blue"]}})
    assert r.status_code == 200 and len(r.json()["data"]) == 2
    body = assert_problem(client.get(url, params={"n": 1, "colour": "Red"}), 422)
    assert "'blue', 'green', 'red'" in body["detail"]
    report = client.get(f"/v1/models/{done['model_id']}/report").json()
    bins = report["binned"]["colour"]
    assert [b["category"] for b in bins] == COLOURS
    assert all(b["n_real"] >= 2 for b in bins)
