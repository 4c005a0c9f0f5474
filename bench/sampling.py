"""Sampling throughput: the service's ONNX Runtime path against PyTorch eager on the same
generator, same rows, same thread count. Prints rows/s and the ratio; asserts nothing.

    .venv/bin/python bench/sampling.py [--rows 1000000] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402
import torch  # noqa: E402

from models.architectures import build_generator  # noqa: E402
from models.export import export_onnx  # noqa: E402
from models.preprocessing import fit_transform  # noqa: E402
from models.spec import ArchitectureSpec  # noqa: E402


def best_of(fn, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--chunk", type=int, default=65_536)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--preprocessing", default="standard")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    rng = np.random.default_rng(0)
    n_features, n_conditions = 4, 3
    x = rng.normal(size=(10_000, n_features)).astype(np.float32)
    a = rng.uniform(1, 100, size=(10_000, n_conditions)).astype(np.float32)
    feature_tf = fit_transform(args.preprocessing, x)
    cond_tf = fit_transform(args.preprocessing, a)
    arch = ArchitectureSpec.model_validate({"name": "mlp", "latent_dim": 16,
                                            "generator": {"width": 256, "depth": 3}})
    gen = build_generator(arch, n_features, n_conditions).eval()

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "g.onnx"
        export_onnx(gen, path, feature_transform=feature_tf, condition_transform=cond_tf,
                    metadata={})
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = args.threads
        sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])

        z = rng.normal(size=(args.rows, 16)).astype(np.float32)
        cond = np.repeat(a[:1], args.rows, axis=0)

        def run_onnx() -> None:
            for i in range(0, args.rows, args.chunk):
                sess.run(["samples"], {"z": z[i:i + args.chunk],
                                       "conditions": cond[i:i + args.chunk]})

        @torch.no_grad()
        def run_torch() -> None:
            fwd, inv = cond_tf.forward_module(), feature_tf.inverse_module()
            for i in range(0, args.rows, args.chunk):
                zz = torch.from_numpy(z[i:i + args.chunk])
                aa = torch.from_numpy(cond[i:i + args.chunk])
                inv(gen(zz, fwd(aa)))

        t_onnx, t_torch = best_of(run_onnx), best_of(run_torch)
    print(json.dumps({
        "rows": args.rows, "threads": args.threads, "preprocessing": args.preprocessing,
        "onnxruntime_rows_per_s": round(args.rows / t_onnx),
        "torch_eager_rows_per_s": round(args.rows / t_torch),
        "onnx_over_torch": round(t_torch / t_onnx, 2),
    }))


if __name__ == "__main__":
    main()
