"""Shared fixtures: databases (SQLite and a throw-away PostgreSQL database), a small ONNX
generator made with the onnx helper API, and the live stack (uvicorn API + Celery worker as
real subprocesses against the real Redis, with a queue and key prefix unique to the session).

Servers a test needs (the shared Redis and PostgreSQL, the binaries of private ones): where one
is missing the test skips with the reason in a bare clone, and FAILS with it under `make test`
(scripts/run-tests.sh sets GAN_REQUIRE_SERVICES=1), so that a green `make test` means every
integration test ran. See `service_missing`.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import httpx
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
PG_ADMIN_URL = os.environ.get("TEST_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/test")
TEST_REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
SESSION_TAG = uuid.uuid4().hex[:10]

# The quick job of the tests: 8 Gaussians, small MLPs.
FAST_SPEC: dict = {
    "objective": "wgan-gp",
    "architecture": {"name": "mlp", "generator": {"width": 32, "depth": 2},
                     "critic": {"width": 32, "depth": 2}},
    "dataset": {"uri": "builtin://8gaussians", "max_rows": 2000},
    "training": {"steps": 60, "batch_size": 64, "checkpoint_every": 20, "log_every": 10},
}

T = TypeVar("T")


def fast_spec(*, dataset: dict | None = None, objective: Any = None, **training: Any) -> dict:
    """A deep copy of FAST_SPEC: `dataset` and `objective` replace its own, and `training`
    updates its training settings (e.g. `fast_spec(steps=400, checkpoint_every=100)`)."""
    spec = copy.deepcopy(FAST_SPEC)
    if dataset is not None:
        spec["dataset"] = copy.deepcopy(dataset)
    if objective is not None:
        spec["objective"] = copy.deepcopy(objective)
    spec["training"].update(training)
    return spec


# --- services ---------------------------------------------------------------------------------

# Set by scripts/run-tests.sh (`make test`): a server a test needs must be there.
REQUIRE_SERVICES = os.environ.get("GAN_REQUIRE_SERVICES", "") not in ("", "0")


def service_missing(reason: str) -> NoReturn:
    """A test cannot run: a server it needs is not there. Skips with `reason` in a user's bare
    clone; fails with it under `make test` (GAN_REQUIRE_SERVICES=1), where a skip would let
    the suite pass without its integration tests."""
    if REQUIRE_SERVICES:
        pytest.fail(f"{reason}; GAN_REQUIRE_SERVICES=1 (make test) requires it "
                    "(`make services` starts Redis and PostgreSQL)", pytrace=False)
    pytest.skip(reason)


def redis_up(url: str = TEST_REDIS_URL) -> bool:
    """Whether the Redis at `url` answers a PING within a second."""
    try:
        import redis

        client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:
        return False


def delete_redis_keys(prefix: str, url: str = TEST_REDIS_URL) -> None:
    """Deletes every key under `prefix` (a test's own namespace) in the Redis at `url`; best
    effort: a Redis that is down has nothing to clean."""
    try:
        import redis

        client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=5)
        try:
            keys = list(client.scan_iter(f"{prefix}*"))
            if keys:
                client.delete(*keys)
        finally:
            client.close()
    except Exception:
        pass


@pytest.fixture
def shared_redis() -> str:
    """TEST_REDIS_URL, once it answers (see `service_missing` when it does not)."""
    if not redis_up():
        service_missing(f"Redis not reachable at {TEST_REDIS_URL} (make services)")
    return TEST_REDIS_URL


class RedisSpace:
    """A test's own corner of the shared Redis: a key prefix and a queue name unique to it."""

    def __init__(self, url: str) -> None:
        tag = f"{SESSION_TAG}-{uuid.uuid4().hex[:6]}"
        self.url, self.prefix, self.queue = url, f"gantest-{tag}:", f"q-{tag}"

    def client(self):  # type: ignore[no-untyped-def]
        import redis

        return redis.Redis.from_url(self.url, socket_timeout=10)


@pytest.fixture
def redis_space(shared_redis: str) -> Iterator[RedisSpace]:
    """A RedisSpace on the shared Redis; its keys are deleted afterwards."""
    space = RedisSpace(shared_redis)
    yield space
    delete_redis_keys(space.prefix, space.url)


def _pg_connect(url: str):  # type: ignore[no-untyped-def]
    import psycopg

    return psycopg.connect(url, autocommit=True, connect_timeout=3)


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A PostgreSQL database of its own for this test session, dropped at the end."""
    try:
        admin = _pg_connect(PG_ADMIN_URL)
    except Exception as exc:
        service_missing(f"PostgreSQL not reachable at {PG_ADMIN_URL}: {exc}")
    name = f"gan_test_{SESSION_TAG}"
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        with _pg_connect(PG_ADMIN_URL) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each test that takes it runs on SQLite and on PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'gan.db'}"
    url: str = request.getfixturevalue("pg_url")
    # Tables of an earlier test are emptied: tests must not see each other's rows.
    from gan_platform.records import Records, metadata

    records = Records(url)
    with records.engine.begin() as conn:
        for table in reversed(metadata.sorted_tables):
            conn.execute(table.delete())
    records.dispose()
    return url


# --- a small ONNX generator ---------------------------------------------------------------------


def make_linear_onnx(
    path: Path,
    *,
    latent_dim: int = 2,
    features: Sequence[str] = ("x", "y"),
    conditions: Sequence[str] = (),
    weight: np.ndarray | None = None,
    bias: np.ndarray | None = None,
    cond_weight: np.ndarray | None = None,
) -> Path:
    """samples = z @ W + conditions @ V + b, with the metadata the exporter writes."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    f, c = len(features), len(conditions)
    w = weight if weight is not None else np.eye(latent_dim, f, dtype=np.float32)
    b = bias if bias is not None else np.zeros(f, dtype=np.float32)
    inits = [numpy_helper.from_array(w.astype(np.float32), "W"),
             numpy_helper.from_array(b.astype(np.float32), "b")]
    inputs = [helper.make_tensor_value_info("z", TensorProto.FLOAT, ["N", latent_dim])]
    nodes = [helper.make_node("MatMul", ["z", "W"], ["zw"])]
    last = "zw"
    if c:
        v = cond_weight if cond_weight is not None else np.ones((c, f), dtype=np.float32)
        inits.append(numpy_helper.from_array(v.astype(np.float32), "V"))
        inputs.append(helper.make_tensor_value_info("conditions", TensorProto.FLOAT, ["N", c]))
        nodes += [helper.make_node("MatMul", ["conditions", "V"], ["cv"]),
                  helper.make_node("Add", ["zw", "cv"], ["zwcv"])]
        last = "zwcv"
    nodes.append(helper.make_node("Add", [last, "b"], ["samples"]))
    graph = helper.make_graph(
        nodes, "linear", inputs,
        [helper.make_tensor_value_info("samples", TensorProto.FLOAT, ["N", f])], inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    for key, value in {
        "feature_names": json.dumps(list(features)),
        "condition_names": json.dumps(list(conditions)),
        "latent_dim": str(latent_dim),
        "objective": "wgan-gp",
        "image_shape": "null",
    }.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def expected_provider() -> str:
    """The execution provider the sampler must pick with the onnxruntime installed here: CUDA
    where it offers CUDAExecutionProvider (a GPU build on a GPU machine), CPU otherwise."""
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        return "CUDAExecutionProvider"
    return "CPUExecutionProvider"


# --- event streams ---------------------------------------------------------------------------


def read_sse(client: httpx.Client, path: str, timeout: float = 240,
             headers: dict[str, str] | None = None) -> list[tuple[str, dict]]:
    """The (event, data) pairs of the event stream at `path`, read to its end (the service
    ends a job's stream after its `end` event), parsed by the CLI's parser (cli.main.parse_sse)."""
    from cli.main import parse_sse

    with client.stream("GET", path, timeout=httpx.Timeout(timeout), headers=headers) as r:
        assert r.status_code == 200, r.read()
        assert r.headers["content-type"].startswith("text/event-stream")
        return [(kind, data) for kind, data, _ in parse_sse(r.iter_lines())]


def progress_by_attempt(client: httpx.Client, job_id: str) -> dict[int, list[int]]:
    """{attempt: the steps it reported, in order} from the job's SSE progress events."""
    steps: dict[int, list[int]] = {}
    for kind, data in read_sse(client, f"/v1/jobs/{job_id}/events"):
        if kind == "progress":
            steps.setdefault(int(data["attempt"]), []).append(int(data["step"]))
    return steps


def assert_ran_once(client: httpx.Client, job_id: str, total: int) -> None:
    """One attempt, whose steps went up one log interval at a time to the end: nothing ran
    twice."""
    by_attempt = progress_by_attempt(client, job_id)
    assert list(by_attempt) == [1], by_attempt.keys()
    steps = by_attempt[1]
    assert steps == sorted(set(steps)) and steps[-1] == total, steps


# --- the live stack: real processes ------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _popen(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    handle = open(log, "ab")  # noqa: SIM115  (kept open for the child's life)
    return subprocess.Popen(args, cwd=ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT,
                            start_new_session=True)


def stop_process(proc: subprocess.Popen[bytes] | None, sig: int = signal.SIGTERM,
                 timeout: float = 15) -> None:
    """Signal the process's group (it leads one), then SIGKILL it if it lingers."""
    if proc is None or proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(10)


class LiveStack:
    """uvicorn + N Celery workers for one test, on the real Redis and a given database.
    `broker=False`: no REDIS_URL at all (an API alone, e.g. for sampling or uploads)."""

    def __init__(self, tmp: Path, database_url: str, *, broker: bool = True,
                 **overrides: str) -> None:
        self.tmp = tmp
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        tag = f"{SESSION_TAG}-{uuid.uuid4().hex[:6]}"
        self.env = {
            **os.environ,
            "DATABASE_URL": database_url,
            "REDIS_URL": TEST_REDIS_URL,
            "REDIS_KEY_PREFIX": f"gantest-{tag}:",
            "TASK_QUEUE": f"gpu-test-{tag}",
            "ARTIFACT_ROOT": str(tmp / "artifacts"),
            "WORK_ROOT": str(tmp / "work"),
            "DATA_ROOTS": str(tmp / "data"),
            "LEASE_SECONDS": "4",
            "REQUEUE_AFTER_SECONDS": "4",
            "API_PORT": str(self.port),
            "OMP_NUM_THREADS": "1",
            "OMP_WAIT_POLICY": "PASSIVE",
            "PYTHONUNBUFFERED": "1",
            "LOG_LEVEL": "INFO",
            **overrides,
        }
        if not broker:
            del self.env["REDIS_URL"]
        (tmp / "data").mkdir(parents=True, exist_ok=True)
        self.api: subprocess.Popen[bytes] | None = None
        self.workers: list[subprocess.Popen[bytes]] = []
        self.client = httpx.Client(base_url=self.url, timeout=30)

    def start_api(self) -> None:
        self.api = _popen([sys.executable, "-m", "uvicorn", "service.main:app", "--host",
                           "127.0.0.1", "--port", str(self.port), "--log-level", "warning"],
                          self.env, self.tmp / "api.log")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.api.poll() is not None:
                raise RuntimeError(f"the API exited:\n{self.log('api')}")
            try:
                if self.client.get("/healthz").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"the API did not start:\n{self.log('api')}")

    def start_worker(self) -> subprocess.Popen[bytes]:
        n = len(self.workers)
        proc = _popen([sys.executable, "-m", "worker"], self.env, self.tmp / f"worker{n}.log")
        self.workers.append(proc)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"worker exited:\n{self.log(f'worker{n}')}")
            if "ready." in self.log(f"worker{n}"):
                return proc
            time.sleep(0.2)
        raise RuntimeError(f"worker did not start:\n{self.log(f'worker{n}')}")

    def log(self, name: str) -> str:
        path = self.tmp / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def logs(self) -> str:
        names = ["api"] + [f"worker{i}" for i in range(len(self.workers))]
        return "\n".join(f"===== {n} =====\n{self.log(n)[-6000:]}" for n in names)

    def submit(self, spec: dict, **headers: str) -> dict:
        r = self.client.post("/v1/jobs", json=spec, headers=headers)
        assert r.status_code == 202, r.text
        return dict(r.json())

    def wait(self, job_id: str, statuses: Sequence[str], timeout: float = 180) -> dict:
        deadline = time.monotonic() + timeout
        job: dict = {}
        while time.monotonic() < deadline:
            job = self.client.get(f"/v1/jobs/{job_id}").json()
            if job["status"] in statuses:
                return job
            time.sleep(0.25)
        raise AssertionError(f"job {job_id} still {job.get('status')}; logs:\n{self.logs()}")

    def wait_step(self, job_id: str, step: int, timeout: float = 180) -> dict:
        deadline = time.monotonic() + timeout
        job: dict = {}
        while time.monotonic() < deadline:
            job = self.client.get(f"/v1/jobs/{job_id}").json()
            if job["progress"]["step"] >= step or job["status"] not in ("queued", "running"):
                return job
            time.sleep(0.1)
        raise AssertionError(f"job {job_id} never reached step {step}; logs:\n{self.logs()}")

    def close(self) -> None:
        self.client.close()
        for proc in self.workers:
            stop_process(proc, signal.SIGQUIT)
        stop_process(self.api)
        if "REDIS_URL" in self.env:
            delete_redis_keys(self.env["REDIS_KEY_PREFIX"], self.env["REDIS_URL"])


