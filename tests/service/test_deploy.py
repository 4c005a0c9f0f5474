"""docker-compose.yml and the Dockerfile, checked without a Docker engine.

compose_spec.json is the Compose Specification's JSON schema (Apache-2.0) as shipped by
docker-compose 1.29.2 (Debian's package, compose/config/compose_spec.json), vendored here
because nothing can be downloaded at test time. `docker-compose config -q` also runs when the
binary is there (`make test` installs Debian's package when apt-get is usable).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from tests.conftest import ROOT

COMPOSE = ROOT / "docker-compose.yml"
SCHEMA = Path(__file__).with_name("compose_spec.json")


def load_compose() -> dict[str, Any]:
    return dict(yaml.safe_load(COMPOSE.read_text()))


def test_compose_file_matches_the_compose_schema() -> None:
    validator = jsonschema.Draft201909Validator(json.loads(SCHEMA.read_text()))
    errors = sorted(validator.iter_errors(load_compose()), key=lambda e: list(e.path))
    assert not errors, [f"{list(e.path)}: {e.message}" for e in errors]
    # the schema does catch mistakes
    broken = load_compose()
    broken["services"]["api"]["helthcheck"] = {"test": ["CMD", "true"]}
    assert list(validator.iter_errors(broken))


def test_compose_services() -> None:
    doc = load_compose()
    services = doc["services"]
    assert {"api", "grpc", "worker", "worker-cpu", "redis", "postgres"} <= set(services)
    for name in ("api", "grpc", "worker", "worker-cpu", "redis", "postgres"):
        assert "test" in services[name]["healthcheck"], name
    assert "--appendonly" in services["redis"]["command"]
    assert services["redis"]["command"][services["redis"]["command"].index("--appendonly") + 1] \
        == "yes"
    devices = services["worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
    assert "deploy" not in services["worker-cpu"] and services["worker-cpu"]["profiles"] == ["cpu"]
    for name in ("api", "grpc", "worker", "worker-cpu"):
        svc = services[name]
        env = svc["environment"]
        assert env["DATABASE_URL"].startswith("postgresql://") and "@postgres:5432/" in env[
            "DATABASE_URL"]
        assert env["REDIS_URL"] == "redis://redis:6379/0"
        assert any(v.startswith("artifacts:") for v in svc["volumes"])
        assert env["ARTIFACT_ROOT"].startswith("/var/lib/gan")
        assert svc["depends_on"]["redis"]["condition"] == "service_healthy"
    assert services["worker"]["command"] == ["python", "-m", "worker"]
    # the gRPC inference server: its own process and port, reachable from the host
    assert services["grpc"]["command"] == ["python", "-m", "service.oip.grpc_server"]
    assert services["grpc"]["environment"]["GRPC_PORT"] == "8001"
    assert services["grpc"]["environment"]["GRPC_HOST"] == "0.0.0.0"
    assert any(str(p).endswith(":8001") for p in services["grpc"]["ports"])
    assert {"artifacts", "redis", "pgdata"} <= set(doc["volumes"])


def test_docker_compose_config_when_available(tmp_path: Path) -> None:
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.skip("docker-compose is not installed (apt-get install docker-compose); the "
                    "schema test above still validates the file")
    out = subprocess.run([binary, "-f", str(COMPOSE), "--project-directory", str(ROOT),
                          "config", "-q"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    out = subprocess.run([binary, "-f", str(COMPOSE), "--profile", "cpu", "config",
                          "--services"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert set(out.stdout.split()) == {"api", "grpc", "worker", "worker-cpu", "redis",
                                       "postgres"}


def test_dockerfile_copies_what_exists() -> None:
    lines = [ln.strip() for ln in (ROOT / "Dockerfile").read_text().splitlines()]
    assert lines[[i for i, ln in enumerate(lines) if ln and not ln.startswith("#")][0]] \
        .startswith(("FROM ", "ARG "))
    ignored = {ln.strip() for ln in (ROOT / ".dockerignore").read_text().splitlines()}
    for line in lines:
        if line.startswith("COPY "):
            *sources, _dest = line.split()[1:]
            for src in sources:
                assert (ROOT / src).exists(), src
                assert src not in ignored, f"{src} is excluded by .dockerignore"
    assert any(ln.startswith("CMD ") and "service.main:app" in ln for ln in lines)
