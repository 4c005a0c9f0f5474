"""Sampling through every route against the in-process sampler, in one run on one machine:
gRPC ModelInfer (tritonclient.grpc); POST /v1/models/{id}/samples with an npy body of
conditions, answered as npy, Arrow or JSON; the REST Open Inference Protocol infer with
binary tensors; GET /v1/models/{id}/samples (one condition row for all n) as npy, Arrow or
JSON; at n = 1, 1k, 100k and 10^6 rows (--sizes), one client at a time. Every way is first
checked to give the in-process sampler's rows. Prints rows/s and the ratio to
serving.sampling.sample on the same model (n = 1: from the median latency of
--latency-calls calls, with p50/p99; larger n: the best of --repeats). JSON answers only up
to 100k rows. Asserts nothing.

    .venv/bin/python bench/protocols.py [--repeats 5] [--latency-calls 200]
        [--sizes 1 1000 100000 1000000] [--json out.json]

The generator is an exported MLP (latent 16, 3 x 256, 4 conditions, 4 features), exported in
a child process (this one never loads torch); the API (uvicorn) and the gRPC server run as
processes of their own on loopback, with SQLite.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import numpy as np  # noqa: E402

from gan_platform.artifacts import ArtifactStore, model_key, sha256_file  # noqa: E402
from gan_platform.records import Records  # noqa: E402
from serving.sampling import load_model, sample  # noqa: E402

CONDITIONS = ["c0", "c1", "c2", "c3"]
FEATURES = ["x0", "x1", "x2", "x3"]
LATENT = 16


def export_generator(path: Path) -> None:
    import torch

    from models.architectures import build_generator
    from models.export import export_onnx
    from models.preprocessing import fit_transform
    from models.spec import ArchitectureSpec

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(10_000, len(FEATURES))).astype(np.float32)
    a = rng.uniform(1, 100, size=(10_000, len(CONDITIONS))).astype(np.float32)
    arch = ArchitectureSpec.model_validate({"name": "mlp", "latent_dim": LATENT,
                                            "generator": {"width": 256, "depth": 3}})
    gen = build_generator(arch, len(FEATURES), len(CONDITIONS)).eval()
    export_onnx(gen, path, feature_transform=fit_transform("standard", x),
                condition_transform=fit_transform("standard", a),
                metadata={"feature_names": json.dumps(FEATURES),
                          "condition_names": json.dumps(CONDITIONS),
                          "latent_dim": str(LATENT)})


def register(database_url: str, artifacts: str, onnx_path: Path) -> str:
    """The model registered as a worker registers it (a job that made it)."""
    records, store = Records(database_url), ArtifactStore(artifacts)
    job, _ = records.create_job({"bench": True}, uuid.uuid4().hex * 2, owner=None)
    assert records.claim(job["id"], "bench", 60, 3) is not None
    model_id = str(uuid.uuid4())
    uri = store.put_file(onnx_path, model_key(model_id))
    meta = {"feature_names": FEATURES, "condition_names": CONDITIONS, "latent_dim": LATENT,
            "objective": "wgan-gp", "architecture": "mlp"}
    assert records.finish_succeeded(job["id"], "bench", model_id=model_id, model_metadata=meta,
                                    onnx_uri=uri, onnx_sha256=sha256_file(onnx_path))
    records.dispose()
    return model_id


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait(check: Callable[[], bool], proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 90
    while not check():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(log.read_text()[-3000:])
        time.sleep(0.2)


JSON_ROWS = 100_000  # JSON answers above this: minutes of client-side parsing, left out


def decode(content: bytes, fmt: str) -> np.ndarray:
    if fmt == "npy":
        return np.load(io.BytesIO(content), allow_pickle=False)
    if fmt == "arrow":
        import pyarrow as pa

        table = pa.ipc.open_stream(content).read_all()
        return np.column_stack([c.to_numpy() for c in table.columns]).astype(np.float32)
    return np.asarray(json.loads(content)["data"], dtype=np.float32)


def best_rate(fn: Callable[[], object], n: int, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return n / min(times)


def latencies(fn: Callable[[], object], calls: int) -> tuple[float, float]:
    fn()  # warm
    samples = []
    for _ in range(calls):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    q = statistics.quantiles(samples, n=100)
    return q[49] * 1e3, q[98] * 1e3


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[1, 1000, 100_000, 1_000_000])
    ap.add_argument("--json", type=Path, help="write the results here")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--latency-calls", type=int, default=200)
    ap.add_argument("--export-to", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.export_to:  # in a child process: this one never imports torch
        export_generator(args.export_to)
        return

    import tritonclient.grpc as grpcclient

    with tempfile.TemporaryDirectory(prefix="gan-bench-") as tmp_name:
        tmp = Path(tmp_name)
        onnx_path = tmp / "g.onnx"
        subprocess.run([sys.executable, __file__, "--export-to", str(onnx_path)], check=True)
        database_url, artifacts = f"sqlite:///{tmp / 'gan.db'}", str(tmp / "artifacts")
        Records(database_url).dispose()  # the tables
        model_id = register(database_url, artifacts, onnx_path)
        api_port, grpc_port = free_port(), free_port()
        env = {**os.environ, "DATABASE_URL": database_url, "ARTIFACT_ROOT": artifacts,
               "WORK_ROOT": str(tmp / "work"), "DATA_ROOTS": str(tmp), "GRPC_PORT": str(grpc_port),
               "MAX_SAMPLES_PER_REQUEST": str(max(args.sizes)), "LOG_LEVEL": "WARNING",
               "PYTHONPATH": str(ROOT)}
        env.pop("REDIS_URL", None)
        env.pop("API_KEYS", None)
        log = tmp / "servers.log"
        procs: list[subprocess.Popen[bytes]] = []
        try:
            with open(log, "ab") as out:
                procs.append(subprocess.Popen(
                    [sys.executable, "-m", "uvicorn", "service.main:app", "--host", "127.0.0.1",
                     "--port", str(api_port), "--log-level", "warning"],
                    cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT))
                procs.append(subprocess.Popen([sys.executable, "-m", "service.oip.grpc_server"],
                                              cwd=ROOT, env=env, stdout=out,
                                              stderr=subprocess.STDOUT))
            http = httpx.Client(base_url=f"http://127.0.0.1:{api_port}", timeout=120)

            def api_up() -> bool:
                try:
                    return http.get("/healthz").status_code == 200
                except httpx.TransportError:
                    return False

            wait(api_up, procs[0], log)
            wait(lambda: "gRPC inference server on" in log.read_text(), procs[1], log)
            grpc = grpcclient.InferenceServerClient(f"127.0.0.1:{grpc_port}")
            model = load_model(onnx_path)
            rng = np.random.default_rng(1)
            results: dict[str, dict[str, float]] = {}

            def measure(n: int) -> None:
                conditions = rng.uniform(1, 100, size=(n, len(CONDITIONS))).astype(np.float32)
                npy = io.BytesIO()
                np.save(npy, conditions)
                body = npy.getvalue()
                head = json.dumps({"parameters": {"seed": 5, "binary_data_output": True},
                                   "inputs": [{"name": "conditions", "datatype": "FP32",
                                               "shape": [n, len(CONDITIONS)],
                                               "parameters": {"binary_data_size":
                                                              conditions.nbytes}}]}).encode()
                oip_body = head + conditions.tobytes()
                expected = sample(model, n, 5, conditions)

                def in_process() -> np.ndarray:
                    return sample(model, n, 5, conditions)

                def grpc_infer() -> np.ndarray:
                    tensor = grpcclient.InferInput("conditions", [n, len(CONDITIONS)], "FP32")
                    tensor.set_data_from_numpy(conditions)
                    out = grpc.infer(model_id, [tensor], parameters={"seed": 5})
                    return out.as_numpy("samples")

                def binary_post() -> np.ndarray:
                    r = http.post(f"/v1/models/{model_id}/samples", content=body,
                                  params={"seed": 5},
                                  headers={"content-type": "application/x-npy",
                                           "accept": "application/x-npy"})
                    r.raise_for_status()
                    return np.load(io.BytesIO(r.content))

                def rest_infer() -> np.ndarray:
                    r = http.post(f"/v2/models/{model_id}/infer", content=oip_body,
                                  headers={"Inference-Header-Content-Length": str(len(head)),
                                           "content-type": "application/octet-stream"})
                    r.raise_for_status()
                    cut = int(r.headers["Inference-Header-Content-Length"])
                    return np.frombuffer(r.content[cut:], "<f4").reshape(n, -1)

                one_row = conditions[:1]
                query = {"n": n, "seed": 5, **{c: float(one_row[0, i])
                                               for i, c in enumerate(CONDITIONS)}}
                expected_get = sample(model, n, 5, np.repeat(one_row, n, axis=0))

                def get_as(fmt: str) -> Callable[[], np.ndarray]:
                    def get() -> np.ndarray:
                        r = http.get(f"/v1/models/{model_id}/samples",
                                     params={**query, "format": fmt})
                        r.raise_for_status()
                        return decode(r.content, fmt)
                    return get

                def post_as(fmt: str) -> Callable[[], np.ndarray]:
                    def post() -> np.ndarray:
                        r = http.post(f"/v1/models/{model_id}/samples", content=body,
                                      params={"seed": 5, "format": fmt},
                                      headers={"content-type": "application/x-npy"})
                        r.raise_for_status()
                        return decode(r.content, fmt)
                    return post

                ways = {"in-process sampler": in_process, "gRPC ModelInfer": grpc_infer,
                        "binary POST /v1 samples (npy)": binary_post,
                        "binary POST /v1 samples (arrow)": post_as("arrow"),
                        "REST /v2 infer (binary)": rest_infer,
                        "GET /v1 samples (npy)": get_as("npy"),
                        "GET /v1 samples (arrow)": get_as("arrow"),
                        "GET /v1 samples (json)": get_as("json")}
                if n <= JSON_ROWS:
                    ways["binary POST /v1 samples (json)"] = post_as("json")
                for name, fn in ways.items():
                    want = expected_get if name.startswith("GET") else expected
                    assert np.array_equal(fn(), want), name  # the same rows
                # n = 1: rows/s from the median of many calls (one call is noise); large n:
                # the best of `repeats` calls.
                rates: dict[str, float] = {}
                extra: dict[str, dict[str, float]] = {}
                for name, fn in ways.items():
                    if n == 1:
                        p50, p99 = latencies(fn, args.latency_calls)
                        rates[name] = 1e3 / p50
                        extra[name] = {"p50_ms": round(p50, 3), "p99_ms": round(p99, 3)}
                    else:
                        rates[name] = best_rate(fn, n, args.repeats)
                base = rates["in-process sampler"]
                for name, rate in rates.items():
                    results[f"{name}, n={n}"] = {"rows_per_s": round(rate),
                                                 "ratio_to_in_process": round(rate / base, 4),
                                                 **extra.get(name, {})}

            for n in args.sizes:
                measure(n)
            grpc.close()
            http.close()
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                proc.wait(20)
    out = {"bench": "protocols", "date": time.strftime("%Y-%m-%d"), "sizes": args.sizes,
           "repeats": args.repeats, "latency_calls": args.latency_calls,
           "cpus": os.cpu_count(), "results": results,
           "target": "binary HTTP and gRPC at 10^6 rows >= 0.8x the in-process sampler"}
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))
    for key, row in results.items():
        latency = (f"  p50 {row['p50_ms']} ms  p99 {row['p99_ms']} ms" if "p50_ms" in row
                   else "")
        print(f"{key:45s} {row['rows_per_s']:>12,d} rows/s  "
              f"{row['ratio_to_in_process']:.3f}x{latency}")


if __name__ == "__main__":
    main()
