"""The real `gan` command line (a subprocess of the installed console script's module) against
a real running service: uvicorn + Celery worker on the real Redis (tests/conftest.py)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from tests.conftest import ROOT, LiveStack, fast_spec

pytestmark = pytest.mark.integration

RING = fast_spec(dataset={"uri": "builtin://conditional-ring", "max_rows": 2000}, steps=40,
                 log_every=10, referee_every=10)


def gan(stack: LiveStack, *args: str, key: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "GAN_URL": stack.url, "COLUMNS": "200", "OMP_NUM_THREADS": "1"}
    env.pop("GAN_API_KEY", None)
    if key:
        env["GAN_API_KEY"] = key
    return subprocess.run([sys.executable, "-m", "cli", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=180)


def test_the_cli_against_a_live_service(live_stack: type[LiveStack], tmp_path: Path) -> None:
    stack = live_stack(tmp_path, f"sqlite:///{tmp_path / 'gan.db'}")
    stack.start_api()
    stack.start_worker()

    # train --follow: a progress bar to the end, then the model
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(RING))
    run = gan(stack, "train", str(spec), "--follow")
    assert run.returncode == 0, (run.stdout, run.stderr, stack.logs())
    assert "40/40" in run.stderr and "ETA" in run.stderr and "referee AUC" in run.stderr
    job_id, model_id = re.search(r"job (\S+) succeeded: model (\S+)", run.stdout).groups()

    run = gan(stack, "jobs")
    assert run.returncode == 0 and job_id in run.stdout and "succeeded" in run.stdout

    run = gan(stack, "report", model_id)
    assert run.returncode == 0, run.stderr
    for text in ("classifier two-sample AUC", "energy distance", "per feature",
                 "quantile bins of angle", "hist_x"):
        assert text in run.stdout, run.stdout
    rep = json.loads(gan(stack, "report", model_id, "--json").stdout)
    assert rep["conditions"] == ["angle"]

    run = gan(stack, "plots", model_id, "--out", str(tmp_path / "plots"))
    assert run.returncode == 0, run.stderr
    pngs = sorted(p.stem for p in (tmp_path / "plots").glob("*.png"))
    assert pngs == sorted(rep["plots"])
    for name in pngs:
        with Image.open(tmp_path / "plots" / f"{name}.png") as img:
            assert img.format == "PNG" and img.size[0] >= 600

    for suffix in ("parquet", "npy", "csv"):
        out = tmp_path / f"s.{suffix}"
        run = gan(stack, "sample", model_id, "-n", "500", "--cond", "angle=1.0", "--seed", "7",
                  "--out", str(out))
        assert run.returncode == 0, run.stderr
    table = pq.read_table(tmp_path / "s.parquet")
    assert table.column_names == ["x", "y"] and table.num_rows == 500
    x = np.column_stack([c.to_numpy() for c in table.columns])
    np.testing.assert_array_equal(np.load(tmp_path / "s.npy"), x)
    np.testing.assert_allclose(np.loadtxt(tmp_path / "s.csv", delimiter=",", skiprows=1), x,
                               rtol=1e-6)
    run = gan(stack, "sample", model_id, "-n", "5", "--cond", "p=1", "--out",
              str(tmp_path / "bad.csv"))
    assert run.returncode == 2 and "angle" in run.stderr

    # a job that fails: exit status 1, with the worker's reason
    (tmp_path / "data" / "bad.csv").write_text("x,y\n" + "1,a\n" * 40)
    bad = fast_spec(dataset={"uri": f"file://{tmp_path / 'data' / 'bad.csv'}"})
    spec.write_text(json.dumps(bad))
    run = gan(stack, "train", str(spec), "--follow")
    assert run.returncode == 1, (run.stdout, run.stderr)
    assert "failed" in run.stderr and "not numeric" in run.stderr.replace("\n", " ")

    # cancel
    spec.write_text(json.dumps(fast_spec(steps=1_000_000, log_every=10)))
    run = gan(stack, "train", str(spec))
    long_id = re.search(r"job (\S+) ", run.stdout).group(1)
    stack.wait_step(long_id, 10)
    run = gan(stack, "cancel", long_id)
    assert run.returncode == 0 and re.search(r"cancell(ing|ed)", run.stdout), run.stdout
    assert stack.wait(long_id, ["cancelled"])["status"] == "cancelled"
    assert gan(stack, "cancel", long_id).returncode == 2  # 409: already finished

    # a key is sent as a Bearer token; an unreachable service is exit status 3
    from cli.main import Api

    assert Api(stack.url, "k3y", 5).client.headers["Authorization"] == "Bearer k3y"
    assert "Authorization" not in Api(stack.url, None, 5).client.headers
    run = subprocess.run([sys.executable, "-m", "cli", "--url", "http://127.0.0.1:9", "jobs"],
                         cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert run.returncode == 3 and "cannot reach" in run.stderr


def test_the_event_stream_parser_follows_the_html_standard() -> None:
    """cli.main.parse_sse, which the CLI and the tests (conftest.read_sse) read streams with."""
    from cli.main import parse_sse

    lines = [
        "retry: 2000", "",  # no data: nothing dispatched
        ": keep-alive", "",  # a comment
        "id: 7", "event: progress", 'data: {"step": 10,', 'data:  "x": " a "}', "",
        'data: {"plain": true}', "",  # no event name: "message"; the id is kept
        "event: end", "id: 9", "data:{}", "",
        "event: status", 'data: {"lost": true}',  # no blank line: the stream ended mid-event
    ]
    assert list(parse_sse(lines)) == [
        ("progress", {"step": 10, "x": " a "}, "7"),  # data lines joined with a newline
        ("message", {"plain": True}, "7"),
        ("end", {}, "9"),
    ]