def tracked(cls: type[T]) -> Iterator[type[T]]:
    """For a factory fixture: a subclass of `cls` whose every instance is closed (its
    `close()`) when the generator resumes, i.e. at the fixture's teardown."""
    made: list[Any] = []

    class Tracked(cls):  # type: ignore[valid-type, misc]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            made.append(self)

    yield Tracked
    for one in made:
        one.close()


@pytest.fixture
def live_stack(tmp_path: Path, shared_redis: str) -> Iterator[type[LiveStack]]:
    """A factory: `stack = live_stack(tmp_path, db_url)`; every stack made is closed."""
    yield from tracked(LiveStack)


# --- the launcher (`make run`): real processes ---------------------------------------------------

# Settings the launcher must choose itself: dropped from the environment it is started with.
CONFIG_VARS = ("DATABASE_URL", "REDIS_URL", "BROKER_URL", "ARTIFACT_ROOT", "WORK_ROOT",
               "DATA_ROOTS", "TASK_QUEUE", "REDIS_KEY_PREFIX", "LEASE_SECONDS", "API_PORT",
               "BROKER_FOLDER", "GAN_VAR", "REQUEUE_AFTER_SECONDS", "MAX_ATTEMPTS",
               "GRPC_PORT", "GRPC_HOST", "GRPC_ENABLED")


