"""Local files: where they may lie, what format they hold, and the tabular readers.

Format by extension for file:// paths, by content (`sniff_format`) for uploads. Pickles are
never loaded. Every library error while reading becomes "could not read <file> as <format>".
Nothing is decompressed by its name: pandas reads with `compression=None` (it would unzip a
file named x.zip). Each reader checks headers and metadata first (models.datasets.inspect)
and tells the Table its row count, so the size is refused before the data is read.
"""

from __future__ import annotations

import codecs
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from models.datasets.base import DataError, Table, reading, shown
from models.datasets.inspect import (
    NpyHeader,
    check_array_columns,
    check_parquet_file,
    check_parquet_footer,
    csv_header,
    npy_file_header,
    npy_header_limit,
    npz_members,
    parquet_bytes,
)
from models.datasets.limits import DataLimits, check_columns
from models.datasets.uri import clip

__all__ = ["FORMATS", "SUFFIX_FORMATS", "format_of", "is_under", "open_file", "reading",
           "resolve_file_uri", "sniff_format"]

FORMATS = ("csv", "parquet", "npy", "npz", "hdf5", "root")
SUFFIX_FORMATS = {
    ".csv": "csv", ".parquet": "parquet", ".pq": "parquet", ".npy": "npy", ".npz": "npz",
    ".h5": "hdf5", ".hdf5": "hdf5", ".root": "root",
}
_MAGIC = (
    (b"PAR1", "parquet"),
    (b"\x93NUMPY", "npy"),
    (b"PK\x03\x04", "npz"),
    (b"\x89HDF\r\n\x1a\n", "hdf5"),
    (b"root", "root"),
)
_SNIFF_BYTES = 64 * 1024


# --- where a file may lie -----------------------------------------------------------------------


def is_under(real: str, root: Path) -> bool:
    """Whether the real path `real` is `root` or lies under it (root resolved here)."""
    root_real = os.path.realpath(root)
    return real == root_real or real.startswith(root_real.rstrip(os.sep) + os.sep)


def resolve_file_uri(raw: str, data_roots: Sequence[Path]) -> Path:
    """The real path of the absolute path of a parsed file:// URI (models.datasets.uri),
    refused unless it lies under a data root.

    realpath first, so neither `..` nor a symlink can lead outside the roots; containment is
    checked before existence, so the answer tells nothing about files outside the roots.
    """
    real = os.path.realpath(raw)
    if not any(is_under(real, Path(root)) for root in data_roots):
        roots = ", ".join(str(r) for r in data_roots) or "(none configured)"
        raise DataError(f"{raw} lies outside the data roots ({roots}); put the file under one "
                        "of them or upload it")
    if not os.path.isfile(real):
        raise DataError(f"no such file: {raw}")
    return Path(real)


# --- what a file holds --------------------------------------------------------------------------


def sniff_format(path: str | os.PathLike[str], limits: DataLimits | None = None,
                 label: str | None = None) -> str:
    """The format of a file by its content: one of FORMATS, or DataError if unusable.

    Magic bytes: Parquet 'PAR1', NPY '\\x93NUMPY', NPZ a zip of .npy members, HDF5
    '\\x89HDF\\r\\n\\x1a\\n', ROOT 'root'; anything else must be UTF-8 text and is taken as CSV.
    An NPZ's members are checked (models.datasets.inspect.npz_members) under `limits`.
    `label` names the file in messages (an upload's URI: its stored name means nothing).
    """
    path = Path(path)
    label = label or path.name
    try:
        with path.open("rb") as f:
            head = f.read(_SNIFF_BYTES)
    except OSError as e:
        raise DataError(f"cannot open {label}: {e.strerror or e}") from e
    if not head:
        raise DataError(f"{label} is empty")
    for magic, fmt in _MAGIC:
        if head.startswith(magic):
            if fmt == "npz":
                npz_members(path, label, limits or DataLimits())
            return fmt
    # A multi-byte character may straddle the cut: an incremental decoder waits for its end.
    try:
        codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
    except UnicodeDecodeError:
        raise DataError(f"{label} is not CSV, Parquet, NPY, NPZ, HDF5 or ROOT (binary data "
                        "that is not UTF-8 text)") from None
    if b"\x00" in head:
        raise DataError(f"{label} is not CSV text (it holds NUL bytes)")
    return "csv"


