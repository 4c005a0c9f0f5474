"""Property-based API tests from the service's own OpenAPI schema (schemathesis), in-process,
with a valid admin API key and a bounded number of examples per operation: no 5xx, and every
response matches the schema of its documented status code."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from service.auth import hash_key
from service.main import create_app
from tests.service.test_api import make_settings, register_model

KEY = "schemathesis-key-0123456789"
AUTH = {"Authorization": f"Bearer {KEY}"}  # the cases' headers
_tmp = Path(tempfile.mkdtemp(prefix="gan-schemathesis-"))
_settings = make_settings(_tmp, f"sqlite:///{_tmp}/st.db", API_KEYS=[f"st:admin:{hash_key(KEY)}"],
                          MAX_SAMPLES_PER_REQUEST=2000, REQUEST_TIMEOUT_SECONDS=20)
app = create_app(_settings)
# /readyz answers 503 by design here (no broker, no worker): tested in test_observability.
# The schema itself needs a key, as every route does when keys are configured.
schema = schemathesis.openapi.from_asgi("/openapi.json", app, headers=AUTH).exclude(path="/readyz")

# The SSE stream of an existing job never ends by itself; generated ids name no job (404).
MAX_EXAMPLES = 12


@pytest.fixture(scope="module", autouse=True)
def _started() -> Iterator[TestClient]:
    with TestClient(app) as client:  # runs the lifespan: app.state.services
        register_model(_settings, _tmp)
        yield client



@schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
def test_api_conforms(case: schemathesis.Case) -> None:
    case.call_and_validate(headers=AUTH, checks=[not_a_server_error, response_schema_conformance])


def test_the_key_was_accepted(_started: TestClient) -> None:
    """The cases' key reaches the routes: were it refused, every case would get a documented
    401 and pass. Self-contained (it does not read what other tests saw): of the schema's GET
    operations without path parameters, those that refuse a caller without a key (401) all
    succeed with the cases' headers, and none refuses them."""
    paths = [path for path, ops in app.openapi()["paths"].items()
             if "get" in ops and "{" not in path and path != "/readyz"]  # as the cases
    without = {path: _started.get(path).status_code for path in paths}
    keyed = [path for path, code in without.items() if code == 401]
    assert {"/v1/jobs", "/v1/models", "/v1/objectives"} <= set(keyed), without
    with_key = {path: _started.get(path, headers=AUTH).status_code for path in paths}
    assert not [p for p, code in with_key.items() if code in (401, 403)], with_key
    assert all(200 <= with_key[path] < 300 for path in keyed), with_key
