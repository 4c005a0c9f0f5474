"""Load test: N concurrent sampling clients, oversize requests, job submissions, health probes.

    python bench/load.py                       # starts its own API + worker, 50 clients, 60 s
    python bench/load.py --duration 5 --clients 5 --out bench/out   # a smoke run

It starts uvicorn and one Celery worker as subprocesses (SQLite in a temporary folder, the
Redis at --redis-url with a key prefix and queue of its own, auth on with a generated key),
trains one small model, then for --duration seconds runs --clients sampling loops
(`GET /v1/models/{id}/samples?n=...`), --oversize-clients loops that ask for the most rows a
request may have (n = MAX_SAMPLES_PER_REQUEST, JSON: the heaviest answer) or more (a 422),
one submitter (`POST /v1/jobs` every --submit-every seconds), and one prober of `/healthz`
every 50 ms. Loopback only: --url, if given, must name 127.0.0.1/localhost/::1.
Bounded in time (--duration) and in count (--max-requests).

Prints a report: requests by kind and status, the unexpected 5xx (the goal: 0; a 503 or 429
with Retry-After is the documented answer of a busy sampler and is counted apart), p50/p90/p99/
max latency (the goal for /healthz: p99 under 100 ms), sampling rows/s; and writes it as JSON
under --out. No timed assertion.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from urllib.parse import urlparse

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}
SPEC = {
    "objective": "wgan-gp",
    "architecture": {"name": "mlp", "generator": {"width": 32, "depth": 2},
                     "critic": {"width": 32, "depth": 2}},
    "dataset": {"uri": "builtin://8gaussians", "max_rows": 2000},
    "training": {"steps": 40, "batch_size": 64, "checkpoint_every": 20, "log_every": 10},
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LocalService:
    def __init__(self, redis_url: str, workers: int, max_rows: int = 1_000_000) -> None:
        from service.auth import hash_key

        self.tmp = Path(tempfile.mkdtemp(prefix="gan-load-"))
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.key = "gan_" + secrets.token_urlsafe(24)
        tag = uuid.uuid4().hex[:8]
        self.env = {
            **os.environ,
            "DATABASE_URL": f"sqlite:///{self.tmp}/gan.db",
            "REDIS_URL": redis_url,
            "REDIS_KEY_PREFIX": f"ganload-{tag}:",
            "TASK_QUEUE": f"load-{tag}",
            "ARTIFACT_ROOT": str(self.tmp / "artifacts"),
            "WORK_ROOT": str(self.tmp / "work"),
            "DATA_ROOTS": str(self.tmp / "data"),
            "API_KEYS": f"load:admin:{hash_key(self.key)}",
            "MAX_QUEUED_JOBS_PER_KEY": "100000",
            "MAX_SAMPLES_PER_REQUEST": str(max_rows),
            "OMP_NUM_THREADS": "1",
            "OMP_WAIT_POLICY": "PASSIVE",
            "LOG_LEVEL": "WARNING",
        }
        self.procs: list[subprocess.Popen[bytes]] = []
        self.n_workers = workers

    def _spawn(self, args: list[str], name: str) -> subprocess.Popen[bytes]:
        log = open(self.tmp / f"{name}.log", "ab")  # noqa: SIM115
        proc = subprocess.Popen(args, cwd=ROOT, env=self.env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
        self.procs.append(proc)
        return proc

    def start(self) -> None:
        self._spawn([sys.executable, "-m", "uvicorn", "service.main:app", "--host", "127.0.0.1",
                     "--port", str(self.port), "--log-level", "warning"], "api")
        for i in range(self.n_workers):
            self._spawn([sys.executable, "-m", "worker", "--loglevel", "WARNING"], f"worker{i}")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/healthz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"the API did not start; see {self.tmp}/api.log")

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)


# GET /healthz every 50 ms for the duration; one line "status seconds" a probe.
PROBE = """
import sys, time, httpx
url, duration = sys.argv[1], float(sys.argv[2])
end = time.monotonic() + duration
with httpx.Client(base_url=url, timeout=30) as c:
    while time.monotonic() < end:
        t0 = time.perf_counter()
        try:
            code = str(c.get("/healthz").status_code)
        except httpx.HTTPError as exc:
            code = type(exc).__name__
        print(code, time.perf_counter() - t0, flush=True)
        time.sleep(0.05)
