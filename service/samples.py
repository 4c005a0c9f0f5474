"""Sampling requests: one validation of the conditions for every sampling route, the bound
on the rows in flight, and the answer (streamed when large).

The routers parse the request and call these; a 422 names each offending condition.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, cast

import numpy as np
from fastapi import Response
from fastapi.responses import StreamingResponse

from gan_platform.artifacts import ArtifactStore
from service.problems import Problem, invalid
from service.validation import condition_column
from serving.formats import (
    FORMATS,
    STREAM_ROWS,
    NotAcceptable,
    choose_format,
    encode,
    encode_chunks,
)
from serving.sampling import (
    LoadedModel,
    ModelCache,
    SamplingError,
    SamplingTimeout,
    sample,
)

Loc = list[str | int]


def response_format(fmt: str | None, accept: str | None) -> str:
    """`format` (query) or the Accept header, as serving.formats.choose_format; 422 for an
    unknown `format`, 406 when nothing the client accepts can be produced."""
    try:
        return choose_format(fmt, accept)
    except NotAcceptable as exc:
        raise Problem(406, str(exc), title="Not Acceptable", type="not-acceptable") from exc
    except SamplingError as exc:
        raise invalid(str(exc), ["query", "format"]) from exc


def check_n(n: int, limit: int, loc: Loc) -> None:
    if n > limit:
        raise invalid(f"n={n} is above the maximum of {limit} samples per request "
                      "(MAX_SAMPLES_PER_REQUEST)", loc)


def _raise_all(errors: list[dict[str, Any]]) -> None:
    if errors:
        raise Problem(422, "; ".join(f"{e['field']}: {e['msg']}" for e in errors),
                      title="Invalid request", type="validation-error", errors=errors)


def condition_matrix(model: LoadedModel, columns: Mapping[str, Sequence[object]],
                     loc: Loc, field_prefix: str = "") -> np.ndarray | None:
    """The [n, C] float32 conditions the graph takes, from one list of values per condition
    column (categorical ones: their values). None for an unconditional model. Every missing,
    unknown, ragged or non-numeric column is named in one 422."""
    names = model.condition_names
    errors = [{"loc": [*loc, c], "field": f"{field_prefix}{c}",
               "msg": "missing condition", "type": "missing"}
              for c in names if c not in columns]
    errors += [{"loc": [*loc, k], "field": f"{field_prefix}{k}",
                "msg": f"not a condition of this model (conditions: {names or 'none'})",
                "type": "extra_forbidden"} for k in sorted(columns) if k not in names]
    _raise_all(errors)
    if not names:
        return None
    lengths = {c: len(columns[c]) for c in names}
    if len(set(lengths.values())) != 1:
        raise invalid(f"condition columns differ in length: {lengths}", loc)
    if not next(iter(lengths.values())):
        raise invalid("conditions have no rows", loc)
    values = []
    for c in names:
        column, error = condition_column(model, c, columns[c], [*loc, c], f"{field_prefix}{c}")
        if error is not None:
            errors.append(error)
        values.append(column)
    _raise_all(errors)
    # No error was raised, so condition_column gave every column (None only with an error).
    return np.column_stack(cast("list[np.ndarray]", values)).astype(np.float32, copy=False)


def code_matrix(model: LoadedModel, matrix: np.ndarray, loc: Loc) -> np.ndarray:
    """The [n, C] float32 conditions the graph takes, from a matrix already in its form:
    columns in the model's condition order, a categorical condition as its codes (0..K-1).
    For the binary bodies (npy) and the Open Inference Protocol's `conditions` tensor. Every
    column with a non-finite value or a code that is no category is named in one 422."""
    names = model.condition_names
    if matrix.ndim != 2 or matrix.shape[1] != len(names) or matrix.shape[0] < 1:
        raise invalid(f"conditions must have the shape [n, {len(names)}] (n >= 1; columns "
                      f"{names}), not {list(matrix.shape)}", loc)
    values = np.ascontiguousarray(matrix, dtype=np.float32)
    errors = []
    for i, name in enumerate(names):
        column = values[:, i]
        bad = ~np.isfinite(column)
        categories = model.categories.get(name)
        if categories is not None:
            bad |= (column != np.round(column)) | (column < 0) | (column > len(categories) - 1)
        if bad.any():
            row = int(np.argmax(bad))
            what = (f"the codes 0..{len(categories) - 1} of its categories" if categories
                    is not None else "finite numbers")
            errors.append({"loc": [*loc, name], "field": name, "type": "value_error",
                           "msg": f"column {i} must hold {what}; row {row} holds "
                                  f"{float(column[row])!r}"})
    _raise_all(errors)
    return values


def loaded_model(row: Mapping[str, Any], store: ArtifactStore, cache: ModelCache
                 ) -> LoadedModel:
    """The model's ONNX Runtime session, from the cache (its file fetched on a miss)."""
    return cache.get(row["id"], lambda: store.local_path(store.key_of(row["onnx_uri"])))


