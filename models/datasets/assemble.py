"""From a Table and a DatasetSpec to a validated Dataset: roles, dtypes, values.

Categorical conditions (named in `spec.categorical`, or any condition column that is not
numeric) become codes 0..K-1 of their sorted distinct values, kept in `Dataset.categories`.

Cheap checks come first (models.datasets.limits): the column count and names, the roles,
then the row count and the cell budget from the metadata; only then is anything read. A
source without a row count (CSV) is read at most one row beyond the budget.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from models.datasets.base import MAX_CATEGORIES, MIN_ROWS, DataError, Dataset, Table, shown
from models.datasets.limits import (
    DataLimits,
    check_cells,
    check_columns,
    check_condition_names,
)
from models.spec import DatasetSpec

# A category longer than this is refused (categories travel in the model's metadata).
MAX_CATEGORY_CHARS = 200


def _expand(names: Sequence[str], table: Table, keep: Sequence[str] = ()) -> list[str]:
    """Aliases expanded, except the names in `keep` (a categorical condition is one column)."""
    out: list[str] = []
    for name in names:
        out.extend([name] if name in keep else table.aliases.get(name, [name]))
    return out


def resolve_roles(table: Table, spec: DatasetSpec) -> tuple[list[str], list[str], str | None]:
    """(features, conditions, weights) column names, or DataError for unknown or clashing ones."""
    conditions = _expand(spec.conditions, table, spec.categorical) or list(
        table.default_conditions)
    weights = spec.weights
    if spec.features is not None:
        features = _expand(spec.features, table)
    else:
        candidates = table.default_features if table.default_features is not None else (
            table.columns)
        features = [c for c in candidates if c not in conditions and c != weights]

    named = features + conditions + ([weights] if weights else [])
    unknown = [c for c in dict.fromkeys(named) if c not in table.columns]
    if unknown:
        raise DataError(f"unknown column(s) {', '.join(repr(c) for c in unknown)} in "
                        f"{table.label}; available columns: {shown(table.columns)}")
    clashing = sorted({c for c in named if named.count(c) > 1})
    if clashing:
        raise DataError(f"columns used in more than one role in {table.label}: {clashing}")
    if not features:
        raise DataError(f"no feature columns in {table.label}: every column is a condition or "
                        "the weight")
    check_condition_names(conditions, table.label)
    stray = [c for c in spec.categorical if c not in conditions]
    if stray:
        as_features = [c for c in stray if c in features]
        what = (f"{', '.join(repr(c) for c in as_features)} is a generated feature column"
                if as_features else f"the conditions are {conditions or 'none'}")
        raise DataError(f"only condition columns can be categorical; in {table.label} "
                        f"{', '.join(repr(c) for c in stray)} is not a condition ({what})")
    return features, conditions, weights


def _numeric(name: str, values: np.ndarray, label: str) -> np.ndarray:
    values = np.asarray(values)
    if values.ndim != 1:
        raise DataError(f"column {name!r} of {label} holds {values.shape[1:]}-shaped values per "
                        "row; only one number per row can be used")
    if values.dtype.kind in "biuf":
        with np.errstate(over="ignore"):  # beyond float32 becomes inf, reported as such
            return values.astype(np.float32)
    example = ""
    if values.dtype.kind in "OUS" and len(values):
        bad = next((v for v in values.tolist() if not isinstance(v, int | float)), values[0])
        shown_bad = repr(bad)
        if len(shown_bad) > 80:  # a hostile file may hold megabytes in one cell
            shown_bad = shown_bad[:77] + "..."
        example = f", e.g. {shown_bad}"
    raise DataError(f"column {name!r} of {label} is not numeric (dtype {values.dtype}"
                    f"{example}); only condition columns may hold strings (categorical)")


def _clip(value: object) -> str:
    text = repr(value)
    return text[:77] + "..." if len(text) > 80 else text


def _categorical(name: str, values: np.ndarray, label: str) -> tuple[np.ndarray, list]:
    """(codes [N] float32 in 0..K-1, the K sorted distinct values as ints or strings)."""
    values = np.asarray(values)
    if values.ndim != 1:
        raise DataError(f"column {name!r} of {label} holds {values.shape[1:]}-shaped values per "
                        "row; only one value per row can be used")
    kind = values.dtype.kind
    n = len(values)
    if kind in "biu":
        keys: np.ndarray = values.astype(np.int64)
    elif kind == "f":
        finite = np.isfinite(values)
        if not finite.all():
            raise DataError(f"categorical column {name!r} of {label} has missing (NaN) or "
                            f"infinite values in {int((~finite).sum())} of {n} rows")
        whole = values == np.round(values)
        if not whole.all():
            raise DataError(f"categorical column {name!r} of {label} holds non-integer numbers, "
                            f"e.g. {values[~whole][0]:g}; categories are integers or strings")
        keys = values.astype(np.int64)
    elif kind in "OUS":
        items = [v.decode("utf-8", "replace") if isinstance(v, bytes) else v
                 for v in values.tolist()]
        missing = sum(1 for v in items if v is None or (isinstance(v, float) and math.isnan(v)))
        if missing:
            raise DataError(f"categorical column {name!r} of {label} has missing values in "
                            f"{missing} of {n} rows; drop or fill those rows first")
        if all(isinstance(v, str) for v in items):
            pass
        elif all(isinstance(v, int) and not isinstance(v, bool) for v in items):
            items = [int(v) for v in items]
        else:
            bad = next(v for v in items if not isinstance(v, str))
            raise DataError(f"categorical column {name!r} of {label} mixes strings with other "
                            f"values, e.g. {_clip(bad)}; categories are integers or strings")
        keys = np.asarray(items, dtype=object)
    else:
        raise DataError(f"column {name!r} of {label} (dtype {values.dtype}) cannot be a "
                        "categorical condition: categories are integers or strings")
    distinct, codes = np.unique(keys, return_inverse=True)
    if len(distinct) > MAX_CATEGORIES:
        raise DataError(f"categorical column {name!r} of {label} has {len(distinct)} distinct "
                        f"values; at most {MAX_CATEGORIES} categories are allowed")
    categories = [v if isinstance(v, str) else int(v) for v in distinct.tolist()]
    long = next((v for v in categories if isinstance(v, str) and len(v) > MAX_CATEGORY_CHARS),
                None)
    if long is not None:
        raise DataError(f"categorical column {name!r} of {label} has a category longer than "
                        f"{MAX_CATEGORY_CHARS} characters: {_clip(long)}")
    if len(categories) == 1:
        raise DataError(f"condition column {name!r} of {label} is constant (the single "
                        f"category {categories[0]!r}); a constant condition tells the model "
                        "nothing")
    return codes.reshape(-1).astype(np.float32), categories


def _check_finite(columns: dict[str, np.ndarray], label: str) -> None:
    bad = {n: int(np.count_nonzero(~np.isfinite(v))) for n, v in columns.items()}
    bad = {n: k for n, k in bad.items() if k}
    if bad:
        n_rows = len(next(iter(columns.values())))
        listed = "; ".join(f"column {n!r}: {k} of {n_rows} rows" for n, k in bad.items())
        raise DataError(f"NaN or inf values (missing or beyond float32) in {label}: {listed}; "
                        "drop or fill those rows first")


def _check_known_rows(table: Table, spec: DatasetSpec, width: int, limits: DataLimits) -> None:
    """Rows from the metadata: too few, or too many cells, before anything is read."""
    if table.n_rows is None:
        return
    rows = min(table.n_rows, spec.max_rows or table.n_rows)
    if rows == 0:
        raise DataError(f"{table.label} holds no rows")
    if rows < MIN_ROWS:
        raise DataError(f"{table.label} holds only {rows} rows; at least {MIN_ROWS} are "
                        "needed to train")
    if table.reads_all_columns:  # any column costs the whole array
        check_cells(rows, len(table.columns), table.label, limits,
                    what="columns (all are decompressed to read any)")
    else:
        check_cells(rows, width, table.label, limits)


def _read(table: Table, spec: DatasetSpec, needed: list[str],
          limits: DataLimits) -> dict[str, np.ndarray]:
    """The needed columns, at most `max_rows`; with no row count known, at most one row
    beyond the cell budget, which is then refused."""
    budget_rows = max(limits.max_cells // len(needed), 1)
    cap = spec.max_rows
    if table.n_rows is None:  # otherwise _check_known_rows has checked the budget
        cap = budget_rows + 1 if cap is None else min(cap, budget_rows + 1)
    raw = {n: np.asarray(v)[:cap] for n, v in table.read(needed, cap).items()}
    if table.n_rows is None and len(raw[needed[0]]) > budget_rows:
        raise DataError(f"{table.label} is too large: more than {budget_rows} rows x "
                        f"{len(needed)} columns read; at most {limits.max_cells} cells are "
                        "allowed (MAX_DATA_CELLS); use fewer rows (dataset.max_rows) or columns")
    return raw


def _check_features_vary(columns: dict[str, np.ndarray], features: list[str], table: Table,
                         image: bool) -> None:
    """A constant feature column holds nothing to learn (and is what a zero-filled bomb is
    made of). Images keep their constant border pixels, but not an all-constant image."""
    constant = [n for n in features if np.all(columns[n] == columns[n][0])]
    if constant and (not image or len(constant) == len(features)):
        name = constant[0]
        raise DataError(f"feature column {name!r} of {table.label} is constant "
                        f"({columns[name][0]:g} in every row)"
                        + (f", and so are {len(constant) - 1} more" if len(constant) > 1 else "")
                        + "; there is nothing to learn from it: leave it out of "
                        "dataset.features")


def assemble(table: Table, spec: DatasetSpec, limits: DataLimits | None = None) -> Dataset:
    """Read the columns `spec` asks for and check them: DataError names every problem."""
    limits = limits or DataLimits()
    check_columns(table.columns, table.label, limits)
    features, conditions, weights = resolve_roles(table, spec)
    needed = list(dict.fromkeys(features + conditions + ([weights] if weights else [])))
    _check_known_rows(table, spec, len(needed), limits)
    raw = _read(table, spec, needed, limits)

    n_rows = len(raw[needed[0]])
    if any(len(v) != n_rows for v in raw.values()):
        lengths = {n: len(v) for n, v in raw.items()}
        raise DataError(f"columns of {table.label} differ in length: {lengths}")
    if n_rows == 0:  # before the dtype check: an empty CSV column has no numeric dtype
        raise DataError(f"{table.label} holds no rows")
    declared = set(spec.categorical)
    # Categorical: named in the spec, or a condition column that holds no numbers.
    categorical = [n for n in conditions if n in declared or raw[n].dtype.kind in "OUS"]
    columns: dict[str, np.ndarray] = {}
    categories: dict[str, list] = {}
    for n in needed:  # each raw column is dropped once converted: float64 and float32
        values = raw.pop(n)  # copies of the whole set never live side by side
        if n in categorical:
            columns[n], categories[n] = _categorical(n, values, table.label)
        else:
            columns[n] = _numeric(n, values, table.label)
        del values
    if n_rows < MIN_ROWS:
        raise DataError(f"{table.label} holds only {n_rows} rows; at least {MIN_ROWS} are "
                        "needed to train")
    _check_finite(columns, table.label)
    # The image layout and the true modes describe the builtin's own feature set only.
    own = table.default_features is not None and features == table.default_features
    _check_features_vary(columns, features, table, image=own and table.image_shape is not None)
    for name in conditions:
        if name in categories:  # a single category was refused above
            continue
        values = columns[name]
        if np.all(values == values[0]):
            raise DataError(f"condition column {name!r} of {table.label} is constant "
                            f"({values[0]:g}); a constant condition tells the model nothing")
    w = None
    if weights:
        w = columns[weights]
        total = float(w.astype(np.float64).sum())
        if not total > 0:
            raise DataError(f"weights column {weights!r} of {table.label} sums to {total:g}; "
                            "it must sum to a positive number")

    def stack(names: list[str]) -> np.ndarray:
        out = np.empty((n_rows, len(names)), dtype=np.float32)
        for i, name in enumerate(names):  # each column freed once copied in: no second copy
            out[:, i] = columns.pop(name)
        return out

    return Dataset(
        features=stack(features),
        conditions=stack(conditions),
        weights=w,
        feature_names=features,
        condition_names=conditions,
        image_shape=table.image_shape if own else None,
        modes=None if table.modes is None or not own else np.array(table.modes, dtype=np.float64),
        mode_std=table.mode_std if own else None,
        categories=categories,
    )
