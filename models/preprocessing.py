"""Per-column transforms between physical units and the model's scale (docs/internals.md).

`fit_transform(kind, x)` fits one of:

- standard: (x - mean) / std; a constant column gets std 1.
- minmax: to [-1, 1], the range of a tanh output (images); a constant column maps to 0.
- quantile: to a standard normal, y = Phi^-1(F(x)), F piecewise linear through
  N_QUANTILES empirical quantiles and squeezed into [U_CLIP, 1 - U_CLIP]; values outside the
  fitted range are clamped to it.
- none: the identity.

Conditions with categorical columns (`fit_transform(kind, x, categorical={column: K})`) get a
`ConditionTransform`: `kind` on the continuous columns, one-hot on the categorical ones (codes
0..K-1 in, K columns of 0/1 out). Its output is [continuous..., one-hot block of each
categorical column in column order], so the generator sees (#continuous + sum K) conditions.

Each has numpy `forward`/`inverse` (float64 inside, float32 out) and torch modules that export
to ONNX (opset 17) and agree with numpy to 1e-5 or better on the model's scale. The quantile
modules avoid ops ONNX lacks: no searchsorted (binary lifting with Gather, or a uniform grid),
no erfinv (Acklam's rational approximation of Phi^-1) and no erfc (Numerical Recipes'
rational one; 1 + erf(y) would lose the tails' relative precision). They compute in float64
inside: Acklam's central polynomial cancels too much for float32 near its edges.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
import torch
from scipy import special
from torch import Tensor, nn

KINDS = ("standard", "quantile", "minmax", "none")
N_QUANTILES = 101
# F(x) is squeezed affinely into [U_CLIP, 1 - U_CLIP], so forward values lie within +-4.75
# (Phi^-1 of 0 or 1 would be infinite) and the extreme knots still map back exactly.
U_CLIP = 1e-6
_SQUEEZE = 1.0 - 2.0 * U_CLIP
# A std below this fraction of |mean| is float rounding of a constant column.
_CONSTANT_REL = 1e-6


def _as_matrix(x: np.ndarray, n_features: int | None = None) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"expected a 2-D array [rows, columns], got shape {x.shape}")
    if n_features is not None and x.shape[1] != n_features:
        raise ValueError(f"expected {n_features} columns, got {x.shape[1]}")
    return x


def _f32(values: np.ndarray) -> np.ndarray:
    """Round parameters to float32 once, so numpy and the modules share them exactly."""
    return np.asarray(values, dtype=np.float32).astype(np.float64)


class Transform(ABC):
    kind: ClassVar[str]

    @property
    @abstractmethod
    def n_features(self) -> int: ...

    @abstractmethod
    def forward(self, x: np.ndarray) -> np.ndarray:
        """Physical units [N, F] -> the model's scale, float32."""

    @abstractmethod
    def inverse(self, y: np.ndarray) -> np.ndarray:
        """The model's scale [N, F] -> physical units, float32."""

    @abstractmethod
    def forward_module(self) -> nn.Module: ...

    @abstractmethod
    def inverse_module(self) -> nn.Module: ...

    @abstractmethod
    def _params(self) -> dict[str, Any]: ...

    def state(self) -> dict[str, Any]:
        """JSON-able; `Transform.from_state` rebuilds the same transform."""
        return {"kind": self.kind, **self._params()}

    @staticmethod
    def from_state(state: dict[str, Any]) -> Transform:
        kind = state.get("kind")
        if kind in ("standard", "minmax"):
            affine = StandardTransform if kind == "standard" else MinMaxTransform
            return affine(np.asarray(state["shift"]), np.asarray(state["scale"]))
        if kind == "quantile":
            return QuantileTransform(np.asarray(state["knots"], dtype=np.float64).T)
        if kind == "none":
            return IdentityTransform(int(state["n_features"]))
        if kind == ConditionTransform.kind:
            continuous = state.get("continuous")
            return ConditionTransform(
                int(state["n_columns"]), {int(i): int(k) for i, k in state["categorical"]},
                Transform.from_state(continuous) if continuous is not None else None)
        raise ValueError(f"unknown transform kind {kind!r}; kinds: {', '.join(KINDS)}")


# --- standard, minmax, none -------------------------------------------------------------------


