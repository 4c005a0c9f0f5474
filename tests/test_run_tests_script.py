"""scripts/run-tests.sh, which `make test` runs: pytest's exit status 5 (no tests) must fail,
and so must a test whose Redis or PostgreSQL is missing (GAN_REQUIRE_SERVICES=1), which a
plain pytest in a bare clone skips."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = ROOT / "scripts" / "run-tests.sh"
BASE_ENV = {"PY": sys.executable, "PATH": "/usr/bin:/bin"}
# Nothing listens on port 1 of the loopback: connections are refused at once.
NO_REDIS = {"TEST_REDIS_URL": "redis://127.0.0.1:1/0"}
NO_POSTGRES = {"TEST_PG_ADMIN_URL": "postgresql://postgres@127.0.0.1:1/test"}
NEEDS_REDIS = ("tests/worker/test_reaper.py", "-k", "resends")
NEEDS_POSTGRES = ("tests/service/test_records.py", "-k", "claim_is_atomic and postgresql")


def run_script(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(SCRIPT), *args, "-p", "no:cacheprovider"],
        cwd=ROOT, env={**BASE_ENV, **env}, capture_output=True, text=True, timeout=300,
    )


def run_pytest(*args: str, **env: str) -> subprocess.CompletedProcess:
    """pytest as a user runs it in a clone, without the script (no GAN_REQUIRE_SERVICES)."""
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-ra", *args, "-p", "no:cacheprovider"],
        cwd=ROOT, env={**BASE_ENV, **env}, capture_output=True, text=True, timeout=300,
    )


def test_no_tests_collected_is_a_failure():
    result = run_script("tests/models/test_metrics.py", "-k", "no_test_has_this_name")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "collected no tests" in result.stderr


def test_passing_tests_pass_through():
    result = run_script("tests/models/test_metrics.py", "-q")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "passed" in result.stdout


def test_a_missing_redis_fails_under_the_script_and_skips_without_it():
    failed = run_script(*NEEDS_REDIS, **NO_REDIS)
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "1 error" in failed.stdout and "skipped" not in failed.stdout, failed.stdout
    assert "Redis not reachable at redis://127.0.0.1:1/0" in failed.stdout, failed.stdout
    assert "GAN_REQUIRE_SERVICES=1" in failed.stdout, failed.stdout
    skipped = run_pytest(*NEEDS_REDIS, **NO_REDIS)
    assert skipped.returncode == 0, skipped.stdout + skipped.stderr
    assert "1 skipped" in skipped.stdout and "Redis not reachable" in skipped.stdout


def test_a_missing_postgres_fails_under_the_script_and_skips_without_it():
    failed = run_script(*NEEDS_POSTGRES, **NO_POSTGRES)
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "1 error" in failed.stdout and "skipped" not in failed.stdout, failed.stdout
    assert "PostgreSQL not reachable at postgresql://postgres@127.0.0.1:1/test" in failed.stdout
    skipped = run_pytest(*NEEDS_POSTGRES, **NO_POSTGRES)
    assert skipped.returncode == 0, skipped.stdout + skipped.stderr
    assert "1 skipped" in skipped.stdout and "PostgreSQL not reachable" in skipped.stdout
