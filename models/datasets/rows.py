"""A data set's columns a row range at a time, for batch sampling jobs (torch-free).

A batch sampling job reads the conditions of its rows from any URI a training job reads, with
the same checks (data roots, upload owners, allowed hosts, headers and metadata against
`DataLimits` before any data is read), but it reads only the condition columns, keeps their
values as given (categorical ones as strings or integers) and does not apply the training
rules (no feature column needed, no minimum row count, constant columns allowed).

- Parquet and NPY files on this machine (file:// under a data root, dataset:// uploads) are
  read a row range at a time in place: the row groups holding the range, in batches of 65,536
  rows (Parquet), or a slice of the memory-mapped array (NPY).
- Every other source (CSV, HDF5, ROOT, NPZ, builtins, http(s)/s3 downloads) is read whole
  once, under the cell budget, by `read_all`; the caller keeps the rows it needs.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from models.datasets.base import DataError, Table, reading, shown
from models.datasets.builtin import builtin_table
from models.datasets.files import (
    _check_decoded_bytes,
    array_table,
    format_of,
    open_file,
    resolve_file_uri,
    sniff_format,
)
from models.datasets.inspect import (
    check_array_columns,
    check_parquet_file,
    check_parquet_footer,
    npy_file_header,
    npy_header_limit,
)
from models.datasets.limits import DataLimits, check_cells, check_columns
from models.datasets.loader import _upload
from models.datasets.remote import fetch
from models.datasets.uri import REMOTE_SCHEMES, parse_dataset_uri

__all__ = ["IN_PLACE_FORMATS", "Located", "Source", "locate", "open_source", "peek_columns",
           "read_all", "read_range", "require_columns"]

IN_PLACE_FORMATS = ("parquet", "npy")  # read a row range at a time, without a copy
PEEK_FORMATS = ("parquet", "npy", "csv")  # their columns come from a header, cheaply
BATCH_ROWS = 65_536


@dataclass(frozen=True)
class Located:
    """Where a URI's data lie on this machine: a local file (None: a builtin)."""

    uri: str
    path: Path | None
    fmt: str | None
    label: str
    remote: bool

    @property
    def in_place(self) -> bool:
        """Whether a row range can be read from the file itself (a local Parquet or NPY)."""
        return self.path is not None and not self.remote and self.fmt in IN_PLACE_FORMATS


@dataclass(frozen=True)
class Source:
    located: Located
    table: Table

    @property
    def label(self) -> str:
        return self.table.label


def locate(uri: str, *, data_roots: Sequence[Path],
           upload_resolver: Callable[[str], Path] | None = None,
           allowed_hosts: Sequence[str] | None = None, limits: DataLimits | None = None,
           download_dir: Path | None = None) -> Located:
    """The local file of `uri`, checked as `load_dataset` checks it: under a data root, an
    upload the resolver gives, or a download of an allowed host into `download_dir`
    (DataError without one)."""
    limits = limits or DataLimits()
    parsed = parse_dataset_uri(uri)
    if parsed.scheme == "builtin":
        return Located(uri, None, None, uri, remote=False)
    if parsed.scheme == "file":
        path = resolve_file_uri(str(parsed.path), data_roots)
        return Located(uri, path, format_of(path), str(path), remote=False)
    if parsed.scheme == "dataset":
        path = _upload(str(parsed.upload_id), upload_resolver)
        return Located(uri, path, sniff_format(path, limits, label=parsed.raw), parsed.raw,
                       remote=False)
    if parsed.scheme in REMOTE_SCHEMES:
        if download_dir is None:
            raise DataError(f"{uri}: remote data cannot be read a row range at a time here")
        path = fetch(parsed, allowed_hosts, download_dir)
        return Located(uri, path, format_of(path), parsed.raw, remote=True)
    raise DataError(f"unsupported URI scheme {parsed.scheme!r} in {parsed.raw!r}")


def open_source(located: Located, table: str | None, limits: DataLimits | None = None
                ) -> Source:
    """The Table of a located file (headers and metadata checked, nothing read yet)."""
    limits = limits or DataLimits()
    if located.path is None:
        name = located.uri.split("://", 1)[1].strip("/")
        opened = builtin_table(name)
    else:
        assert located.fmt is not None
        opened = open_file(located.path, located.fmt, table, label=located.label,
                           limits=limits)
    check_columns(opened.columns, opened.label, limits)
    return Source(located, opened)


def require_columns(source: Source, names: Sequence[str], hint: str = "") -> None:
    """DataError naming every column of `names` the source does not have."""
    unknown = [n for n in dict.fromkeys(names) if n not in source.table.columns]
    if unknown:
        raise DataError(f"unknown column(s) {', '.join(repr(c) for c in unknown)} in "
                        f"{source.label}{hint}; available columns: "
                        f"{shown(source.table.columns)}")


def peek_columns(uri: str, table: str | None, *, data_roots: Sequence[Path],
                 upload_resolver: Callable[[str], Path] | None, limits: DataLimits
                 ) -> tuple[list[str], int | None, str] | None:
    """(columns, rows or None, label) of a local CSV, Parquet or NPY file, from its header
    only; None for every other source (builtins, remote files, other formats), whose
    columns are known only once a worker opens it. DataError as a worker would raise it."""
    parsed = parse_dataset_uri(uri)
    if parsed.scheme not in ("file", "dataset"):
        return None
    located = locate(uri, data_roots=data_roots, upload_resolver=upload_resolver,
                     limits=limits)
    if located.fmt not in PEEK_FORMATS:
        return None
    source = open_source(located, table, limits)
    return list(source.table.columns), source.table.n_rows, source.label