def format_of(path: Path) -> str:
    """By extension; an unknown extension falls back to the content."""
    return SUFFIX_FORMATS.get(path.suffix.lower()) or sniff_format(path)


def open_file(path: Path, fmt: str, table: str | None, label: str | None = None,
              limits: DataLimits | None = None) -> Table:
    """The Table of a local file in format `fmt`; `table` picks a TTree / HDF5 dataset / NPZ
    array. `label` names the file in messages (an upload's dataset:// URI, say). Headers and
    metadata are checked against `limits` here; the data is read later, by `Table.read`."""
    label = label or str(path)
    limits = limits or DataLimits()
    if fmt not in FORMATS:
        raise DataError(f"unsupported format {fmt!r} for {label}; use one of {', '.join(FORMATS)}")
    with reading(label, fmt):
        if fmt == "csv":
            return _csv(path, label, limits)
        if fmt == "parquet":
            return _parquet(path, label, limits)
        if fmt == "npy":
            return _npy(path, label, limits)
        if fmt == "npz":
            return _npz(path, table, label, limits)
        if fmt == "hdf5":
            from models.datasets.hdf5 import hdf5_table

            return hdf5_table(path, table, label, limits)
        from models.datasets.root import root_table

        return root_table(path, table, label, limits)


# --- readers --------------------------------------------------------------------------------


def _csv(path: Path, label: str, limits: DataLimits) -> Table:
    import pandas as pd

    csv_header(path, label, limits)  # bounded bytes: a huge header never reaches pandas
    columns = [str(c) for c in pd.read_csv(path, nrows=0, compression=None).columns]

    def read(names: Sequence[str], max_rows: int | None) -> dict[str, np.ndarray]:
        with reading(label, "csv"):
            frame = pd.read_csv(path, usecols=list(names), nrows=max_rows, compression=None)
        return {n: frame[n].to_numpy() for n in names}

    return Table(label=label, columns=columns, read=read)


def _parquet(path: Path, label: str, limits: DataLimits) -> Table:
    import pyarrow as pa
    import pyarrow.parquet as pq

    check_parquet_footer(path, label, limits)  # before pyarrow parses it
    pf = pq.ParquetFile(path)
    check_parquet_file(pf, label, limits)
    columns = list(pf.schema_arrow.names)

    def column(data: pa.ChunkedArray) -> np.ndarray:
        kind = data.type
        numeric = pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(
            kind)
        if data.null_count and numeric:  # missing values become NaN and are reported as such
            data = data.cast(pa.float64())
        return data.to_numpy()

    def read(names: Sequence[str], max_rows: int | None) -> dict[str, np.ndarray]:
        with reading(label, "parquet"):
            pf = pq.ParquetFile(path)
            _check_decoded_bytes(pf, names, max_rows, label, limits)
            if max_rows is None:  # a column at a time: one Arrow copy at most, not all
                return {n: column(pf.read(columns=[n]).column(n)) for n in names}
            else:  # stop after the first batches instead of reading the whole file
                batches = []
                rows = 0
                for batch in pf.iter_batches(batch_size=65_536, columns=list(names)):
                    batches.append(batch)
                    rows += batch.num_rows
                    if rows >= max_rows:
                        break
                schema = pf.schema_arrow
                data = pa.Table.from_batches(batches, schema=pa.schema(
                    [schema.field(n) for n in names])).slice(0, max_rows)
            return {n: column(data.column(n)) for n in names}

    return Table(label=label, columns=columns, read=read, n_rows=int(pf.metadata.num_rows))