class _Affine(nn.Module):
    shift: Tensor  # buffers
    scale: Tensor

    def __init__(self, shift: np.ndarray, scale: np.ndarray, inverse: bool) -> None:
        super().__init__()
        self.register_buffer("shift", torch.tensor(shift, dtype=torch.float32))
        self.register_buffer("scale", torch.tensor(scale, dtype=torch.float32))
        self.inverse = inverse

    def forward(self, x: Tensor) -> Tensor:
        if self.inverse:
            return x * self.scale + self.shift
        return (x - self.shift) / self.scale


class AffineTransform(Transform):
    """y = (x - shift) / scale per column; the subclasses differ only in how they fit."""

    def __init__(self, shift: np.ndarray, scale: np.ndarray) -> None:
        self.shift = _f32(np.asarray(shift, dtype=np.float64).reshape(-1))
        self.scale = _f32(np.asarray(scale, dtype=np.float64).reshape(-1))
        if self.shift.shape != self.scale.shape or not np.all(self.scale > 0):
            raise ValueError("shift and scale need one entry per column, and scale > 0")

    @classmethod
    def _guarded(cls, shift: np.ndarray, scale: np.ndarray) -> AffineTransform:
        # A constant column would divide by 0 (or by rounding noise): leave its scale alone.
        constant = scale <= _CONSTANT_REL * np.abs(shift)
        return cls(shift, np.where(constant, 1.0, scale))

    @property
    def n_features(self) -> int:
        return len(self.shift)

    def forward(self, x: np.ndarray) -> np.ndarray:
        return ((_as_matrix(x, self.n_features) - self.shift) / self.scale).astype(np.float32)

    def inverse(self, y: np.ndarray) -> np.ndarray:
        return (_as_matrix(y, self.n_features) * self.scale + self.shift).astype(np.float32)

    def forward_module(self) -> nn.Module:
        return _Affine(self.shift, self.scale, inverse=False)

    def inverse_module(self) -> nn.Module:
        return _Affine(self.shift, self.scale, inverse=True)

    def _params(self) -> dict[str, Any]:
        return {"shift": self.shift.tolist(), "scale": self.scale.tolist()}


class StandardTransform(AffineTransform):
    kind = "standard"

    @classmethod
    def fit(cls, x: np.ndarray) -> AffineTransform:
        return cls._guarded(x.mean(axis=0), x.std(axis=0))


class MinMaxTransform(AffineTransform):
    """To [-1, 1]; a constant column maps to 0."""

    kind = "minmax"

    @classmethod
    def fit(cls, x: np.ndarray) -> AffineTransform:
        lo, hi = x.min(axis=0), x.max(axis=0)
        return cls._guarded((lo + hi) / 2, (hi - lo) / 2)


