"""scripts/run-tests.sh, which `make test` runs: pytest's exit status 5 (no tests) must fail."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = ROOT / "scripts" / "run-tests.sh"


def run_script(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(SCRIPT), *args, "-p", "no:cacheprovider"],
        cwd=ROOT, env={"PY": sys.executable, "PATH": "/usr/bin:/bin"},
        capture_output=True, text=True, timeout=300,
    )


def test_no_tests_collected_is_a_failure():
    result = run_script("tests/models/test_metrics.py", "-k", "no_test_has_this_name")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "collected no tests" in result.stderr


def test_passing_tests_pass_through():
    result = run_script("tests/models/test_metrics.py", "-q")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "passed" in result.stdout
