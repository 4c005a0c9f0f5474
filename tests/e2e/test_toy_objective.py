"""Adding an objective takes one file: a toy objective in tests/e2e/toy_objective.py, named
in GAN_OBJECTIVE_MODULES, is listed by the API, validated at submit (its recipe fills its
parameter), trained by a real worker and sampled."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from tests.conftest import LiveStack, fast_spec

pytestmark = pytest.mark.integration


def test_a_toy_objective_in_one_file_trains_through_the_api(live_stack: type[LiveStack],
                                                            tmp_path: Path) -> None:
    stack = live_stack(tmp_path, f"sqlite:///{tmp_path / 'gan.db'}",
                       GAN_OBJECTIVE_MODULES="tests.e2e.toy_objective")
    stack.start_api()
    listed = stack.client.get("/v1/objectives").json()["objectives"]
    assert listed["toy-quadratic"]["recipes"]["default"]["objective"] == {"lam": 1.0}
    assert "wgan-gp" in listed  # the built-in ones are still there
    spec = fast_spec(objective={"name": "toy-quadratic"})
    job = stack.submit(spec)
    assert job["spec"]["objective"] == {"name": "toy-quadratic", "lam": 1.0}
    bad = copy.deepcopy(spec)
    bad["objective"]["lam"] = -1
    assert stack.client.post("/v1/jobs", json=bad).status_code == 422
    stack.start_worker()
    done = stack.wait(job["id"], ["succeeded", "failed"], timeout=240)
    assert done["status"] == "succeeded", (done, stack.logs())
    assert "critic/gap" in done["progress"]["losses"]
    r = stack.client.get(f"/v1/models/{done['model_id']}/samples?n=5&seed=1")
    assert r.status_code == 200 and len(r.json()["data"]) == 5


def test_an_objective_that_is_not_loaded_is_unknown(live_stack: type[LiveStack],
                                                    tmp_path: Path) -> None:
    stack = live_stack(tmp_path, f"sqlite:///{tmp_path / 'gan.db'}")
    stack.start_api()
    r = stack.client.post("/v1/jobs", json=fast_spec(objective={"name": "toy-quadratic"}))
    assert r.status_code == 422 and "toy-quadratic" in r.text
