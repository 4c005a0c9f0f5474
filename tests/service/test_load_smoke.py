"""A 5-second smoke run of bench/load.py (the 60 s, 50-client run is `python bench/load.py`):
its own API and worker on loopback, zero 5xx."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.integration


@pytest.mark.usefixtures("shared_redis")  # bench/load.py runs on TEST_REDIS_URL
def test_load_smoke(tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, "bench/load.py", "--duration", "5", "--clients", "5",
                        "--oversize-clients", "1", "--max-rows", "100000",
                        "--submit-every", "1", "--max-requests", "5000", "--out", str(tmp_path)],
                       cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stdout + r.stderr
    (report_path,) = tmp_path.glob("load-*.json")
    report = json.loads(report_path.read_text())
    assert report["total_5xx"] == 0, report
    assert report["sample"]["requests"] > 0 and report["sample"]["p99_ms"] is not None
    assert report["submit"]["status"].get("202", 0) >= 1
    assert report["oversize"]["status"].get("422", 0) >= 1  # n above the maximum
    assert report["healthz"]["requests"] > 10 and report["healthz"]["5xx"] == 0
    assert "p99" in r.stdout
