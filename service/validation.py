"""Checks a job spec must pass before it is queued, beyond the spec's own validation; and
the conditions of a sampling request, to the float columns the ONNX graph takes."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from gan_platform.records import Records
from gan_platform.settings import Settings
from models.resources import MemoryBudgetExceeded, check_budget, estimate_job_memory
from models.spec import JobSpec
from service.problems import invalid
from serving.sampling import LoadedModel, UnknownCategory, encode_category

URI_LOC: list[str | int] = ["body", "dataset", "uri"]

def builtin_names() -> tuple[str, ...]:
    """The builtin sets a worker serves (models.datasets.BUILTINS)."""
    from models.datasets import BUILTINS

    return tuple(BUILTINS)


def _under(path: str, roots: Sequence[Path]) -> bool:
    from models.datasets.files import is_under

    real = os.path.realpath(path)
    return any(is_under(real, Path(root)) for root in roots)


def check_dataset_uri(uri: str, settings: Settings, records: Records) -> None:
    """Raise a 422 Problem when a worker would refuse the URI (or could not find it).

    The URI is parsed by models.datasets.uri, the parser the worker's loader uses: what
    passes here, the worker can resolve (dataset://ID/../x is refused here, not there)."""
    from models.datasets import InvalidURI, parse_dataset_uri

    try:
        parsed = parse_dataset_uri(uri)
    except InvalidURI as exc:
        raise invalid(str(exc), URI_LOC) from exc
    if parsed.scheme == "builtin":
        names = builtin_names()
        if parsed.name not in names:
            raise invalid(f"unknown builtin data set {parsed.name!r}; builtins: "
                          f"{', '.join(names)}", URI_LOC)
    elif parsed.scheme == "file":
        path = str(parsed.path)
        roots = list(settings.DATA_ROOTS)
        if not _under(path, roots):
            shown = ", ".join(str(r) for r in roots) or "(none configured)"
            raise invalid(f"{uri} is outside the allowed data roots ({shown}); set DATA_ROOTS "
                          "or upload the file with POST /v1/datasets", URI_LOC)
        if not Path(os.path.realpath(path)).is_file():
            raise invalid(f"no such file: {path}", URI_LOC)
    elif parsed.scheme == "dataset":
        dataset_id = str(parsed.upload_id)
        if records.get_dataset(dataset_id) is None:
            raise invalid(f"no uploaded data set {dataset_id!r} (POST /v1/datasets first)",
                          URI_LOC)
    else:  # http, https, s3: the parser admits no other scheme
        allowed = [h.lower() for h in settings.ALLOWED_HOSTS]
        if parsed.host not in allowed:
            what = "bucket" if parsed.scheme == "s3" else "host"
            raise invalid(f"{what} {parsed.host!r} is not allowed for {parsed.scheme}:// data "
                          f"sets; allowed: {', '.join(allowed) or '(none: set ALLOWED_HOSTS)'}",
                          URI_LOC)


def condition_column(model: LoadedModel, name: str, values: Sequence[object],
                     loc: list[str | int], field: str
                     ) -> tuple[np.ndarray | None, dict[str, Any] | None]:
    """(the float32 column the graph takes for condition `name`, None), or (None, an error
    entry for a 422). A categorical condition takes its values (ints or strings, "3" in a
    query) and becomes their codes; the others take numbers (numeric strings too)."""
    categories = model.categories.get(name)
    if categories is not None:
        try:
            return encode_category(name, categories, values), None
        except UnknownCategory as exc:
            return None, {"loc": loc, "field": field, "msg": str(exc), "type": "enum",
                          "ctx": {"expected": exc.known}}
    if isinstance(values, np.ndarray) and values.dtype.kind in "iuf":  # a binary body's column
        return values.astype(np.float32, copy=False).reshape(-1), None
    try:
        if any(isinstance(v, bool) for v in values):
            raise ValueError("a boolean")
        return np.asarray(values, dtype=np.float32).reshape(-1), None
    except (TypeError, ValueError):
        bad = next((v for v in values if not _is_number(v)), None)
        return None, {"loc": loc, "field": field, "msg": f"not a number: {bad!r}"[:200],
                      "type": "float_parsing"}


def _is_number(value: object) -> bool:
    if isinstance(value, bool):
        return False
    try:
        float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False
    return True


def check_job_resources(spec: JobSpec, settings: Settings) -> None:
    """422 when the memory the spec would need (models.resources: weights, optimiser state,
    activations of a batch) is above MAX_JOB_MEMORY_BYTES. Each field's own cap allows specs
    of terabytes together (width 8192 x depth 64 at batch 10^6); this checks them together.
    The worker checks again with the data's real shape once they are loaded."""
    estimate = estimate_job_memory(spec)
    try:
        check_budget(estimate, settings.MAX_JOB_MEMORY_BYTES, "MAX_JOB_MEMORY_BYTES")
    except MemoryBudgetExceeded as exc:
        raise invalid(str(exc), estimate.dominant_field(), type="memory-budget") from exc
