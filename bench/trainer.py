"""The trainer against a bare hand-written PyTorch loop, in one run, on the same machine.

For each objective (nsgan, wgan-gp, cramer) both train the same networks (built by
models.architectures from the same spec: a 4 x 128 MLP generator and critic by default) on the
same rows (builtin://lamarr-toy: 4 conditions, 3 targets) with the same batch, critic steps,
optimiser and learning rates (the objective's default recipe):

- ours: models.train.train on the job's split, with what a job has on at its default
  intervals: progress every 50 steps, validation (sliced Wasserstein distance) every 250,
  a checkpoint every 500, EMA and the linear learning-rate decay of the recipe; one more row
  with the referee on (training.referee_every);
- bare: the loss written out by hand (softplus; the gradient penalty; the Cramér energy
  distance), Adam, nothing else; and the same loop with both networks under torch.compile
  (the gradient penalty's critic pass eager: AOTAutograd cannot differentiate twice);
- ours with training.compile, with training.precision bfloat16, and with both (the target:
  1.5x the bare eager loop's generator steps/s at equal networks).

Prints generator steps/s and the ratio bare/ours of the time a step takes (the target:
ours <= 1.10x the bare loop; the best of --repeats interleaved runs of each), timed from step
--warmup to the last step so that both exclude their setup (compiling included). Asserts
nothing.

    OMP_NUM_THREADS=1 .venv/bin/python bench/trainer.py [--steps 550] [--threads 1]
        [--objectives nsgan wgan-gp cramer] [--device cpu|cuda] [--no-fast-rows]
        [--json out.json]
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

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import Tensor  # noqa: E402

from models.architectures import build_critic, build_generator  # noqa: E402
from models.datasets import load_dataset  # noqa: E402
from models.pipeline import split_for_training  # noqa: E402
from models.spec import JobSpec  # noqa: E402
from models.train import Progress, train  # noqa: E402

OBJECTIVES = ("nsgan", "wgan-gp", "cramer")
LOG_EVERY = 50  # training.log_every's default: the trainer's clock reads at progress reports


def job_spec(objective: str, steps: int, batch: int, width: int, depth: int, device: str,
             **training: Any) -> JobSpec:
    net = {"width": width, "depth": depth}
    return JobSpec.model_validate({
        "objective": objective,
        "architecture": {"name": "mlp", "generator": net, "critic": net},
        "dataset": {"uri": "builtin://lamarr-toy"},
        "training": {"steps": steps, "batch_size": batch, "seed": 1, "device": device,
                     "patience": 0, **training},
    })


FAST_VARIANTS: dict[str, dict[str, Any]] = {
    "compile": {"compile": True},
    "bfloat16": {"precision": "bfloat16"},
    "compile_bfloat16": {"compile": True, "precision": "bfloat16"},
}


def time_ours(spec: JobSpec, warmup: int) -> float:
    """Generator steps/s of models.train.train from step `warmup` to the last."""
    data = load_dataset(spec.dataset, data_roots=[])
    _, _, fit, validation = split_for_training(spec, data)
    stamps: dict[int, float] = {}

    def on_progress(p: Progress) -> None:
        stamps[p.step] = time.perf_counter()

    with tempfile.TemporaryDirectory() as tmp:
        train(spec, fit, validation=validation, workdir=Path(tmp), on_progress=on_progress)
    last = spec.training.steps
    assert warmup in stamps and last in stamps, sorted(stamps)
    return (last - warmup) / (stamps[last] - stamps[warmup])


def _norm(v: Tensor) -> Tensor:
    return torch.sqrt((v**2).sum(dim=-1) + 1e-12)


def _grad_penalty(f: Callable[[Tensor], Tensor], real: Tensor, fake: Tensor) -> Tensor:
    eps = torch.rand(real.shape[0], 1, device=real.device)
    x_hat = (eps * real + (1 - eps) * fake).requires_grad_(True)
    (grad,) = torch.autograd.grad(f(x_hat).sum(), x_hat, create_graph=True)
    return ((grad.norm(2, dim=1) - 1) ** 2).mean()


def bare_losses(objective: str, gp_lambda: float) -> tuple[Callable, Callable]:
    """(critic loss, generator loss) of (D, real, fakes, cond), written out by hand."""
    # D_eager: the critic outside torch.compile, for the gradient penalty.
    if objective == "nsgan":
        def d_loss(D, D_eager, real, fakes, a):  # type: ignore[no-untyped-def]
            return F.softplus(-D(real, a)).mean() + F.softplus(D(fakes[0], a)).mean()

        def g_loss(D, real, fakes, a):  # type: ignore[no-untyped-def]
            return F.softplus(-D(fakes[0], a)).mean()
    elif objective == "wgan-gp":
        def d_loss(D, D_eager, real, fakes, a):  # type: ignore[no-untyped-def]
            w1 = D(real, a).mean() - D(fakes[0], a).mean()
            return -w1 + gp_lambda * _grad_penalty(lambda x: D_eager(x, a), real, fakes[0])

        def g_loss(D, real, fakes, a):  # type: ignore[no-untyped-def]
            return -D(fakes[0], a).mean()
    elif objective == "cramer":
        def d_loss(D, D_eager, real, fakes, a):  # type: ignore[no-untyped-def]
            anchor = D(fakes[1], a)

            def f(x: Tensor, critic: Callable = D) -> Tensor:
                h = critic(x, a)
                return _norm(h - anchor) - _norm(h)
            surrogate = f(real).mean() - f(fakes[0]).mean()
            penalty = _grad_penalty(lambda x: f(x, D_eager), real, fakes[0])
            return -surrogate + gp_lambda * penalty

        def g_loss(D, real, fakes, a):  # type: ignore[no-untyped-def]
            h_r, h_g, h_g2 = D(real, a), D(fakes[0], a), D(fakes[1], a)
            return (_norm(h_r - h_g) + _norm(h_r - h_g2) - _norm(h_g - h_g2)).mean()
    else:
        raise ValueError(objective)
    return d_loss, g_loss


def time_bare(spec: JobSpec, warmup: int, compiled: bool = False) -> float:
    """Generator steps/s of the hand-written loop from step `warmup` to the last; `compiled`:
    with both networks under torch.compile (inductor)."""
    t = spec.training
    device = torch.device("cuda" if t.device == "cuda" and torch.cuda.is_available() else "cpu")
    data = load_dataset(spec.dataset, data_roots=[])
    x = torch.as_tensor(data.features, dtype=torch.float32)
    a = torch.as_tensor(data.conditions, dtype=torch.float32)
    x = ((x - x.mean(0)) / x.std(0)).to(device)
    a = ((a - a.mean(0)) / a.std(0)).to(device)
    spec = spec.with_latent_dim(x.shape[1], a.shape[1])
    arch = spec.architecture
    assert arch.latent_dim is not None and t.batch_size is not None and t.n_critic is not None
    assert t.lr_g is not None and t.lr_d is not None and t.betas is not None
    torch.manual_seed(t.seed)
    objective = spec.objective.name
    n_fakes = 2 if objective == "cramer" else 1
    critic_dim = getattr(spec.objective, "feature_dim", 1) if objective == "cramer" else 1
    G = build_generator(arch, x.shape[1], a.shape[1], None).to(device)
    D = build_critic(arch, x.shape[1], a.shape[1], None, critic_dim).to(device)
    D_plain = D
    if compiled:
        G, D = torch.compile(G), torch.compile(D)  # type: ignore[assignment]
    D_out: Callable[[Tensor, Tensor], Tensor]
    D_eager: Callable[[Tensor, Tensor], Tensor]
    if critic_dim == 1:
        def D_out(x_: Tensor, a_: Tensor) -> Tensor:
            return D(x_, a_).squeeze(-1)

        def D_eager(x_: Tensor, a_: Tensor) -> Tensor:
            return D_plain(x_, a_).squeeze(-1)
    else:
        D_out, D_eager = D, D_plain
    opt_g = torch.optim.Adam(G.parameters(), lr=t.lr_g, betas=t.betas)
    opt_d = torch.optim.Adam(D.parameters(), lr=t.lr_d, betas=t.betas)
    d_loss_fn, g_loss_fn = bare_losses(objective, float(getattr(spec.objective, "gp_lambda", 0)
                                                        or 0.0))
    n, b, latent = len(x), t.batch_size, arch.latent_dim

    def fakes_at(cond: Tensor) -> list[Tensor]:
        return [G(torch.randn(b, latent, device=device), cond) for _ in range(n_fakes)]

    start = 0.0
    for step in range(t.steps):
        if step == warmup:
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
        for _ in range(t.n_critic):
            idx = torch.randint(0, n, (b,), device=device)
            with torch.no_grad():
                fakes = fakes_at(a[idx])
            loss = d_loss_fn(D_out, D_eager, x[idx], fakes, a[idx])
            opt_d.zero_grad(set_to_none=True)
            loss.backward()
            opt_d.step()
        idx = torch.randint(0, n, (b,), device=device)
        loss = g_loss_fn(D_out, x[idx], fakes_at(a[idx]), a[idx])
        opt_g.zero_grad(set_to_none=True)
        loss.backward()
        opt_g.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    float(loss.detach())  # the last step's result, on the host
    return (t.steps - warmup) / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--objectives", nargs="+", default=list(OBJECTIVES), choices=OBJECTIVES)
    p.add_argument("--steps", type=int, default=550,
                   help="generator steps a run (550: one checkpoint and two validations)")
    p.add_argument("--warmup", type=int, default=50, help="steps before the clock starts")
    p.add_argument("--batch", type=int, default=512)
    p.add_argument("--width", type=int, default=128)
    p.add_argument("--depth", type=int, default=4)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=2,
                   help="runs of the bare loop and of ours, interleaved; the best of each counts")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--no-referee-row", action="store_true")
    p.add_argument("--no-fast-rows", action="store_true",
                   help="skip torch.compile and bfloat16: the bare loop compiled, ours with "
                        "training.compile, training.precision bfloat16 and both (10-30 s of "
                        "compiling each)")
    p.add_argument("--json", help="write the results here")
    args = p.parse_args(argv)
    if args.warmup % LOG_EVERY or not 0 < args.warmup < args.steps:
        p.error(f"--warmup: a multiple of {LOG_EVERY} (progress comes every {LOG_EVERY} steps) "
                "below --steps")
    torch.set_num_threads(args.threads)
    rows = []
    print(f"trainer vs bare loop: {args.width}x{args.depth} MLPs, batch {args.batch}, "
          f"{args.steps} steps (timed from {args.warmup}), {args.threads} thread(s), "
          f"{args.device}, torch {torch.__version__}")
    print(f"{'objective':10s} {'n_critic':>8s} {'bare steps/s':>12s} {'ours steps/s':>12s} "
          f"{'ours/bare time':>14s}  {'+referee steps/s':>16s} {'time':>6s}")
    for objective in args.objectives:
        spec = job_spec(objective, args.steps, args.batch, args.width, args.depth, args.device)
        # Interleaved and the best of --repeats: a shared machine's slow spells hit one run,
        # not the ratio.
        bare = ours = 0.0
        for _ in range(args.repeats):
            bare = max(bare, time_bare(spec, args.warmup))
            ours = max(ours, time_ours(spec, args.warmup))
        row: dict[str, Any] = {"objective": objective, "n_critic": spec.training.n_critic,
                               "bare_steps_per_s": round(bare, 2),
                               "ours_steps_per_s": round(ours, 2),
                               "time_ratio": round(bare / ours, 3)}
        if not args.no_referee_row:
            refereed = job_spec(objective, args.steps, args.batch, args.width, args.depth,
                                args.device, referee_every=250)
            with_referee = time_ours(refereed, args.warmup)
            row |= {"ours_with_referee_steps_per_s": round(with_referee, 2),
                    "time_ratio_with_referee": round(bare / with_referee, 3)}
        if not args.no_fast_rows:
            try:
                row["bare_compiled_steps_per_s"] = round(time_bare(spec, args.warmup, True), 2)
            except Exception as exc:  # noqa: BLE001 - reported, as what stands in the way
                row["compile_error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
            for name, training in FAST_VARIANTS.items():
                fast = time_ours(job_spec(objective, args.steps, args.batch, args.width,
                                          args.depth, args.device, **training), args.warmup)
                row[f"ours_{name}_steps_per_s"] = round(fast, 2)
                row[f"ours_{name}_over_bare"] = round(fast / bare, 3)
        rows.append(row)
        print(f"{objective:10s} {row['n_critic']:8d} {bare:12.1f} {ours:12.1f} "
              f"{row['time_ratio']:13.3f}x  "
              + (f"{row['ours_with_referee_steps_per_s']:16.1f} "
                 f"{row['time_ratio_with_referee']:5.3f}x" if "time_ratio_with_referee" in row
                 else "")
              + (f"  compiled bare: {row['bare_compiled_steps_per_s']} steps/s"
                 if "bare_compiled_steps_per_s" in row else "")
              + (f"  compiled bare: {row['compile_error']}" if "compile_error" in row else "")
              + "".join(f"  {name}: {row[f'ours_{name}_steps_per_s']} steps/s "
                        f"({row[f'ours_{name}_over_bare']:.2f}x bare)"
                        for name in FAST_VARIANTS if f"ours_{name}_steps_per_s" in row),
              flush=True)
    result = {"bench": "trainer", "date": time.strftime("%Y-%m-%d"), "device": args.device,
              "machine": platform.processor() or platform.machine(), "threads": args.threads,
              "torch": torch.__version__, "batch": args.batch, "width": args.width,
              "depth": args.depth, "steps": args.steps, "repeats": args.repeats, "rows": rows,
              "target": "ours/bare time <= 1.10; ours with training.compile >= 1.5x bare "
                        "steps/s"}
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
