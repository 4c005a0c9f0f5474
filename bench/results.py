"""bench/RESULTS.md (and bench/RESULTS.json) from the JSON that `make bench` had each benchmark
write under bench/out/: one table per benchmark, each target with its measured figure and
whether it was met. Asserts nothing; a benchmark that did not run is listed as missing.

    .venv/bin/python bench/results.py [--out bench/out] [--notes bench/NOTES.md]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
BENCHES = ("kernel", "protocols", "concurrency", "trainer", "load")


def _load(folder: Path, name: str) -> dict[str, Any] | None:
    path = folder / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def _verdict(ok: bool) -> str:
    return "met" if ok else "**missed**"


def kernel_section(r: dict[str, Any]) -> tuple[list[str], list[str]]:
    lines = ["| model | batch | sampler rows/s | bare onnxruntime rows/s | PyTorch eager rows/s "
             "| noise alone rows/s | sampler / onnxruntime | noise share |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for row in r["rows"]:
        lines.append(f"| {row['model']} | {row['batch']:,} | {row['sampler_rows_per_s']:,} | "
                     f"{row['ort_rows_per_s']:,} | {row['eager_rows_per_s']:,} | "
                     f"{row['noise_rows_per_s']:,} | {row['sampler_over_ort']:.2f} | "
                     f"{row['noise_share']:.2f} |")
    big = [row for row in r["rows"] if row["batch"] >= 65_536]
    worst = min(big, key=lambda row: row["sampler_over_ort"]) if big else None
    targets = []
    if worst is not None:
        targets.append(f"| in-process sampler, noise included, >= 0.9x bare onnxruntime with "
                       f"pre-drawn noise at batch >= 64k | worst {worst['sampler_over_ort']:.2f}x "
                       f"({worst['model']}, {worst['batch']:,}) | "
                       f"{_verdict(worst['sampler_over_ort'] >= 0.9)} |")
    return lines, targets


def protocols_section(r: dict[str, Any]) -> tuple[list[str], list[str]]:
    lines = ["| way, n | rows/s | / in-process | n=1 p50 | n=1 p99 |", "|---|---:|---:|---:|---:|"]
    for key, row in r["results"].items():
        lines.append(f"| {key} | {row['rows_per_s']:,} | {row['ratio_to_in_process']:.3f} | "
                     f"{row.get('p50_ms', '')} | {row.get('p99_ms', '')} |")
    targets = []
    top = max(r["sizes"])
    for way in ("binary POST /v1 samples (npy)", "gRPC ModelInfer"):
        row = r["results"].get(f"{way}, n={top}")
        if row is not None and top >= 1_000_000:
            targets.append(f"| {way} at 10^6 rows >= 0.8x the in-process sampler | "
                           f"{row['ratio_to_in_process']:.2f}x | "
                           f"{_verdict(row['ratio_to_in_process'] >= 0.8)} |")
    return lines, targets


def concurrency_section(r: dict[str, Any]) -> tuple[list[str], list[str]]:
    lines = ["| route | clients | requests/s | p50 ms | p99 ms | errors |",
             "|---|---:|---:|---:|---:|---|"]
    for name, rows in r["results"].items():
        for row in rows:
            lines.append(f"| {name} | {row['clients']} | {row['requests_per_s']} | "
                         f"{row['p50_ms']} | {row['p99_ms']} | {row['errors'] or 0} |")
    targets = []
    ours = next((rows for name, rows in r["results"].items() if name.startswith("GET")), [])
    by_clients = {row["clients"]: row for row in ours}
    if 1 in by_clients:
        one = by_clients[1]
        targets.append(f"| n=1, one client: p50 < 1 ms | {one['p50_ms']} ms | "
                       f"{_verdict(one['p50_ms'] < 1)} |")
        targets.append(f"| n=1, one client: p99 < 3 ms | {one['p99_ms']} ms | "
                       f"{_verdict(one['p99_ms'] < 3)} |")
    if 50 in by_clients:
        fifty = by_clients[50]
        targets.append(f"| n=1, 50 clients: p99 < 100 ms, no errors | {fifty['p99_ms']} ms, "
                       f"errors {fifty['errors'] or 0} | "
                       f"{_verdict(fifty['p99_ms'] < 100 and not fifty['errors'])} |")
    return lines, targets


def trainer_section(r: dict[str, Any]) -> tuple[list[str], list[str]]:
    lines = [f"{r['width']} x {r['depth']} MLPs, batch {r['batch']}, {r['steps']} steps, "
             f"{r['threads']} thread(s), {r['device']}, torch {r['torch']}, {r['date']}.", "",
             "| objective | critic steps | bare loop steps/s | ours steps/s | ours / bare (time) "
             "| ours + referee steps/s | ours + referee / bare | bare loop, torch.compile |",
             "|---|---:|---:|---:|---:|---:|---:|---|"]
    targets = []
    for row in r["rows"]:
        lines.append(f"| {row['objective']} | {row['n_critic']} | {row['bare_steps_per_s']} | "
                     f"{row['ours_steps_per_s']} | {row['time_ratio']:.2f} | "
                     f"{row.get('ours_with_referee_steps_per_s', '')} | "
                     f"{row.get('time_ratio_with_referee', '')} | "
                     f"{_compiled(row)} |")
        targets.append(f"| trainer step <= 1.10x the bare loop on {r['device']}: "
                       f"{row['objective']} | {row['time_ratio']:.2f}x | "
                       f"{_verdict(row['time_ratio'] <= 1.10)} |")
        if "ours_compile_over_bare" in row:
            targets.append(f"| training.compile >= 1.5x the bare eager loop's steps/s on "
                           f"{r['device']}: {row['objective']} | "
                           f"{row['ours_compile_over_bare']:.2f}x "
                           f"(best fast path: {_best_fast(row)}) | "
                           f"{_verdict(row['ours_compile_over_bare'] >= 1.5)} |")
    fast_rows = [row for row in r["rows"] if any(f"ours_{v}_steps_per_s" in row
                                                  for v in FAST_VARIANTS)]
    if fast_rows:
        lines += ["", "Our trainer with the fast paths, generator steps/s and the ratio to the "
                  "bare eager loop's:", "",
                  "| objective | " + " | ".join(FAST_VARIANTS.values()) + " |",
                  "|---|" + "---:|" * len(FAST_VARIANTS)]
        for row in fast_rows:
            cells = [f"{row[f'ours_{v}_steps_per_s']} ({row[f'ours_{v}_over_bare']:.2f}x)"
                     if f"ours_{v}_steps_per_s" in row else "" for v in FAST_VARIANTS]
            lines.append(f"| {row['objective']} | " + " | ".join(cells) + " |")
    return lines, targets


FAST_VARIANTS = {"compile": "training.compile", "bfloat16": "precision bfloat16",
                 "compile_bfloat16": "compile + bfloat16"}


def _best_fast(row: dict[str, Any]) -> str:
    name = max((v for v in FAST_VARIANTS if f"ours_{v}_over_bare" in row),
               key=lambda v: row[f"ours_{v}_over_bare"])
    return f"{FAST_VARIANTS[name]}, {row[f'ours_{name}_over_bare']:.2f}x"


def _compiled(row: dict[str, Any]) -> str:
    if "bare_compiled_steps_per_s" in row:
        return (f"{row['bare_compiled_steps_per_s']} steps/s "
                f"({row['bare_compiled_steps_per_s'] / row['bare_steps_per_s']:.2f}x eager)")
    return row.get("compile_error", "")


def load_section(r: dict[str, Any]) -> tuple[list[str], list[str]]:
    lines = [f"{r['clients']} sampling clients (n = {r['n_per_request']}), "
             f"{r['oversize_clients']} oversize loops, one submission a second, "
             f"{r['duration_s']} s.", "",
             "| kind | requests | requests/s | p50 ms | p99 ms | unexpected 5xx | transport errors |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for kind in ("sample", "oversize", "submit", "healthz"):
        s = r[kind]
        lines.append(f"| {kind} | {s['requests']} | {s['requests_per_s']} | {s['p50_ms']} | "
                     f"{s['p99_ms']} | {s['5xx']} | {s['transport_errors']} |")
    h = r["healthz"]
    targets = [f"| /healthz p99 < 100 ms under load | {h['p99_ms']} ms | "
               f"{_verdict((h['p99_ms'] or 1e9) < 100)} |",
               f"| no unexpected 5xx under load | {r['total_5xx']} | "
               f"{_verdict(r['total_5xx'] == 0)} |"]
    return lines, targets


SECTIONS = {
    "kernel": ("Sampling kernel (bench/kernel.py)", kernel_section),
    "protocols": ("Every route against the in-process sampler (bench/protocols.py)",
                  protocols_section),
    "concurrency": ("Small requests under concurrency (bench/concurrency.py)",
                    concurrency_section),
    "trainer": ("Trainer against a bare PyTorch loop (bench/trainer.py)", trainer_section),
    "load": ("Mixed load (bench/load.py)", load_section),
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=HERE / "out")
    p.add_argument("--notes", type=Path, default=HERE / "NOTES.md",
                   help="hand-written analysis appended after the tables (why a target is "
                        "missed), if the file exists")
    args = p.parse_args(argv)
    loaded = {name: _load(args.out, name) for name in BENCHES}
    doc = ["# Benchmark results", "",
           f"Written by `make bench` (bench/results.py) on {time.strftime('%Y-%m-%d %H:%M')}, "
           f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}. "
           "Every ratio is against a baseline measured in the same run on the same machine.",
           "", "Measured: " + ", ".join(f"{name} {result.get('date', 'undated')}"
                                         for name, result in loaded.items()
                                         if result is not None) + ".",
           "", "## Targets", "", "| target | measured | |", "|---|---|---|"]
    body: list[str] = []
    for name, (title, render) in SECTIONS.items():
        result = loaded[name]
        body += ["", f"## {title}", ""]
        if result is None:
            body.append(f"Not run: no {name}.json under {args.out}.")
            continue
        lines, targets = render(result)
        body += lines
        doc += targets
    doc += body
    if args.notes.exists():
        doc += ["", args.notes.read_text().rstrip()]
    (HERE / "RESULTS.md").write_text("\n".join(doc) + "\n")
    (HERE / "RESULTS.json").write_text(json.dumps(
        {k: v for k, v in loaded.items() if v is not None}, indent=2) + "\n")
    print(f"wrote {HERE / 'RESULTS.md'} and {HERE / 'RESULTS.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
