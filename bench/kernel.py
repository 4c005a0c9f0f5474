"""The sampling kernel: the service's in-process sampler against its ceilings, in one run.

For two generators, exported the way a job exports them (models.export: preprocessing in the
graph, metadata) -

- lamarr: the Lamarr-like conditional MLP, 64 latent + 4 conditions -> 4 x 128 LeakyReLU -> 3;
- toy: the default MLP of a 2-D toy (8 Gaussians), unconditional -

at batch 1, 1k, 64k and 1M rows it times:

- sampler: serving.sampling.sample, what the API calls (noise drawn inside, in pieces of
  serving.sampling.CHUNK_ROWS drawn ahead, onnxruntime calls of serving.sampling.run_rows);
- ort: bare onnxruntime on the same file, noise drawn beforehand (the ceiling): the best of
  calls of 4096, 8192 and 65,536 rows;
- eager: the PyTorch generator in eval mode with its transforms, noise drawn beforehand;
- noise: serving.sampling.draw_noise alone, and its share of the sampler's time.

Prints rows/s and the ratio sampler/ort (the target at batch >= 64k: 0.9 or more), the best
of --repeats after one warm-up call; threads as the service runs them (onnxruntime's default)
unless --threads. Asserts nothing.

    .venv/bin/python bench/kernel.py [--repeats 5] [--threads N] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402
import torch  # noqa: E402

from models.architectures import build_generator  # noqa: E402
from models.export import export_onnx  # noqa: E402
from models.preprocessing import fit_transform  # noqa: E402
from models.spec import ArchitectureSpec  # noqa: E402
from serving import sampling  # noqa: E402

BATCHES = (1, 1_000, 65_536, 1_000_000)
GENERATORS: dict[str, dict[str, Any]] = {
    "lamarr": {"latent_dim": 64, "width": 128, "depth": 4, "features": 3, "conditions": 4},
    "toy": {"latent_dim": None, "width": None, "depth": None, "features": 2, "conditions": 0},
}


def export(name: str, folder: Path) -> tuple[Path, torch.nn.Module, Any, Any]:
    g = GENERATORS[name]
    rng = np.random.default_rng(0)
    x = rng.normal(size=(10_000, g["features"])).astype(np.float32)
    feature_tf = fit_transform("standard", x)
    cond_tf = None
    if g["conditions"]:
        a = rng.uniform(1, 100, size=(10_000, g["conditions"])).astype(np.float32)
        cond_tf = fit_transform("standard", a)
    arch: dict[str, Any] = {"name": "mlp"}
    if g["latent_dim"]:
        arch |= {"latent_dim": g["latent_dim"],
                 "generator": {"width": g["width"], "depth": g["depth"]}}
    spec = ArchitectureSpec.model_validate(arch)  # latent_dim null: build_generator picks it
    torch.manual_seed(0)
    gen = build_generator(spec, g["features"], g["conditions"]).eval()
    path = folder / f"{name}.onnx"
    meta = {"latent_dim": json.dumps(gen.latent_dim),
            "feature_names": json.dumps([f"x{i}" for i in range(g["features"])]),
            "condition_names": json.dumps([f"a{i}" for i in range(g["conditions"])])}
    export_onnx(gen, path, feature_transform=feature_tf, condition_transform=cond_tf,
                metadata=meta)
    return path, gen, feature_tf, cond_tf


def best(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up: first-call allocations, thread pools
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def time_batch(model: sampling.LoadedModel, gen: torch.nn.Module, feature_tf: Any,
               cond_tf: Any, n: int, repeats: int) -> dict[str, float]:
    """The four timings of one model at one batch size, as rows/s, and the two ratios."""
    n_conditions = len(model.condition_names)
    conditions = (np.random.default_rng(1).uniform(1, 100, (n, n_conditions))
                  .astype(np.float32) if n_conditions else None)
    z = sampling.draw_noise(7, n, model.latent_dim)
    chunk = sampling.run_rows(model)
    fwd = cond_tf.forward_module() if cond_tf is not None else None
    inv = feature_tf.inverse_module()

    def run_sampler() -> None:
        sampling.sample(model, n, 7, conditions)

    def ort_in(calls: int) -> Callable[[], None]:
        def run_ort() -> None:
            for i in range(0, n, calls):
                feeds = {model.input_names[0]: z[i:i + calls]}
                if conditions is not None:
                    feeds[model.input_names[1]] = conditions[i:i + calls]
                model.session.run([model.output_name], feeds)
        return run_ort

    @torch.no_grad()
    def run_eager() -> None:
        for i in range(0, n, chunk):
            zz = torch.from_numpy(z[i:i + chunk])
            aa = (fwd(torch.from_numpy(conditions[i:i + chunk]))
                  if conditions is not None and fwd is not None else None)
            inv(gen(zz, aa))

    def run_noise() -> None:
        sampling.draw_noise(7, n, model.latent_dim)

    reps = repeats if n < 1_000_000 else max(2, repeats // 2)
    if n <= 1000:
        reps *= 20  # short calls: more of them for a stable best
    t = {k: best(f, reps) for k, f in (("sampler", run_sampler), ("eager", run_eager),
                                       ("noise", run_noise))}
    t["ort"] = min(best(ort_in(calls), reps) for calls in sorted({4096, 8192, 65_536, n}))
    return {**{f"{k}_rows_per_s": round(n / v) for k, v in t.items()},
            "sampler_over_ort": round(t["ort"] / t["sampler"], 3),
            "noise_share": round(t["noise"] / t["sampler"], 3)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=0,
                   help="onnxruntime and torch threads (0: onnxruntime's default, as served)")
    p.add_argument("--json", help="write the results here")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if args.threads:
        options.intra_op_num_threads = args.threads
    rows: list[dict[str, Any]] = []
    print(f"sampling kernel: onnxruntime {ort.__version__}, torch {torch.__version__}, "
          f"threads {args.threads or 'default'}, best of {args.repeats}")
    print(f"{'model':7s} {'batch':>8s} {'sampler rows/s':>15s} {'ort rows/s':>12s} "
          f"{'eager rows/s':>12s} {'noise rows/s':>13s} {'sampler/ort':>11s} {'noise share':>11s}")
    with tempfile.TemporaryDirectory() as tmp:
        for name in GENERATORS:
            path, gen, feature_tf, cond_tf = export(name, Path(tmp))
            model = sampling.load_model(path, ["CPUExecutionProvider"])
            if args.threads:
                model.session = ort.InferenceSession(str(path), options,
                                                     providers=["CPUExecutionProvider"])
            for n in BATCHES:
                row = {"model": name, "batch": n,
                       **time_batch(model, gen, feature_tf, cond_tf, n, args.repeats)}
                rows.append(row)
                print(f"{name:7s} {n:8d} {row['sampler_rows_per_s']:15,d} "
                      f"{row['ort_rows_per_s']:12,d} {row['eager_rows_per_s']:12,d} "
                      f"{row['noise_rows_per_s']:13,d} {row['sampler_over_ort']:11.3f} "
                      f"{row['noise_share']:11.3f}", flush=True)
    result = {"bench": "kernel", "date": time.strftime("%Y-%m-%d"),
              "machine": platform.processor() or platform.machine(),
              "onnxruntime": ort.__version__, "torch": torch.__version__,
              "threads": args.threads or "default", "rows": rows,
              "target": "sampler/ort >= 0.9 at batch >= 65,536"}
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