class _Identity(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return x


class IdentityTransform(Transform):
    kind = "none"

    def __init__(self, n_features: int) -> None:
        self._n = int(n_features)

    @property
    def n_features(self) -> int:
        return self._n

    def forward(self, x: np.ndarray) -> np.ndarray:
        return _as_matrix(x, self._n).astype(np.float32)

    def inverse(self, y: np.ndarray) -> np.ndarray:
        return _as_matrix(y, self._n).astype(np.float32)

    def forward_module(self) -> nn.Module:
        return _Identity()

    def inverse_module(self) -> nn.Module:
        return _Identity()

    def _params(self) -> dict[str, Any]:
        return {"n_features": self._n}


# --- quantile: the normal distribution in ONNX-exportable torch ops -----------------------------

# Acklam's rational approximation of Phi^-1 (relative error < 1.2e-9).
_A = (-3.969683028665376e01, 2.209460984245205e02, -2.759285104469687e02,
      1.383577518672690e02, -3.066479806614716e01, 2.506628277459239e00)
_B = (-5.447609879822406e01, 1.615858368580409e02, -1.556989798598866e02,
      6.680131188771972e01, -1.328068155288572e01, 1.0)
_C = (-7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838e00,
      -2.549732539343734e00, 4.374664141464968e00, 2.938163982698783e00)
_D = (7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e00,
      3.754408661907416e00, 1.0)
_P_LOW = 0.02425
# Numerical Recipes' erfc (fractional error < 1.2e-7 everywhere).
_ERFC = (-1.26551223, 1.00002368, 0.37409196, 0.09678418, -0.18628806, 0.27886807,
         -1.13520398, 1.48851587, -0.82215223, 0.17087277)


def _poly(coeffs: tuple[float, ...], t: Tensor) -> Tensor:
    out = torch.full_like(t, coeffs[0])
    for c in coeffs[1:]:
        out = out * t + c
    return out


def normal_lower_ppf(t: Tensor) -> Tensor:
    """Phi^-1(t) for t in (0, 0.5]; callers pass the smaller tail so no precision is lost."""
    s = torch.sqrt(-2.0 * torch.log(t))
    tail = _poly(_C, s) / _poly(_D, s)
    r = t - 0.5
    r2 = r * r
    centre = _poly(_A, r2) * r / _poly(_B, r2)
    return torch.where(t < _P_LOW, tail, centre)


def normal_tail(y: Tensor) -> Tensor:
    """P(Z > |y|) = 0.5 erfc(|y| / sqrt 2), accurate in relative terms far into the tail."""
    z = torch.abs(y) * (1.0 / math.sqrt(2.0))
    t = 1.0 / (1.0 + 0.5 * z)
    return 0.5 * t * torch.exp(-z * z + _poly(_ERFC[::-1], t))


# --- quantile: the piecewise-linear F --------------------------------------------------------
#
# knots[k] is the k/(K-1) quantile, a non-decreasing grid; ties are atoms of discrete data.
# F(x) is that grid read sideways. At an atom F jumps; the atom itself maps to the middle of
# the jump (as in scikit-learn's QuantileTransformer), so the inverse brings it back exactly.
# F is carried as the pair (u, q) = (F, 1 - F), each computed from its own side of a segment,
# so that the tail nearer to 0 keeps its relative precision before Phi^-1 magnifies it.


def _gather(knots: Tensor, index: Tensor) -> Tensor:
    """knots [K, F] at row index[n, f] of column f, as one flat Gather (ONNX-friendly)."""
    n_features = knots.shape[1]
    columns = torch.arange(n_features, device=index.device)
    return knots.reshape(-1)[index * n_features + columns]


def _count_below(sorted_rows: Tensor, m: int, x: Tensor, strict: bool) -> Tensor:
    """How many of the m sorted_rows[:, f] are < x[n, f] (strict) or <= x[n, f]: searchsorted
    by binary lifting, unrolled at export (m is a Python int for that). Memory O(N F), where
    comparing x with every knot at once would take N x K x F (gigabytes for a million rows)."""
    count = torch.zeros_like(x, dtype=torch.int64)
    step = 1 << (m.bit_length() - 1) if m else 0
    while step:
        candidate = count + step
        probe = _gather(sorted_rows, torch.clamp(candidate - 1, max=m - 1))
        below = probe < x if strict else probe <= x
        # Arithmetic rather than Where: onnxruntime's Where is several times slower.
        count = count + ((candidate <= m) & below).to(torch.int64) * step
        step >>= 1
    return count


def atom_middles(knots: np.ndarray) -> np.ndarray:
    """For each knot [K, F], the middle index of its run of equal knots (itself if alone)."""
    middles = np.empty_like(knots, dtype=np.float64)
    for c in range(knots.shape[1]):
        col = knots[:, c]
        first = np.searchsorted(col, col, side="left")
        last = np.searchsorted(col, col, side="right") - 1
        middles[:, c] = 0.5 * (first + last)
    return middles


class _QuantileForward(nn.Module):
    knots: Tensor  # buffers
    middles: Tensor

    def __init__(self, knots: np.ndarray) -> None:
        super().__init__()
        self.register_buffer("knots", torch.tensor(knots, dtype=torch.float64))
        self.register_buffer("middles", torch.tensor(atom_middles(knots), dtype=torch.float64))
        self.n_knots = int(knots.shape[0])

    def forward(self, x: Tensor) -> Tensor:
        dtype = x.dtype
        k = self.n_knots
        knots = self.knots
        x = torch.minimum(torch.maximum(x.to(torch.float64), knots[0]), knots[-1])
        # Segment j: knots[j] <= x < knots[j + 1] (the last one includes its end).
        j = _count_below(knots[1:-1], k - 2, x, strict=False)
        lo, hi = _gather(knots, j), _gather(knots, j + 1)
        width = hi - lo
        safe = torch.where(width > 0, width, torch.ones_like(width))
        jf = j.to(torch.float64)
        u = (jf + (x - lo) / safe) / (k - 1)
        q = (k - 2 - jf + (hi - x) / safe) / (k - 1)
        # On a knot, F is the middle of that knot's run: the jump of an atom, or the knot.
        middle = _gather(self.middles, j)
        on_knot = x == lo
        u = torch.where(on_knot, middle / (k - 1), u)
        q = torch.where(on_knot, (k - 1 - middle) / (k - 1), q)
        u, q = U_CLIP + _SQUEEZE * u, U_CLIP + _SQUEEZE * q
        y = normal_lower_ppf(torch.minimum(u, q))
        return torch.where(u <= q, y, -y).to(dtype)


class _QuantileInverse(nn.Module):
    knots: Tensor  # buffers
    flipped: Tensor

    def __init__(self, knots: np.ndarray) -> None:
        super().__init__()
        self.register_buffer("knots", torch.tensor(knots, dtype=torch.float64))
        self.register_buffer("flipped", torch.tensor(knots[::-1].copy(), dtype=torch.float64))
        self.n_knots = int(knots.shape[0])

    def _walk(self, grid: Tensor, t: Tensor) -> Tensor:
        """Interpolate `grid` at fraction t of the way from its first row (t <= 0.5)."""
        k = self.n_knots
        pos = t * (k - 1)
        index = torch.clamp(torch.floor(pos), 0, k - 2)
        frac = pos - index
        j = index.to(torch.int64)
        lo, hi = _gather(grid, j), _gather(grid, j + 1)
        return lo + frac * (hi - lo)

    def forward(self, y: Tensor) -> Tensor:
        dtype = y.dtype
        y = y.to(torch.float64)
        # The smaller of F and 1 - F, unsqueezed; clamped, as a large |y| gives t < U_CLIP.
        t = torch.clamp((normal_tail(y) - U_CLIP) / _SQUEEZE, min=0.0)
        x = torch.where(y <= 0, self._walk(self.knots, t), self._walk(self.flipped, t))
        return x.to(dtype)


def _walk_np(grid: np.ndarray, t: np.ndarray) -> np.ndarray:
    k = len(grid)
    pos = t * (k - 1)
    index = np.clip(np.floor(pos), 0, k - 2)
    frac = pos - index
    j = index.astype(np.int64)
    return grid[j] + frac * (grid[j + 1] - grid[j])


class QuantileTransform(Transform):
    """Each column to a standard normal through its empirical quantiles `knots` [K, F]."""

    kind = "quantile"

    def __init__(self, knots: np.ndarray) -> None:
        knots = _f32(np.asarray(knots, dtype=np.float64))
        if knots.ndim != 2 or knots.shape[0] < 2:
            raise ValueError(f"knots must be [K >= 2, F], got shape {knots.shape}")
        if np.any(np.diff(knots, axis=0) < 0):
            raise ValueError("knots must be non-decreasing down each column")
        self.knots = knots

    @classmethod
    def fit(cls, x: np.ndarray, n_quantiles: int = N_QUANTILES) -> QuantileTransform:
        knots = np.quantile(x, np.linspace(0.0, 1.0, n_quantiles), axis=0)
        # np.quantile may wobble by an ulp between equal neighbours: keep the grid monotone.
        return cls(np.maximum.accumulate(_f32(knots), axis=0))

    @property
    def n_features(self) -> int:
        return int(self.knots.shape[1])

    def forward(self, x: np.ndarray) -> np.ndarray:
        # The same steps as _QuantileForward, with searchsorted for the binary lifting.
        x = _as_matrix(x, self.n_features)
        k = len(self.knots)
        middles = atom_middles(self.knots)
        out = np.empty_like(x)
        for c in range(self.n_features):
            knots = self.knots[:, c]
            xc = np.clip(x[:, c], knots[0], knots[-1])
            j = np.searchsorted(knots[1:-1], xc, side="right")
            lo, hi = knots[j], knots[j + 1]
            width = hi - lo
            safe = np.where(width > 0, width, 1.0)
            on_knot = xc == lo
            u = np.where(on_knot, middles[j, c], j + (xc - lo) / safe) / (k - 1)
            q = np.where(on_knot, k - 1 - middles[j, c], k - 2 - j + (hi - xc) / safe) / (k - 1)
            u, q = U_CLIP + _SQUEEZE * u, U_CLIP + _SQUEEZE * q
            y = special.ndtri(np.minimum(u, q))
            out[:, c] = np.where(u <= q, y, -y)
        return out.astype(np.float32)

    def inverse(self, y: np.ndarray) -> np.ndarray:
        y = _as_matrix(y, self.n_features)
        t = np.maximum((special.ndtr(-np.abs(y)) - U_CLIP) / _SQUEEZE, 0.0)
        out = np.empty_like(y)
        for c in range(self.n_features):
            knots = self.knots[:, c]
            low, high = _walk_np(knots, t[:, c]), _walk_np(knots[::-1], t[:, c])
            out[:, c] = np.where(y[:, c] <= 0, low, high)
        return out.astype(np.float32)

    def forward_module(self) -> nn.Module:
        return _QuantileForward(self.knots)

    def inverse_module(self) -> nn.Module:
        return _QuantileInverse(self.knots)

    def _params(self) -> dict[str, Any]:
        return {"knots": self.knots.T.tolist()}  # one list of K knots per column


def fit_transform(kind: str, x: np.ndarray, *,
                  categorical: Mapping[int, int] | None = None) -> Transform:
    """Fit the transform `kind` (standard | quantile | minmax | none) to x [N, F].

    `categorical` {column index: K}: those columns hold codes 0..K-1 and are one-hot encoded
    (a ConditionTransform; `kind` then applies to the other columns only)."""
    if kind not in KINDS:
        raise ValueError(f"unknown preprocessing {kind!r}; kinds: {', '.join(KINDS)}")
    x = _as_matrix(x)
    if x.shape[0] == 0:
        raise ValueError("cannot fit a transform to zero rows")
    if not np.all(np.isfinite(x)):
        raise ValueError("cannot fit a transform to NaN or inf values")
    if categorical:
        sizes = {int(i): int(k) for i, k in categorical.items()}
        continuous = [i for i in range(x.shape[1]) if i not in sizes]
        inner = fit_transform(kind, x[:, continuous]) if continuous else None
        tf = ConditionTransform(x.shape[1], sizes, inner)
        tf.check_codes(x)
        return tf
    if kind == "none":
        return IdentityTransform(x.shape[1])
    if kind == "quantile":
        return QuantileTransform.fit(x)
    return StandardTransform.fit(x) if kind == "standard" else MinMaxTransform.fit(x)


# --- categorical conditions: one-hot ---------------------------------------------------------


class _OneHot(nn.Module):
    """Codes [N, 1] -> [N, K] of 0/1, exactly: round(code) == arange(K) (Round, Equal, Cast in
    ONNX). A code outside 0..K-1 gives a row of zeros."""

    levels: Tensor  # a buffer

    def __init__(self, k: int) -> None:
        super().__init__()
        self.register_buffer("levels", torch.arange(k, dtype=torch.float32))

    def forward(self, code: Tensor) -> Tensor:
        return (torch.round(code.float()) == self.levels).to(code.dtype)


class _ConditionForward(nn.Module):
    continuous_columns: Tensor  # a buffer

    def __init__(self, continuous_columns: list[int], inner: nn.Module | None,
                 categorical: dict[int, int]) -> None:
        super().__init__()
        self.register_buffer("continuous_columns",
                             torch.tensor(continuous_columns, dtype=torch.int64))
        self.inner = inner
        self.columns = sorted(categorical)
        self.one_hots = nn.ModuleList(_OneHot(categorical[i]) for i in self.columns)

    def forward(self, x: Tensor) -> Tensor:
        parts = []
        if self.inner is not None:
            parts.append(self.inner(torch.index_select(x, 1, self.continuous_columns)))
        for i, one_hot in zip(self.columns, self.one_hots, strict=True):
            parts.append(one_hot(x[:, i:i + 1]))
        return torch.cat(parts, dim=1)


class _ConditionInverse(nn.Module):
    def __init__(self, n_columns: int, continuous_columns: list[int], inner: nn.Module | None,
                 categorical: dict[int, int]) -> None:
        super().__init__()
        self.n_columns, self.continuous_columns = n_columns, continuous_columns
        self.inner = inner
        self.categorical = dict(sorted(categorical.items()))

    def forward(self, y: Tensor) -> Tensor:
        n_cont = len(self.continuous_columns)
        columns: dict[int, Tensor] = {}
        if self.inner is not None:
            cont = self.inner(y[:, :n_cont])
            for j, i in enumerate(self.continuous_columns):
                columns[i] = cont[:, j:j + 1]
        start = n_cont
        for i, k in self.categorical.items():
            columns[i] = torch.argmax(y[:, start:start + k], dim=1, keepdim=True).to(y.dtype)
            start += k
        return torch.cat([columns[i] for i in range(self.n_columns)], dim=1)


class ConditionTransform(Transform):
    """Conditions with categorical columns: `continuous` (any Transform) on the other columns,
    one-hot on each categorical column i (codes 0..K-1, K = categorical[i]).

    forward: [N, n_columns] -> [N, n_outputs] = [continuous..., one-hot blocks in column
    order]; inverse: the continuous inverse, and the argmax of each block as the code."""

    kind = "condition"

    def __init__(self, n_columns: int, categorical: Mapping[int, int],
                 continuous: Transform | None) -> None:
        self.n_columns = int(n_columns)
        self.categorical = {int(i): int(k) for i, k in sorted(categorical.items())}
        if not self.categorical:
            raise ValueError("a ConditionTransform needs at least one categorical column")
        if any(not 0 <= i < self.n_columns for i in self.categorical):
            raise ValueError(f"categorical column indices must lie in 0..{self.n_columns - 1}")
        if any(k < 1 for k in self.categorical.values()):
            raise ValueError("every categorical column needs at least one category")
        self.continuous_columns = [i for i in range(self.n_columns) if i not in self.categorical]
        n_cont = len(self.continuous_columns)
        if (continuous is None) != (n_cont == 0) or (
                continuous is not None and continuous.n_features != n_cont):
            raise ValueError(f"the continuous transform must take the {n_cont} non-categorical "
                             "columns (None when there are none)")
        self.continuous = continuous

    @property
    def n_features(self) -> int:
        """Columns in: one per condition (codes for the categorical ones)."""
        return self.n_columns

    @property
    def n_outputs(self) -> int:
        """Columns out, as the generator sees them: #continuous + sum of K."""
        return len(self.continuous_columns) + sum(self.categorical.values())

    def check_codes(self, x: np.ndarray) -> None:
        """ValueError unless every categorical column holds integer codes 0..K-1."""
        x = _as_matrix(x, self.n_columns)
        for i, k in self.categorical.items():
            codes = x[:, i]
            bad = (codes != np.round(codes)) | (codes < 0) | (codes > k - 1)
            if bad.any():
                raise ValueError(f"categorical column {i} holds {codes[bad][0]:g}; codes are "
                                 f"the integers 0..{k - 1}")

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = _as_matrix(x, self.n_columns)
        self.check_codes(x)
        parts = []
        if self.continuous is not None:
            parts.append(self.continuous.forward(x[:, self.continuous_columns]))
        for i, k in self.categorical.items():
            parts.append(np.eye(k, dtype=np.float32)[x[:, i].astype(np.int64)])
        return np.concatenate(parts, axis=1).astype(np.float32)

    def inverse(self, y: np.ndarray) -> np.ndarray:
        y = _as_matrix(y, self.n_outputs)
        out = np.empty((y.shape[0], self.n_columns), dtype=np.float64)
        n_cont = len(self.continuous_columns)
        if self.continuous is not None:
            out[:, self.continuous_columns] = self.continuous.inverse(y[:, :n_cont])
        start = n_cont
        for i, k in self.categorical.items():
            out[:, i] = np.argmax(y[:, start:start + k], axis=1)
            start += k
        return out.astype(np.float32)

    def forward_module(self) -> nn.Module:
        inner = self.continuous.forward_module() if self.continuous is not None else None
        return _ConditionForward(self.continuous_columns, inner, self.categorical)

    def inverse_module(self) -> nn.Module:
        inner = self.continuous.inverse_module() if self.continuous is not None else None
        return _ConditionInverse(self.n_columns, self.continuous_columns, inner,
                                 self.categorical)

    def _params(self) -> dict[str, Any]:
        return {
            "n_columns": self.n_columns,
            "categorical": [[i, k] for i, k in self.categorical.items()],
            "continuous": self.continuous.state() if self.continuous is not None else None,
        }