"""


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _summary(lat: list[float]) -> dict[str, float | None]:
    return {k: (round(v * 1000, 2) if v is not None else None) for k, v in
            {"p50_ms": _pct(lat, 0.5), "p90_ms": _pct(lat, 0.9), "p99_ms": _pct(lat, 0.99),
             "max_ms": max(lat) if lat else None}.items()}


async def run_load(url: str, key: str, model_id: str, *, clients: int, duration: float,
                   submit_every: float, n: int, max_requests: int, oversize_clients: int = 0,
                   max_rows: int = 1_000_000) -> dict:
    headers = {"Authorization": f"Bearer {key}"}
    kinds = ("sample", "oversize", "submit", "healthz")
    stats: dict[str, dict] = {k: {"lat": [], "status": {}, "unexpected_5xx": 0} for k in kinds}
    budget = {"left": max_requests}
    rows = 0
    deadline = time.monotonic() + duration
    conns = clients + oversize_clients + 4
    limits = httpx.Limits(max_connections=conns, max_keepalive_connections=conns)

    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=60,
                                 limits=limits) as client:

        async def record(kind: str, coro) -> httpx.Response | None:  # type: ignore[no-untyped-def]
            t0 = time.perf_counter()
            try:
                r = await coro
                code = str(r.status_code)
            except httpx.HTTPError as exc:
                r, code = None, type(exc).__name__
            stats[kind]["lat"].append(time.perf_counter() - t0)
            stats[kind]["status"][code] = stats[kind]["status"].get(code, 0) + 1
            documented = r is not None and r.status_code in (429, 503) and "retry-after" in r.headers
            if r is not None and r.status_code >= 500 and not documented:
                stats[kind]["unexpected_5xx"] += 1
            return r

        async def sampler(i: int) -> None:
            nonlocal rows
            seed = i * 1_000_000
            while time.monotonic() < deadline and budget["left"] > 0:
                budget["left"] -= 1
                seed += 1
                r = await record("sample", client.get(
                    f"/v1/models/{model_id}/samples", params={"n": n, "seed": seed}))
                if r is not None and r.status_code == 200:
                    rows += int(r.headers.get("x-rows", n))

        async def oversize(i: int) -> None:
            k = 0
            while time.monotonic() < deadline and budget["left"] > 0:
                budget["left"] -= 1
                k += 1
                rows_asked = max_rows + 1 if k % 4 == 0 else max_rows  # every 4th: a 422
                await record("oversize", client.get(
                    f"/v1/models/{model_id}/samples",
                    params={"n": rows_asked, "seed": k, "format": "json"}))

        async def prober() -> None:
            # In a process of its own: the clients' event loop, busy with 20 MB answers, would
            # delay the probe itself and blur what the service does.
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-c", PROBE, url, str(duration),
                stdout=asyncio.subprocess.PIPE)
            out, _ = await proc.communicate()
            for line in out.decode().splitlines():
                code, seconds = line.split()
                stats["healthz"]["lat"].append(float(seconds))
                stats["healthz"]["status"][code] = stats["healthz"]["status"].get(code, 0) + 1
                if code.isdigit() and int(code) >= 500:
                    stats["healthz"]["unexpected_5xx"] += 1

        async def submitter() -> None:
            k = 0
            while time.monotonic() < deadline and budget["left"] > 0:
                budget["left"] -= 1
                k += 1
                spec = json.loads(json.dumps(SPEC))
                spec["training"]["steps"] = 20
                spec["training"]["seed"] = k
                await record("submit", client.post("/v1/jobs", json=spec))
                await asyncio.sleep(submit_every)

        t0 = time.monotonic()
        await asyncio.gather(*(sampler(i) for i in range(clients)),
                             *(oversize(i) for i in range(oversize_clients)), submitter(),
                             prober())
        elapsed = time.monotonic() - t0

    report: dict = {"url": url, "clients": clients, "oversize_clients": oversize_clients,
                    "duration_s": round(elapsed, 2), "n_per_request": n,
                    "sampling_rows_per_s": round(rows / elapsed, 1)}
    total_5xx = 0
    for kind, s in stats.items():
        errors = sum(c for code, c in s["status"].items() if not code.isdigit())
        total_5xx += s["unexpected_5xx"]
        report[kind] = {"requests": len(s["lat"]), "status": s["status"],
                        "5xx": s["unexpected_5xx"], "transport_errors": errors,
                        "requests_per_s": round(len(s["lat"]) / elapsed, 1), **_summary(s["lat"])}
    report["total_5xx"] = total_5xx
    return report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--url", help="an already running service (loopback only); needs --key")
    p.add_argument("--key", help="API key for --url")
    p.add_argument("--redis-url", default=os.environ.get("TEST_REDIS_URL",
                                                         "redis://127.0.0.1:6379/0"))
    p.add_argument("--clients", type=int, default=50)
    p.add_argument("--oversize-clients", type=int, default=4,
                   help="loops asking for MAX_SAMPLES_PER_REQUEST rows (or one more) as JSON")
    p.add_argument("--max-rows", type=int, default=1_000_000,
                   help="the service's MAX_SAMPLES_PER_REQUEST")
    p.add_argument("--duration", type=float, default=60.0)
    p.add_argument("--submit-every", type=float, default=1.0)
    p.add_argument("-n", type=int, default=1000, help="rows per sampling request")
    p.add_argument("--max-requests", type=int, default=500_000)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--out", default=str(ROOT / "bench" / "out"))
    p.add_argument("--json", help="write the report here (default: a dated file under --out)")
    args = p.parse_args(argv)
    if args.duration > 600 or args.clients > 500:
        p.error("bounded: --duration at most 600 s, --clients at most 500")

    service = None
    if args.url:
        host = urlparse(args.url).hostname or ""
        if host not in LOOPBACK:
            p.error(f"--url must be a loopback address, not {host!r}")
        url, key = args.url, args.key or ""
    else:
        if urlparse(args.redis_url).hostname not in LOOPBACK:
            p.error("--redis-url must be a loopback address")
        service = LocalService(args.redis_url, args.workers, args.max_rows)
        service.start()
        url, key = service.url, service.key
    try:
        h = {"Authorization": f"Bearer {key}"}
        r = httpx.post(url + "/v1/jobs", json=SPEC, headers=h, timeout=30)
        r.raise_for_status()
        job_id = r.json()["id"]
        deadline = time.monotonic() + 300
        job = r.json()
        while job["status"] not in ("succeeded", "failed", "cancelled"):
            if time.monotonic() > deadline:
                raise RuntimeError("the model for the load test did not train in 300 s")
            time.sleep(0.5)
            job = httpx.get(f"{url}/v1/jobs/{job_id}", headers=h, timeout=30).json()
        if job["status"] != "succeeded":
            raise RuntimeError(f"training the load-test model failed: {job.get('error')}")
        report = asyncio.run(run_load(url, key, job["model_id"], clients=args.clients,
                                      duration=args.duration, submit_every=args.submit_every,
                                      n=args.n, max_requests=args.max_requests,
                                      oversize_clients=args.oversize_clients,
                                      max_rows=args.max_rows))
    finally:
        if service is not None:
            service.stop()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = Path(args.json) if args.json else out / f"load-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(report, indent=2))
    print(f"load test: {report['clients']} sampling clients + 1 submitter for "
          f"{report['duration_s']} s against {report['url']}")
    for kind in ("sample", "oversize", "submit", "healthz"):
        s = report[kind]
        print(f"  {kind:7s} {s['requests']:7d} requests ({s['requests_per_s']}/s)  "
              f"5xx {s['5xx']}  transport errors {s['transport_errors']}  "
              f"p50 {s['p50_ms']} ms  p90 {s['p90_ms']} ms  p99 {s['p99_ms']} ms  "
              f"max {s['max_ms']} ms  status {s['status']}")
    print(f"  sampling rows/s {report['sampling_rows_per_s']}; unexpected 5xx (not a "
          f"documented 429/503 with Retry-After): {report['total_5xx']}; report: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
