"""Sampling exported generators with ONNX Runtime (torch-free: the API imports it).

The noise is drawn here with numpy from the request's seed, so the same model, seed and
conditions give the same bytes. Sessions are cached per model (LRU). The CUDA execution
provider is used when this onnxruntime build has it, the CPU one otherwise.

Categorical conditions: the metadata `categories` ({condition: [sorted values]}) lists the
values of each categorical condition; the graph takes the value's code (its index in that
list) and one-hot encodes it itself. `encode_category` maps request values to codes.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Generator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

# Rows of noise drawn at once (ahead of their use) and between two looks at the deadline.
CHUNK_ROWS = 65_536
CPU_RUN_ROWS = 8192  # rows per ONNX Runtime call on the CPU (run_rows)
SHOWN_CATEGORIES = 100  # known categories listed in an error message, at most

class SamplingError(ValueError):
    """A request the model cannot serve (wrong conditions, bad n): a client error."""


class SamplingTimeout(Exception):
    """The deadline passed between two chunks: the work stopped there (HTTP 503)."""


class UnknownCategory(SamplingError):
    """A value that is not one of a categorical condition's categories; `value` is the first
    such value, `known` the condition's categories."""

    def __init__(self, message: str, value: object, known: Sequence[int | str]) -> None:
        super().__init__(message)
        self.value, self.known = value, list(known)


def preferred_providers() -> list[str]:
    available = ort.get_available_providers()
    if "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def _json_meta(meta: Mapping[str, str], key: str, default: Any) -> Any:
    raw = meta.get(key)
    if raw is None or raw == "":
        return default
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw


@dataclass
class LoadedModel:
    session: ort.InferenceSession
    feature_names: list[str]
    condition_names: list[str]
    latent_dim: int
    provider: str  # the execution provider the session runs on
    input_names: list[str]
    output_name: str
    # {categorical condition: its categories (ints or strings)}; the graph takes their codes.
    categories: dict[str, list] = field(default_factory=dict)


def load_model(path: Path | str, providers: Sequence[str] | None = None) -> LoadedModel:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(
        str(path), sess_options=options, providers=list(providers or preferred_providers())
    )
    meta = session.get_modelmeta().custom_metadata_map
    # By position, as the exporter (models.export) orders them: the noise, then the
    # conditions of a conditional generator; one output, the samples. Their names are the
    # exporter's business.
    inputs = session.get_inputs()
    if not 1 <= len(inputs) <= 2:
        raise ValueError(f"{path}: a generator takes the noise and maybe the conditions, not "
                         f"{len(inputs)} inputs ({[i.name for i in inputs]})")
    latent = _json_meta(meta, "latent_dim", None)
    if latent is None:
        dim = inputs[0].shape[1]
        if not isinstance(dim, int):
            raise ValueError(f"{path}: latent_dim neither in the metadata nor in the graph")
        latent = dim
    outputs = session.get_outputs()
    output = outputs[0].name
    n_out = outputs[0].shape[1] if len(outputs[0].shape) == 2 else None
    features = _json_meta(meta, "feature_names", None)
    if features is None:
        features = [f"x{i}" for i in range(n_out if isinstance(n_out, int) else 0)]
    conditions = _json_meta(meta, "condition_names", [])
    if bool(conditions) != (len(inputs) == 2):
        raise ValueError(f"{path}: {len(conditions)} condition names but the graph takes "
                         f"{len(inputs) - 1} conditions input")
    categories = _json_meta(meta, "categories", {}) or {}
    if not isinstance(categories, dict) or any(
            c not in conditions or not isinstance(v, list) for c, v in categories.items()):
        raise ValueError(f"{path}: the metadata 'categories' must map condition names to lists")
    return LoadedModel(
        session=session,
        feature_names=list(features),
        condition_names=list(conditions),
        latent_dim=int(latent),
        provider=session.get_providers()[0],
        input_names=[i.name for i in inputs],
        output_name=output,
        categories={str(c): list(v) for c, v in categories.items()},
    )


def known_categories(categories: Sequence[int | str], limit: int = SHOWN_CATEGORIES) -> str:
    """The categories for a message: `0, 1, 2` or `'a', 'b'`, cut after `limit`."""
    head = ", ".join(repr(c) for c in categories[:limit])
    more = len(categories) - limit
    return f"{head}, ... ({more} more)" if more > 0 else head


def _normalise(value: object, numeric: bool) -> int | str | None:
    """A request value as the category it may be: integer categories take ints, integral
    floats and numeric strings ("3"); string categories take strings (numbers as text)."""
    if isinstance(value, bool):
        return None
    if numeric:
        if isinstance(value, int):
            return value
        if isinstance(value, float):
            return int(value) if value.is_integer() else None
        if isinstance(value, str):
            text = value.strip()
            try:
                return int(text)
            except ValueError:
                try:
                    number = float(text)
                except ValueError:
                    return None
                return int(number) if number.is_integer() else None
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value) if isinstance(value, int) else None


def encode_category(name: str, categories: Sequence[int | str], values: Sequence[object]
                    ) -> np.ndarray:
    """The codes [len(values)] float32 of `values` among `categories` (a categorical
    condition's sorted values); UnknownCategory names the condition and lists the known ones."""
    numeric = all(isinstance(c, int) and not isinstance(c, bool) for c in categories)
    index: dict[int | str | None, int] = {c: i for i, c in enumerate(categories)}
    codes = np.empty(len(values), dtype=np.float32)
    for row, value in enumerate(values):
        code = index.get(_normalise(value, numeric))
        if code is None:
            raise UnknownCategory(
                f"unknown category {value!r} for condition {name!r}; known categories: "
                f"{known_categories(categories)}", value, categories)
        codes[row] = code
    return codes


