"""Where a model's quality report and plots live in the artifact store (torch-free: the API
and the worker both use it)."""

from __future__ import annotations

import re

PLOT_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")


def report_key(model_id: str) -> str:
    return f"models/{model_id}/report.json"


def plot_key(model_id: str, name: str) -> str:
    if not PLOT_NAME.match(name) or name.startswith("."):
        raise ValueError(f"bad plot name {name!r}")
    return f"models/{model_id}/plots/{name}.png"