def read_all(source: Source, names: Sequence[str], max_rows: int | None,
             limits: DataLimits | None = None) -> dict[str, np.ndarray]:
    """The columns `names`, whole (at most `max_rows` rows), checked against the cell budget
    before they are read (a source without a row count, CSV: at most one row beyond it)."""
    limits = limits or DataLimits()
    table = source.table
    budget = max(limits.max_cells // max(len(names), 1), 1)
    cap = max_rows
    if table.n_rows is not None:
        rows = min(table.n_rows, max_rows or table.n_rows)
        if table.reads_all_columns:
            check_cells(rows, len(table.columns), table.label, limits,
                        what="columns (all are decompressed to read any)")
        else:
            check_cells(rows, len(names), table.label, limits)
    else:
        cap = budget + 1 if cap is None else min(cap, budget + 1)
    with reading(table.label, source.located.fmt or "builtin"):
        raw = {n: np.asarray(v)[:cap] for n, v in table.read(list(names), cap).items()}
    lengths = {len(v) for v in raw.values()}
    if len(lengths) > 1:
        by_name = {n: len(v) for n, v in raw.items()}
        raise DataError(f"columns of {table.label} differ in length: {by_name}")
    if table.n_rows is None and lengths and lengths.pop() > budget:
        raise DataError(f"{table.label} is too large: more than {budget} rows x {len(names)} "
                        f"columns read; at most {limits.max_cells} cells are allowed "
                        "(MAX_DATA_CELLS); use fewer rows (dataset.max_rows)")
    return raw


def read_range(path: Path, fmt: str, names: Sequence[str], start: int, stop: int, *,
               label: str, limits: DataLimits | None = None, table: str | None = None
               ) -> dict[str, np.ndarray]:
    """Rows [start, stop) of the columns `names` of a local Parquet or NPY file, reading no
    more than the row groups (Parquet) or the slice of the mapped array (NPY) they lie in."""
    limits = limits or DataLimits()
    if fmt == "parquet":
        return _parquet_range(path, names, start, stop, label, limits)
    if fmt == "npy":
        return _npy_range(path, names, start, stop, label, limits)
    raise DataError(f"{label}: {fmt} files are not read a row range at a time")


def _arrow_numpy(data: Any) -> np.ndarray:
    """An Arrow column as numpy, as the loader converts it: missing numbers become NaN."""
    import pyarrow as pa

    kind = data.type
    numeric = pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(
        kind)
    if data.null_count and numeric:
        data = data.cast(pa.float64())
    return np.asarray(data.to_numpy())


def _parquet_range(path: Path, names: Sequence[str], start: int, stop: int, label: str,
                   limits: DataLimits) -> dict[str, np.ndarray]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    with reading(label, "parquet"):
        check_parquet_footer(path, label, limits)
        pf = pq.ParquetFile(path)
        check_parquet_file(pf, label, limits)
        missing = [n for n in names if n not in pf.schema_arrow.names]
        if missing:
            raise DataError(f"unknown column(s) {', '.join(repr(c) for c in missing)} in "
                            f"{label}; available columns: {shown(pf.schema_arrow.names)}")
        _check_decoded_bytes(pf, names, stop, label, limits)
        meta = pf.metadata
        groups: list[int] = []
        first: int | None = None
        position = 0
        for g in range(meta.num_row_groups):
            rows = meta.row_group(g).num_rows
            if position + rows > start and position < stop:
                groups.append(g)
                first = position if first is None else first
            position += rows
        schema = pa.schema([pf.schema_arrow.field(n) for n in names])
        batches = []
        at = first or 0
        if groups:
            for batch in pf.iter_batches(batch_size=BATCH_ROWS, row_groups=groups,
                                         columns=list(names)):
                low, high = at, at + batch.num_rows
                at = high
                if high <= start:
                    continue
                begin = max(start, low)
                batches.append(batch.slice(begin - low, min(stop, high) - begin))
                if high >= stop:
                    break
        data = pa.Table.from_batches(batches, schema=schema)
        if data.num_rows != stop - start:
            raise DataError(f"{label} holds {position} rows; rows {start}..{stop} were asked "
                            "for (was the file replaced since the job was planned?)")
        return {n: _arrow_numpy(data.column(n)) for n in names}


def _npy_range(path: Path, names: Sequence[str], start: int, stop: int, label: str,
               limits: DataLimits) -> dict[str, np.ndarray]:
    header = npy_file_header(path, label, limits)
    check_array_columns(header, label, limits)
    with reading(label, "npy"):
        array = np.load(os.fspath(path), mmap_mode="r", allow_pickle=False,
                        max_header_size=npy_header_limit(limits))
        if array.shape[0] < stop:
            raise DataError(f"{label} holds {array.shape[0]} rows; rows {start}..{stop} were "
                            "asked for (was the file replaced since the job was planned?)")
        table = array_table(array[start:stop], label)
        missing = [n for n in names if n not in table.columns]
        if missing:
            raise DataError(f"unknown column(s) {', '.join(repr(c) for c in missing)} in "
                            f"{label}; available columns: {shown(table.columns)}")
        # Copies: the columns must not keep the file's mapping alive.
        return {n: np.array(v) for n, v in table.read(list(names), None).items()}