def draw_noise(seed: int, n: int, latent_dim: int) -> np.ndarray:
    """z ~ N(0, 1), [n, latent_dim] float32, from numpy's PCG64 seeded with `seed`."""
    return np.random.default_rng(seed).standard_normal((n, latent_dim), dtype=np.float32)


# Draws the next chunk's noise while ONNX Runtime runs the current one (numpy's generators
# release the GIL while they fill an array). Shared by all requests: one draw in flight each.
# One pool per process: a forked child inherits the pool but not its threads.
_noise_pool: tuple[int, ThreadPoolExecutor] | None = None
_noise_pool_lock = threading.Lock()


def _noise_threads() -> ThreadPoolExecutor:
    global _noise_pool
    with _noise_pool_lock:
        if _noise_pool is None or _noise_pool[0] != os.getpid():
            _noise_pool = (os.getpid(), ThreadPoolExecutor(max_workers=2,
                                                           thread_name_prefix="noise"))
        return _noise_pool[1]


def noise_chunks(seed: int, n: int, latent_dim: int, rows: int
                 ) -> Generator[np.ndarray, None, None]:
    """draw_noise(seed, n, latent_dim) in consecutive pieces of `rows` rows, the same
    numbers (one generator, drawn in order), each piece drawn while the previous is used."""
    rng = np.random.default_rng(seed)

    def piece(start: int) -> np.ndarray:
        return rng.standard_normal((min(rows, n - start), latent_dim), dtype=np.float32)

    if n <= rows:
        yield piece(0)
        return
    pool = _noise_threads()
    ahead = pool.submit(piece, 0)
    for start in range(0, n, rows):
        z = ahead.result()
        if start + rows < n:
            ahead = pool.submit(piece, start + rows)
        yield z


def sample(
    model: LoadedModel, n: int, seed: int, conditions: np.ndarray | None = None,
    deadline: float | None = None,
) -> np.ndarray:
    """n samples [n, F] float32. `conditions`: [n, C] physical values, or None (unconditional
    models only). `deadline` (time.monotonic()): SamplingTimeout when it has passed before a
    chunk, so a request that outlives its time limit stops working instead of finishing
    unseen."""
    if n < 1:
        raise SamplingError("n must be at least 1")
    c = len(model.condition_names)
    if c and conditions is None:
        raise SamplingError(f"this model needs the conditions {model.condition_names}")
    if not c and conditions is not None and conditions.size:
        raise SamplingError("this model is unconditional: it takes no conditions")
    if c:
        assert conditions is not None
        conditions = np.ascontiguousarray(conditions, dtype=np.float32)
        if conditions.shape != (n, c):
            raise SamplingError(f"conditions must have shape ({n}, {c}), not {conditions.shape}")
        if not np.all(np.isfinite(conditions)):
            raise SamplingError("conditions must be finite numbers")
        for i, name in enumerate(model.condition_names):
            if name in model.categories:  # codes: integers 0..K-1 (encode_category gives them)
                codes, k = conditions[:, i], len(model.categories[name])
                if np.any((codes != np.round(codes)) | (codes < 0) | (codes > k - 1)):
                    raise SamplingError(f"condition {name!r} is categorical: its column holds "
                                        f"the codes 0..{k - 1} of its categories")
    out = np.empty((n, len(model.feature_names)), dtype=np.float32)
    noise = noise_chunks(seed, n, model.latent_dim, CHUNK_ROWS)
    for start, z in zip(range(0, n, CHUNK_ROWS), noise, strict=True):
        if deadline is not None and time.monotonic() > deadline:
            noise.close()
            raise SamplingTimeout(f"stopped after {start} of {n} rows: the time limit passed")
        step = run_rows(model)
        for lo in range(0, len(z), step):
            hi = min(lo + step, len(z))
            feeds = {model.input_names[0]: z[lo:hi]}
            if c:
                assert conditions is not None
                feeds[model.input_names[1]] = conditions[start + lo:start + hi]
            (piece,) = model.session.run([model.output_name], feeds)
            out[start + lo:start + hi] = piece.reshape(hi - lo, -1)
    return out


def run_rows(model: LoadedModel) -> int:
    """Rows per ONNX Runtime call. On the CPU a call's activations should stay in the cache:
    a Lamarr-like MLP ran at 2.75 M rows/s in calls of 8192 rows and 1.6 M rows/s in calls of
    65,536 (bench/kernel.py); a GPU wants its calls large."""
    return CPU_RUN_ROWS if model.provider == "CPUExecutionProvider" else CHUNK_ROWS


class ModelCache:
    """onnxruntime sessions, one per model id, least recently used evicted."""

    def __init__(self, size: int = 8, providers: Sequence[str] | None = None) -> None:
        self.size = size
        self.providers = list(providers) if providers else None
        self._items: OrderedDict[str, LoadedModel] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, model_id: str, path: Path | str | Callable[[], Path | str]) -> LoadedModel:
        """The cached session, or a new one from `path` (or from what `path()` returns: a
        download runs only on a cache miss)."""
        with self._lock:
            if model_id in self._items:
                self._items.move_to_end(model_id)
                return self._items[model_id]
        source = path() if callable(path) else path
        loaded = load_model(source, self.providers)  # outside the lock: may take a while
        with self._lock:
            self._items[model_id] = loaded
            self._items.move_to_end(model_id)
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return loaded

    def __contains__(self, model_id: str) -> bool:
        return model_id in self._items

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
