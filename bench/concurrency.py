"""Small sampling requests under concurrency: 1, 8, 32 and 50 clients, each asking for one row
at a time (GET /v1/models/{id}/samples?n=1, npy) as fast as it is answered, for --duration
seconds per level, against one API process started here (uvicorn, SQLite, auth off, the
exported MLP of bench/protocols.py). The baseline in the same run: a bare FastAPI route that
answers 12 bytes, at the same levels, in a process of its own.

Prints, per level: requests/s, p50/p99 latency, client errors. The targets (docs/performance):
one client p50 < 1 ms and p99 < 3 ms; 50 clients p99 < 100 ms and no errors. The clients run
in one asyncio process (keep-alive connections on asyncio streams), on the same machine: on
2 cores they take a share of the CPU the server would have. Asserts nothing.

    .venv/bin/python bench/concurrency.py [--duration 10] [--levels 1 8 32 50] [--json out]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from bench.protocols import free_port, register, wait  # noqa: E402
from gan_platform.records import Records  # noqa: E402

BARE_APP = """
from fastapi import FastAPI, Response
app = FastAPI()
@app.get("/v1/models/{model_id}/samples")
async def samples(model_id: str, n: int = 1) -> Response:
    return Response(b"\\x93NUMPY bare", media_type="application/x-npy")
@app.get("/healthz")
async def healthz() -> dict:
    return {"status": "ok"}
"""


async def _one_client(host: str, port: int, request: bytes, deadline: float,
                      lat: list[float], errors: dict[str, int]) -> None:
    """A keep-alive HTTP/1.1 connection asking `request` again as soon as it is answered.
    Written on asyncio streams, not httpx: at 50 connections httpx's pool took more CPU than
    the server it measured (a bare FastAPI route fell from 1,300 to 420 requests/s)."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while time.monotonic() < deadline:
            t0 = time.perf_counter()
            try:
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                status = head[9:12].decode()
                length = 0
                for line in head.split(b"\r\n"):
                    if line[:15].lower() == b"content-length:":
                        length = int(line[15:])
                await reader.readexactly(length)
                if status != "200":
                    errors[status] = errors.get(status, 0) + 1
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
                errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                return
            lat.append(time.perf_counter() - t0)
    finally:
        writer.close()


async def run_level(url: str, path: str, clients: int, duration: float) -> dict[str, Any]:
    lat: list[float] = []
    errors: dict[str, int] = {}
    host, port = url.removeprefix("http://").split(":")
    request = (f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
               "Accept: */*\r\n\r\n").encode()
    deadline = time.monotonic() + duration
    t0 = time.monotonic()
    await asyncio.gather(*(_one_client(host, int(port), request, deadline, lat, errors)
                           for _ in range(clients)))
    elapsed = time.monotonic() - t0
    q = statistics.quantiles(lat, n=100) if len(lat) > 1 else [lat[0]] * 99
    return {"clients": clients, "requests": len(lat),
            "requests_per_s": round(len(lat) / elapsed, 1),
            "p50_ms": round(q[49] * 1e3, 3), "p99_ms": round(q[98] * 1e3, 3),
            "errors": errors}


def serve(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen(args, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)


def up(url: str) -> bool:
    try:
        return httpx.get(url + "/healthz", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--levels", type=int, nargs="+", default=[1, 8, 32, 50])
    p.add_argument("--json", help="write the results here")
    args = p.parse_args(argv)
    if args.duration > 120 or max(args.levels) > 500:
        p.error("bounded: --duration at most 120 s, at most 500 clients")
    results: dict[str, list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory(prefix="gan-bench-") as tmp_name:
        tmp = Path(tmp_name)
        onnx_path = tmp / "g.onnx"
        subprocess.run([sys.executable, str(ROOT / "bench" / "protocols.py"), "--export-to",
                        str(onnx_path)], check=True)
        database_url, artifacts = f"sqlite:///{tmp / 'gan.db'}", str(tmp / "artifacts")
        Records(database_url).dispose()
        model_id = register(database_url, artifacts, onnx_path)
        env = {**os.environ, "DATABASE_URL": database_url, "ARTIFACT_ROOT": artifacts,
               "WORK_ROOT": str(tmp / "work"), "DATA_ROOTS": str(tmp), "LOG_LEVEL": "WARNING",
               "PYTHONPATH": f"{ROOT}{os.pathsep}{tmp}"}
        env.pop("REDIS_URL", None)
        env.pop("API_KEYS", None)
        (tmp / "bare_app.py").write_text(BARE_APP)
        conditions = "&c0=10&c1=20&c2=30&c3=40"
        path = f"/v1/models/{model_id}/samples?n=1&format=npy&seed=1{conditions}"
        for name, app in (("bare FastAPI route", "bare_app:app"),
                          ("GET /v1 samples n=1 npy", "service.main:app")):
            port = free_port()
            url = f"http://127.0.0.1:{port}"
            log = tmp / f"{app.split(':')[0]}.log"
            proc = serve([sys.executable, "-m", "uvicorn", app, "--host", "127.0.0.1",
                          "--port", str(port), "--log-level", "warning"], env, log)
            try:
                wait(lambda url=url: up(url), proc, log)
                httpx.get(url + path, timeout=30).raise_for_status()  # warm: the session
                results[name] = []
                for clients in args.levels:
                    row = asyncio.run(run_level(url, path, clients, args.duration))
                    results[name].append(row)
                    print(f"{name:26s} {clients:3d} clients: {row['requests_per_s']:8.1f} req/s "
                          f"p50 {row['p50_ms']:8.3f} ms  p99 {row['p99_ms']:8.3f} ms  "
                          f"errors {row['errors'] or 0}", flush=True)
            finally:
                proc.terminate()
                proc.wait(20)
    out = {"bench": "concurrency", "date": time.strftime("%Y-%m-%d"), "cpus": os.cpu_count(),
           "duration_s": args.duration, "results": results,
           "targets": "1 client: p50 < 1 ms, p99 < 3 ms; 50 clients: p99 < 100 ms, no errors"}
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
