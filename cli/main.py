"""`gan`: train, follow, sample and judge models of a GAN service, over its HTTP API only.

The base URL and API key come from --url / --api-key or GAN_URL / GAN_API_KEY; a key is sent
as `Authorization: Bearer KEY`.
"""

from __future__ import annotations

import io
import json
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Train GANs, follow jobs, sample models and read their quality reports.")
console = Console()
err = Console(stderr=True)

SAMPLE_FORMATS = {".csv": "csv", ".npy": "npy", ".parquet": "parquet", ".pq": "parquet"}


class Api:
    def __init__(self, url: str, api_key: str | None, timeout: float) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.client = httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=timeout)

    def call(self, method: str, path: str, **kw: Any) -> httpx.Response:
        try:
            r = self.client.request(method, path, **kw)
        except httpx.TransportError as exc:
            fail(f"cannot reach {self.client.base_url}: {exc}", 3)
        if r.status_code >= 400:
            detail = r.text
            if r.headers.get("content-type", "").startswith(("application/problem+json",
                                                             "application/json")):
                body = r.json()
                detail = body.get("detail") or body.get("title") or r.text
            fail(f"HTTP {r.status_code} {method} {path}: {detail}", 2)
        return r


def fail(message: str, code: int = 1) -> None:
    err.print(f"[red]error:[/red] {message}")
    raise typer.Exit(code)


def api(ctx: typer.Context) -> Api:
    return ctx.obj


@app.callback()
def main(
    ctx: typer.Context,
    url: Annotated[str, typer.Option(envvar="GAN_URL", help="service base URL")
                   ] = "http://127.0.0.1:8000",
    api_key: Annotated[str | None, typer.Option(envvar="GAN_API_KEY", help="API key (Bearer)")
                       ] = None,
    timeout: Annotated[float, typer.Option(help="HTTP timeout, seconds")] = 60.0,
) -> None:
    ctx.obj = Api(url, api_key, timeout)


# --- jobs ------------------------------------------------------------------------------------------


def _fmt_eta(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def parse_sse(lines: Iterable[str]) -> Iterator[tuple[str, Any, str | None]]:
    """(event, data, id) of each event of a text/event-stream, given its lines (without their
    line ends), dispatched as the HTML standard says: a blank line ends an event, which is
    dispatched only when it had data; `data` lines join with newlines (decoded here as JSON);
    the event name defaults to "message"; the id is the last one seen, kept across events;
    comments (":...") and other fields (`retry`) are skipped; one space after the colon goes.
    The tests read the service's streams with it too."""
    kind: str | None = None
    data: list[str] = []
    last_id: str | None = None
    for line in lines:
        if line == "":
            if data:
                yield kind or "message", json.loads("\n".join(data)), last_id
            kind, data = None, []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "event":
            kind = value
        elif name == "data":
            data.append(value)
        elif name == "id" and "\0" not in value:
            last_id = value


def _sse(client: httpx.Client, path: str) -> Iterator[tuple[str, Any, str | None]]:
    """(event, data, id) triples of a server-sent event stream."""
    with client.stream("GET", path, timeout=httpx.Timeout(None, connect=10)) as r:
        if r.status_code >= 400:
            r.read()
            fail(f"HTTP {r.status_code} GET {path}: {r.text}", 2)
        yield from parse_sse(r.iter_lines())


def follow_job(a: Api, job_id: str) -> dict:
    """A live progress bar (step, ETA, losses, referee AUC) until the job ends; the final job.
    The stream is reopened (resuming after the last event) if the connection drops."""
    job = a.call("GET", f"/v1/jobs/{job_id}").json()
    total = job["progress"]["total_steps"] or 1
    last_id: str | None = None
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("ETA {task.fields[eta]}"), TimeElapsedColumn(),
                  TextColumn("{task.fields[info]}"), console=err, transient=False) as bar:
        task = bar.add_task(job["status"], total=total, eta="-", info="")
        while True:
            headers = {"Last-Event-ID": last_id} if last_id else {}
            try:
                a.client.headers.update(headers)
                for kind, data, ev_id in _sse(a.client, f"/v1/jobs/{job_id}/events"):
                    last_id = ev_id or last_id
                    if kind == "progress":
                        m, losses = data.get("metrics", {}), data.get("losses", {})
                        info = "  ".join(f"{k} {losses[k]:.4g}" for k in ("critic", "generator")
                                         if k in losses)
                        if "referee_auc" in m:
                            info += f"  referee AUC {m['referee_auc']:.3f}"
                        bar.update(task, completed=data["step"], total=data["total_steps"],
                                   eta=_fmt_eta(m.get("eta_seconds")), info=info,
                                   description="running")
                    elif kind == "status":
                        bar.update(task, description=data["status"])
                    elif kind == "end":
                        bar.update(task, description=data["status"])
                        return data
            except httpx.TransportError:
                time.sleep(1.0)
            finally:
                a.client.headers.pop("Last-Event-ID", None)
            job = a.call("GET", f"/v1/jobs/{job_id}").json()
            if job["status"] in ("succeeded", "failed", "cancelled"):
                return job


