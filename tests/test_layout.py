"""The contracts between the packages, checked as `make lint` checks them, and at run time:
the API process serves its routes without ever loading torch."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from tests.conftest import ROOT


def test_the_import_contracts_hold() -> None:
    """import-linter's contracts (pyproject.toml): models imports no platform, serving,
    service or worker code; the platform and serving are torch-free and stand alone; the
    service never imports the worker or torch; no package has an import cycle."""
    lint_imports = Path(sys.executable).with_name("lint-imports")
    r = subprocess.run([str(lint_imports)], cwd=ROOT, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    assert "0 broken" in r.stdout


def test_the_api_process_never_loads_torch(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Start the app, submit a job, upload a file, list the objectives, read and sample a
    model: torch is not in sys.modules afterwards."""
    script = textwrap.dedent(f"""
        import sys
        from pathlib import Path
        from fastapi.testclient import TestClient
        from service.main import create_app
        from tests.conftest import FAST_SPEC
        from tests.service.test_api import make_settings, register_model

        tmp = Path({str(tmp_path)!r})
        settings = make_settings(tmp, f"sqlite:///{{tmp}}/t.db")
        model_id = register_model(settings, tmp, conditions=("angle",))
        with TestClient(create_app(settings)) as c:
            assert c.post("/v1/jobs", json=FAST_SPEC).status_code == 202
            assert c.get("/v1/objectives").status_code == 200
            csv = b"a,b\\n" + b"".join(f"{{i}},{{i % 7}}\\n".encode() for i in range(50))
            assert c.post("/v1/datasets", files={{"file": ("d.csv", csv)}}).status_code == 201
            assert c.get(f"/v1/models/{{model_id}}").status_code == 200
            r = c.get(f"/v1/models/{{model_id}}/samples?n=5&angle=1&format=npy")
            assert r.status_code == 200, r.text
            assert c.get("/openapi.json").status_code == 200
        print("torch loaded:", "torch" in sys.modules)
    """)
    r = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "torch loaded: False" in r.stdout, r.stdout
