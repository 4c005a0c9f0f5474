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
    401 and pass. Self-contained (it does not read what other tests saw): every GET operation
    of the schema without path parameters, called with the cases' headers, succeeds."""
    paths = [path for path, ops in app.openapi()["paths"].items()
             if "get" in ops and "{" not in path and path != "/readyz"]  # as the cases
    assert len(paths) >= 4, paths  # /v1/jobs, /v1/models, /v1/objectives, /healthz ...
    with_key = {path: _started.get(path, headers=AUTH).status_code for path in paths}
    assert all(200 <= code < 300 for code in with_key.values()), with_key
    # ...and the key is what lets them in: without it, all but the open health checks are 401
    open_paths = {"/healthz", "/v2/health/live", "/v2/health/ready"}
    without = {path: _started.get(path).status_code for path in paths if path not in open_paths}
    assert without and set(without.values()) == {401}, without