def alive(pid: int) -> bool:
    """Whether process `pid` exists and is not a zombie."""
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
    raise AssertionError(f"timed out waiting for {what}; log:\n{log()[-6000:]}")


class Launcher:
    """`python -m service.launch` in `tmp` (its var/ is tmp/var), output in tmp/launch.log.
    `default_var`: GAN_VAR is not set, so the launcher picks var/ in its folder itself."""

    def __init__(self, tmp: Path, *, default_var: bool = False, **overrides: str) -> None:
        self.tmp, self.var, self.port = tmp, tmp / "var", free_port()
        self.grpc_port = free_port()
        self.env = {k: v for k, v in os.environ.items() if k not in CONFIG_VARS}
        self.env.update(API_PORT=str(self.port), GRPC_PORT=str(self.grpc_port),
                        PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
        if not default_var:
            self.env["GAN_VAR"] = str(self.var)
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
            return int(pid) if pid and alive(int(pid)) else 0

        return wait_for(f"the {name}'s pid", current, 60, self.log)

    def wait_restart(self, name: str, old_pid: int, timeout: float = 60) -> int:
        def new_pid() -> int:
            pid = self.state().get("children", {}).get(name, {}).get("pid")
            return int(pid) if pid and pid != old_pid and alive(int(pid)) else 0

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
            if alive(pid):
                os.killpg(pid, signal.SIGKILL)


@pytest.fixture
def launcher() -> Iterator[type[Launcher]]:
    """A factory: `launcher(tmp_path, SETTING="value")`; every one made is stopped."""
    yield from tracked(Launcher)


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """Training tests whose figures are measured on one thread (and must not spin a second)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# --- private Redis and PostgreSQL servers, for the tests that stop and restart them ------------


class PrivateRedis:
    """A redis-server of one test on a free loopback port, without persistence (a restart
    loses every message, as a Redis without AOF does); the test may stop it and start it
    again on the same port. Never the shared Redis the other tests use."""

    def __init__(self) -> None:
        self.folder = tempfile.mkdtemp(prefix="gan-redis-")
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.procs: list[subprocess.Popen[bytes]] = []

    def up(self) -> bool:
        return redis_up(self.url)

    def start(self, timeout: float = 20) -> None:
        args = ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port), "--save", "",
                "--appendonly", "no", "--dir", self.folder, "--daemonize", "no"]
        self.procs.append(subprocess.Popen(args, stdout=subprocess.DEVNULL,
                                           start_new_session=True))
        deadline = time.monotonic() + timeout
        while not self.up():
            if time.monotonic() > deadline:
                raise RuntimeError("the private redis-server did not start")
            time.sleep(0.1)

    def stop(self) -> None:
        """SHUTDOWN NOSAVE: every message it held is gone."""
        subprocess.run(["redis-cli", "-p", str(self.port), "shutdown", "nosave"],
                       capture_output=True, timeout=10, check=False)
        for proc in self.procs:
            stop_process(proc)
        assert not self.up()

    def close(self) -> None:
        for proc in self.procs:
            stop_process(proc)
        shutil.rmtree(self.folder, ignore_errors=True)


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
        service_missing("no redis-server / redis-cli to start a private Redis with")
    server = PrivateRedis()
    server.start()
    try:
        yield server
    finally:
        server.close()


PG_BIN = next(iter(sorted(Path("/usr/lib/postgresql").glob("*/bin"))), None) \
    if Path("/usr/lib/postgresql").exists() else None


def _as_postgres(*args: str) -> subprocess.CompletedProcess[str]:
    cmd = list(args) if os.geteuid() != 0 else ["runuser", "-u", "postgres", "--", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)


class PrivatePostgres:
    """A PostgreSQL cluster of one test: initdb in a temporary folder, its own loopback port,
    trust authentication, fsync off, database `gan`; the test may stop and start it."""

    def __init__(self) -> None:
        assert PG_BIN is not None
        self.folder = Path(tempfile.mkdtemp(prefix="gan-pg-"))
        if os.geteuid() == 0:
            shutil.chown(self.folder, "postgres", "postgres")
        self.port = free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/gan"
        data = self.folder / "data"
        self._ctl = [str(PG_BIN / "pg_ctl"), "-D", str(data), "-l", str(self.folder / "pg.log"),
                     "-w", "-t", "30", "-o", f"-p {self.port} -k {self.folder} "
                     "-c listen_addresses=127.0.0.1 -c fsync=off"]
        r = _as_postgres(str(PG_BIN / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres")
        assert r.returncode == 0, r.stderr

    def start(self) -> None:
        r = _as_postgres(*self._ctl, "start")
        assert r.returncode == 0, r.stderr + r.stdout

    def stop(self, mode: str = "fast") -> None:
        r = _as_postgres(*self._ctl, "-m", mode, "stop")
        assert r.returncode == 0, r.stderr + r.stdout

    def create_database(self) -> None:
        with _pg_connect(f"postgresql://postgres@127.0.0.1:{self.port}/postgres") as conn:
            conn.execute("CREATE DATABASE gan")

    def close(self) -> None:
        _as_postgres(*self._ctl, "-m", "immediate", "stop")
        shutil.rmtree(self.folder, ignore_errors=True)


@pytest.fixture
def private_postgres() -> Iterator[PrivatePostgres]:
    if PG_BIN is None or (os.geteuid() == 0 and shutil.which("runuser") is None):
        service_missing("no PostgreSQL binaries (initdb, pg_ctl) to start a private server with")
    server = PrivatePostgres()
    try:
        server.start()
        server.create_database()
        yield server
    finally:
        server.close()