@app.command()
def train(
    ctx: typer.Context,
    spec: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="job spec (JSON)")],
    follow: Annotated[bool, typer.Option("--follow", "-f", help="show progress until it ends")
                      ] = False,
    idempotency_key: Annotated[str | None, typer.Option(help="Idempotency-Key header")] = None,
) -> None:
    """Submit a job spec. With --follow: a live progress bar; exit 1 unless it succeeds."""
    a = api(ctx)
    try:
        body = json.loads(spec.read_text())
    except json.JSONDecodeError as exc:
        fail(f"{spec} is not JSON: {exc}", 2)
    headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
    job = a.call("POST", "/v1/jobs", json=body, headers=headers).json()
    console.print(f"job {job['id']} {job['status']}")
    if not follow:
        return
    final = follow_job(a, job["id"])
    if final["status"] != "succeeded":
        fail(f"job {final['id']} {final['status']}: {final.get('error') or ''}", 1)
    console.print(f"job {final['id']} succeeded: model {final['model_id']}")


@app.command()
def follow(ctx: typer.Context, job_id: str) -> None:
    """Follow a job's progress until it ends; exit 1 unless it succeeds."""
    final = follow_job(api(ctx), job_id)
    if final["status"] != "succeeded":
        fail(f"job {job_id} {final['status']}: {final.get('error') or ''}", 1)
    console.print(f"job {job_id} succeeded: model {final['model_id']}")


@app.command()
def jobs(
    ctx: typer.Context,
    status: Annotated[list[str] | None, typer.Option(help="filter; repeatable")] = None,
    limit: int = 20,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """The newest jobs."""
    params: dict[str, Any] = {"limit": limit}
    if status:
        params["status"] = status
    body = api(ctx).call("GET", "/v1/jobs", params=params).json()
    if as_json:
        console.print_json(data=body)
        return
    table = Table("id", "status", "step", "objective", "dataset", "model", "created")
    for j in body["items"]:
        p, spec = j["progress"], j["spec"]
        objective = spec.get("objective", {})
        table.add_row(j["id"], j["status"], f"{p.get('step', 0)}/{p.get('total_steps')}",
                      objective.get("name") if isinstance(objective, dict) else str(objective),
                      spec.get("dataset", {}).get("uri", ""), j.get("model_id") or "",
                      j["created_at"][:19])
    console.print(table)
    console.print(f"{len(body['items'])} of {body['total']} jobs")


@app.command()
def cancel(ctx: typer.Context, job_id: str) -> None:
    """Cancel a job (a running one stops at its next step)."""
    job = api(ctx).call("POST", f"/v1/jobs/{job_id}/cancel").json()
    console.print(f"job {job_id} {job['status']}")


# --- models ------------------------------------------------------------------------------------


def _parse_conds(conds: list[str]) -> dict[str, float]:
    out = {}
    for item in conds:
        name, sep, value = item.partition("=")
        if not sep:
            fail(f"--cond takes NAME=VALUE, not {item!r}", 2)
        try:
            out[name.strip()] = float(value)
        except ValueError:
            fail(f"--cond {item!r}: {value!r} is not a number", 2)
    return out


@app.command()
def sample(
    ctx: typer.Context,
    model_id: str,
    n: Annotated[int, typer.Option("-n", "--n", min=1, help="number of samples")] = 1000,
    cond: Annotated[list[str] | None, typer.Option("--cond", "-c", help="NAME=VALUE, repeat "
                                                   "per condition")] = None,
    seed: Annotated[int | None, typer.Option(help="noise seed")] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help=".csv, .npy or .parquet")
                   ] = Path("samples.csv"),
) -> None:
    """Draw n samples at one condition and write them (format by the file's extension)."""
    fmt = SAMPLE_FORMATS.get(out.suffix.lower())
    if fmt is None:
        fail(f"--out {out}: use .csv, .npy or .parquet", 2)
    params: dict[str, Any] = {"n": n, "format": "arrow", **_parse_conds(cond or [])}
    if seed is not None:
        params["seed"] = seed
    r = api(ctx).call("GET", f"/v1/models/{model_id}/samples", params=params)
    import pyarrow as pa

    table = pa.ipc.open_stream(io.BytesIO(r.content)).read_all()
    out.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "parquet":
        import pyarrow.parquet as pq

        pq.write_table(table, out)
    elif fmt == "csv":
        import pyarrow.csv as pcsv

        pcsv.write_csv(table, out)
    else:
        import numpy as np

        np.save(out, np.column_stack([c.to_numpy() for c in table.columns]).astype("float32"))
    console.print(f"{table.num_rows} samples ({', '.join(table.column_names)}) -> {out} "
                  f"(seed {r.headers.get('X-Seed')})")


