"""The memory estimate of a spec (models.resources) and its checks: 422 at submit time above
MAX_JOB_MEMORY_BYTES, with the estimate; the README's specs and the tests' FAST_SPEC pass;
the estimate agrees with the peak memory of a real run to within a factor 2."""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from gan_platform.settings import Settings
from models.resources import BUILTIN_SHAPES, DataShape, estimate_job_memory, shape_from_spec
from models.spec import JobSpec
from service.main import create_app
from service.validation import check_job_resources
from tests.conftest import FAST_SPEC, ROOT
from tests.service.test_api import make_settings

BOMB: dict = {
    "objective": "wgan-gp",
    "architecture": {"generator": {"width": 8192, "depth": 64},
                     "critic": {"width": 8192, "depth": 64}},
    "dataset": {"uri": "builtin://8gaussians"},
    "training": {"batch_size": 1_000_000},
}


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    settings: Settings = make_settings(tmp_path, f"sqlite:///{tmp_path}/api.db")
    with TestClient(create_app(settings)) as c:
        yield c


def readme_specs() -> list[dict]:
    """Every job spec the README shows (the JSON objects with an "objective")."""
    import json

    text = (ROOT / "README.md").read_text()
    decoder = json.JSONDecoder()
    specs = []
    for block in re.findall(r"```(?:json|sh)\n(.*?)```", text, flags=re.S):
        for match in re.finditer(r"\{\s*\"objective\"", block):
            try:
                specs.append(decoder.raw_decode(block, match.start())[0])
            except json.JSONDecodeError:
                continue
    return specs


def test_a_spec_of_terabytes_gets_422_with_its_estimate(client: TestClient) -> None:
    r = client.post("/v1/jobs", json=BOMB)
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert "MAX_JOB_MEMORY_BYTES=8589934592" in detail, detail
    gigabytes = float(re.search(r"about ([\d,.]+) GB", detail).group(1).replace(",", ""))
    assert gigabytes > 1000, detail  # each field within its own cap, the whole far beyond
    assert r.json()["errors"][0]["field"] == "training.batch_size"
    # the parameters alone (batch 2): still refused, pointed at the networks
    small_batch = copy.deepcopy(BOMB)
    small_batch["training"]["batch_size"] = 2
    r = client.post("/v1/jobs", json=small_batch)
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "architecture", r.text


def test_the_readme_specs_and_the_fast_spec_are_accepted(client: TestClient) -> None:
    specs = readme_specs()
    assert len(specs) >= 2, "the README's example specs were not found"
    for spec in [FAST_SPEC, *specs]:
        check_job_resources(JobSpec.model_validate(spec), Settings())  # the default budget
        if spec["dataset"]["uri"].startswith("builtin://"):  # file://: the reader's machine
            r = client.post("/v1/jobs", json=spec)
            assert r.status_code == 202, (spec, r.text)


@pytest.mark.parametrize("name", sorted(BUILTIN_SHAPES))
def test_the_builtin_shapes_are_those_of_the_real_sets(name: str) -> None:
    from models.datasets import load_dataset

    spec = JobSpec.model_validate({"objective": "wgan-gp", "dataset": {"uri": f"builtin://{name}"}})
    data = load_dataset(spec.dataset, data_roots=[])
    assumed = shape_from_spec(spec)
    assert (assumed.features, assumed.conditions, assumed.rows, assumed.image_shape) == (
        data.features.shape[1], data.conditions.shape[1], data.n_rows, data.image_shape)


def test_the_estimate_is_within_a_factor_two_of_a_real_runs_peak(tmp_path: Path) -> None:
    """One mid-sized job (G and D 64 x 3, a batch of 262 144 rows: about a gigabyte of
    activations) through the worker's job process, which measures its own peak resident
    memory (ru_maxrss)."""
    from tests.worker.test_job_process import Running, make_ctx

    mid = copy.deepcopy(FAST_SPEC)
    mid["objective"] = "nsgan"
    mid["architecture"] = {"generator": {"width": 64, "depth": 3},
                           "critic": {"width": 64, "depth": 3}}
    mid["training"].update(steps=1, batch_size=262_144, validate_every=0, ema=0)
    del mid["dataset"]["max_rows"]
    ctx = make_ctx(tmp_path)
    job, _ = ctx.records.create_job(mid, "h" * 64)
    assert Running(ctx, job["id"]).join(180) == "succeeded"
    model = ctx.records.get_model(ctx.records.get_job(job["id"])["model_id"])  # type: ignore[index]
    assert model is not None
    resources = model["metadata"]["resources"]
    estimate, peak = resources["memory_estimate_bytes"], resources["peak_memory_bytes"]
    assert peak > 1e9, "not mid-sized: the runtime's own memory dominates"
    assert peak / 2 < estimate < 2 * peak, (estimate, peak)
    ctx.records.dispose()


def test_the_estimate_grows_with_what_it_counts() -> None:
    base = JobSpec.model_validate(FAST_SPEC)
    wider = copy.deepcopy(FAST_SPEC)
    wider["architecture"]["generator"]["width"] = 512
    bigger_batch = copy.deepcopy(FAST_SPEC)
    bigger_batch["training"]["batch_size"] = 4096
    e0 = estimate_job_memory(base)
    assert estimate_job_memory(JobSpec.model_validate(wider)).state_bytes > e0.state_bytes
    assert (estimate_job_memory(JobSpec.model_validate(bigger_batch)).activation_bytes
            == 64 * e0.activation_bytes)
    more_features = estimate_job_memory(base, DataShape(features=500, conditions=0))
    assert more_features.parameters > e0.parameters