def query_conditions(model: LoadedModel, items: Sequence[tuple[str, str]],
                     reserved: frozenset[str]) -> dict[str, list[str]]:
    """The condition parameters of a query string (`?n=10&p=12.5`): every name but the
    route's own parameters, each given once (a repeated name is a 422, not the last value)."""
    seen: dict[str, list[str]] = {}
    for key, value in items:
        seen.setdefault(key, []).append(value)
    repeated = sorted(k for k, v in seen.items() if len(v) > 1)
    _raise_all([{"loc": ["query", k], "field": k, "msg": f"given {len(seen[k])} times; give "
                 "each parameter once", "type": "repeated"} for k in repeated])
    return {k: v for k, v in seen.items() if k not in reserved}


# A request of at most this many rows (or an eighth of the bounds, if less) takes milliseconds:
# it is counted but never refused, so large requests cannot lock the small ones out.
SMALL_REQUEST_ROWS = 16_384


class RowsInFlight:
    """A bound on the rows being sampled at once, in all and per API key: a request that
    would exceed it is refused at once (503 in all, 429 for one key, with Retry-After) rather
    than queued behind the others, so small requests and the health checks stay fast."""

    def __init__(self, total: int, per_key: int) -> None:
        self.total, self.per_key = total, per_key
        self.small = min(SMALL_REQUEST_ROWS, total // 8, per_key // 8)
        self._used = 0
        self._by_key: dict[str | None, int] = {}
        self._lock = threading.Lock()

    def acquire(self, n: int, key: str | None) -> None:
        with self._lock:
            mine = self._by_key.get(key, 0)
            if n <= self.small:  # cheap: never refused, whatever else is in flight
                self._used += n
                self._by_key[key] = mine + n
                return
            if mine and mine + n > self.per_key:
                raise Problem(429, f"this API key is sampling {mine} rows already; at most "
                              f"{self.per_key} at once (MAX_SAMPLING_ROWS_PER_KEY)",
                              title="Too many rows in flight", type="sampling-busy",
                              headers={"Retry-After": "1"})
            if self._used and self._used + n > self.total:
                raise Problem(503, f"the service is sampling {self._used} rows; at most "
                              f"{self.total} at once (MAX_SAMPLING_ROWS_IN_FLIGHT)",
                              title="Sampling busy", type="sampling-busy",
                              headers={"Retry-After": "1"})
            self._used += n
            self._by_key[key] = mine + n

    def release(self, n: int, key: str | None) -> None:
        with self._lock:
            self._used -= n
            left = self._by_key[key] - n
            if left:
                self._by_key[key] = left
            else:
                del self._by_key[key]

    @property
    def used(self) -> int:
        return self._used


def run_sampling(model: LoadedModel, n: int, seed: int, conditions: np.ndarray | None,
                 timeout: float) -> np.ndarray:
    """The samples, or 503 when they take longer than `timeout` seconds (checked between
    chunks: the work stops there)."""
    try:
        return sample(model, n, seed, conditions, deadline=time.monotonic() + timeout)
    except SamplingTimeout as exc:
        raise Problem(503, f"{exc} (REQUEST_TIMEOUT_SECONDS={timeout:g}); ask for fewer rows",
                      title="Request timed out", type="timeout",
                      headers={"Retry-After": "1"}) from exc
    except SamplingError as exc:
        raise invalid(str(exc), ["body"]) from exc


def samples_response(samples: np.ndarray, model: LoadedModel, model_id: str, seed: int,
                     fmt: str, release: Callable[[], None]) -> Response:
    """The answer: small ones whole, large ones streamed piece by piece. `release` gives the
    rows back to RowsInFlight once the answer is encoded (for a stream: when it ends)."""
    headers = {"X-Seed": str(seed), "X-Model-Id": model_id, "X-Provider": model.provider,
               "X-Rows": str(samples.shape[0])}
    if fmt in ("npy", "arrow"):
        headers["Content-Disposition"] = f'attachment; filename="samples.{fmt}"'
    if fmt == "json" and not np.isfinite(samples).all():
        release()  # before a stream starts: a stream cannot turn into an error half-way
        raise invalid("the generator produced non-finite values (NaN or infinity), which "
                      "JSON cannot carry; ask for format=npy or arrow to see them",
                      ["query", "format"])
    if len(samples) > STREAM_ROWS and fmt in ("json", "csv"):
        def pieces() -> Iterator[bytes]:
            try:
                yield from encode_chunks(samples, model.feature_names, fmt)
            finally:
                release()

        return StreamingResponse(pieces(), media_type=FORMATS[fmt], headers=headers)
    try:
        body = encode(samples, model.feature_names, fmt)
    finally:
        release()
    return Response(body, media_type=FORMATS[fmt], headers=headers)


def serve_samples(model: LoadedModel, model_id: str, n: int, seed: int,
                  conditions: np.ndarray | None, fmt: str, *, rows: RowsInFlight,
                  key: str | None, timeout: float) -> Response:
    """Sample and answer, holding `n` rows of `rows` until the answer is encoded."""
    rows.acquire(n, key)
    try:
        samples = run_sampling(model, n, seed, conditions, timeout)
    except BaseException:
        rows.release(n, key)
        raise
    return samples_response(samples, model, model_id, seed, fmt, lambda: rows.release(n, key))