def _g(x: Any, fmt: str = ".4g") -> str:
    return "-" if x is None else format(x, fmt)


@app.command()
def report(
    ctx: typer.Context,
    model_id: str,
    as_json: Annotated[bool, typer.Option("--json", help="the raw JSON")] = False,
) -> None:
    """The model's quality report as tables."""
    rep = api(ctx).call("GET", f"/v1/models/{model_id}/report").json()
    if as_json:
        console.print_json(data=rep)
        return
    if rep.get("error"):
        fail(f"the report of model {model_id} could not be made: {rep['error']}", 1)
    c2st = rep.get("classifier_test", {})
    energy = rep.get("energy_distance", {})
    corr = rep.get("correlation_difference", {})
    summary = Table(title=f"model {model_id}: {rep.get('reference', '')}, "
                          f"{rep.get('n_real')} real vs {rep.get('n_generated')} generated",
                    show_header=False)
    summary.add_row("classifier two-sample AUC (0.5 = indistinguishable)", _g(c2st.get("auc"),
                                                                              ".3f"))
    breakdown = rep.get("classifier_breakdown") or {}
    if breakdown.get("features_joint") is not None:
        summary.add_row("  AUC on the features jointly (no conditions)",
                        _g(breakdown["features_joint"], ".3f"))
    for entry in breakdown.get("per_feature") or []:
        summary.add_row(f"  AUC on {entry['feature']} alone", _g(entry["auc"], ".3f"))
    if rep.get("weighted"):
        summary.add_row("weighted (per-event weights)", "yes")
    summary.add_row("energy distance (standardised)", _g(energy.get("value")))
    summary.add_row("correlation difference, max |diff|", _g(corr.get("max_abs")))
    s = rep.get("summary", {})
    summary.add_row("W1 mean / max over features", f"{_g(s.get('w1_mean'))} / "
                    f"{_g(s.get('w1_max'))}")
    summary.add_row("KS max over features", _g(s.get("ks_max")))
    if "modes" in rep:
        m = rep["modes"]
        summary.add_row("modes captured (3 sigma)", f"{m['modes_captured']} / {m['n_modes']}")
        summary.add_row("high-quality share", _g(m["high_quality_fraction"], ".3f"))
    for key, value in (rep.get("images") or {}).items():
        summary.add_row(f"images: {key}", value if isinstance(value, str) else _g(value))
    console.print(summary)
    if rep.get("per_feature"):
        table = Table("feature", "W1", "KS", "KS p", "mean real", "mean gen", "std real",
                      "std gen", title="per feature")
        for f in rep["per_feature"]:
            table.add_row(f["feature"], _g(f["w1"]), _g(f["ks"], ".3f"), _g(f["ks_pvalue"], ".2g"),
                          _g(f["mean_real"]), _g(f["mean_generated"]), _g(f["std_real"]),
                          _g(f["std_generated"]))
        console.print(table)
    for cname, bins in (rep.get("binned") or {}).items():
        features = rep.get("features", [])
        table = Table(f"{cname} bin", "rows", *[f"W1 {f}" for f in features],
                      title=f"per-feature W1 in quantile bins of {cname}")
        for b in bins:
            label = (str(b["category"]) if "category" in b
                     else f"[{_g(b['low'])}, {_g(b['high'])}]")
            table.add_row(label, str(b["n_real"]),
                          *[_g(f["w1"]) for f in b["features"]])
        console.print(table)
    if rep.get("plots"):
        console.print("plots: " + ", ".join(rep["plots"]) + f"  (gan plots {model_id} --out DIR)")


@app.command()
def plots(
    ctx: typer.Context,
    model_id: str,
    out: Annotated[Path, typer.Option("--out", "-o", help="folder for the PNGs")] = Path("."),
) -> None:
    """Download every plot of the model's report as PNG files."""
    a = api(ctx)
    rep = a.call("GET", f"/v1/models/{model_id}/report").json()
    out.mkdir(parents=True, exist_ok=True)
    for name in rep.get("plots", []):
        r = a.call("GET", f"/v1/models/{model_id}/plots/{name}.png")
        (out / f"{name}.png").write_bytes(r.content)
        console.print(f"{out / (name + '.png')} ({len(r.content)} bytes)")


@app.command()
def metrics(ctx: typer.Context, job_id: str) -> None:
    """A job's whole training curve as JSON (one point per logged step)."""
    console.print_json(data=api(ctx).call("GET", f"/v1/jobs/{job_id}/metrics").json())


def run() -> None:  # pragma: no cover
    sys.exit(app())


if __name__ == "__main__":  # python -m cli.main
    app()