def _check_decoded_bytes(pf: object, names: Sequence[str], max_rows: int | None, label: str,
                         limits: DataLimits) -> None:
    """Strings have no fixed size a cell: bound the chunks' uncompressed bytes too, at 16
    bytes a cell of the budget (page headers and statistics take some), plus 64 MiB."""
    allowed = limits.max_cells * 16 + 64 * 1024**2
    size = parquet_bytes(pf, names, max_rows)
    if size > allowed:
        raise DataError(f"the columns read from {label} hold {size} bytes uncompressed; at "
                        f"most {allowed} are read (MAX_DATA_CELLS x 16 + 64 MiB)")


def _npy(path: Path, label: str, limits: DataLimits) -> Table:
    header = npy_file_header(path, label, limits)  # shape, dtype and size, before mapping
    check_array_columns(header, label, limits)
    array = np.load(path, mmap_mode="r", allow_pickle=False,
                    max_header_size=npy_header_limit(limits))
    return array_table(array, label)


def array_table(array: np.ndarray, label: str) -> Table:
    """A numpy array as a table: a structured array by its fields, a 2-D array as col0..,
    a 1-D array as col0."""
    if array.dtype.names:
        if array.ndim != 1:
            raise DataError(f"{label}: a structured array must be 1-D, got shape {array.shape}")
        columns = list(array.dtype.names)
    elif array.ndim == 2:
        columns = [f"col{i}" for i in range(array.shape[1])]
    elif array.ndim == 1:
        columns = ["col0"]
    else:
        raise DataError(f"{label}: expected a 2-D array [rows, columns], got shape {array.shape}")

    def read(names: Sequence[str], max_rows: int | None) -> dict[str, np.ndarray]:
        rows = array[:max_rows]
        if array.dtype.names:
            return {n: np.asarray(rows[n]) for n in names}
        if array.ndim == 1:
            return {"col0": np.asarray(rows)}
        return {n: np.asarray(rows[:, int(n[3:])]) for n in names}

    return Table(label=label, columns=columns, read=read, n_rows=int(array.shape[0]))


def _npz_array(path: Path, member: str, label: str, limits: DataLimits) -> np.ndarray:
    with reading(label, "npz"), np.load(path, allow_pickle=False,
                                        max_header_size=npy_header_limit(limits)) as archive:
        return np.asarray(archive[member])


def _npz(path: Path, table: str | None, label: str, limits: DataLimits) -> Table:
    """Headers first (npz_members): an array is decompressed only when read, and only the
    arrays the spec uses."""
    members = npz_members(path, label, limits)
    names = list(members)
    if table is not None and table not in members:
        raise DataError(f"{label} holds no array {clip(table)}; arrays: {shown(names)}")
    if table is not None or len(names) == 1:
        return _npz_member_table(path, table or names[0], members[table or names[0]], label,
                                 limits)
    # Several 1-D arrays of one length (np.savez(x=..., y=...)) are the columns of one table.
    headers = list(members.values())
    lengths = {h.shape[0] for h in headers if len(h.shape) == 1}
    if all(len(h.shape) == 1 and not h.dtype.names for h in headers) and len(lengths) == 1:
        check_columns(names, label, limits)

        def read(cols: Sequence[str], max_rows: int | None) -> dict[str, np.ndarray]:
            return {c: _npz_array(path, c, label, limits)[:max_rows] for c in cols}

        return Table(label=label, columns=names, read=read, n_rows=lengths.pop())
    raise DataError(f"{label} holds several arrays ({shown(names)}); set dataset.table to the "
                    "one to use")


def _npz_member_table(path: Path, member: str, header: NpyHeader, label: str,
                      limits: DataLimits) -> Table:
    """One array of an NPZ as a table; reading any column inflates the whole member."""
    columns = check_array_columns(header, label, limits)

    def read(names: Sequence[str], max_rows: int | None) -> dict[str, np.ndarray]:
        return dict(array_table(_npz_array(path, member, label, limits), label).read(names,
                                                                                     max_rows))

    return Table(label=label, columns=columns, read=read, n_rows=header.shape[0],
                 reads_all_columns=True)
