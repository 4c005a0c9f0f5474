"""Local files: where they may lie, what format they hold, and the tabular readers.

Format by extension for file:// paths, by content (`sniff_format`) for uploads. Pickles are
never loaded. Every library error while reading becomes "could not read <file> as <format>".
"""

from __future__ import annotations

import codecs
import contextlib
import os
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from urllib.parse import unquote, urlparse

import numpy as np

from models.datasets.base import DataError, Table, shown

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


def _is_under(real: str, root: Path) -> bool:
    root_real = os.path.realpath(root)
    return real == root_real or real.startswith(root_real.rstrip(os.sep) + os.sep)


def resolve_file_uri(uri: str, data_roots: Sequence[Path]) -> Path:
    """The real path of a file:///abs/path URI, refused unless it lies under a data root.

    realpath first, so neither `..` nor a symlink can lead outside the roots; containment is
    checked before existence, so the answer tells nothing about files outside the roots.
    """
    parsed = urlparse(uri)
    if parsed.netloc not in ("", "localhost"):
        raise DataError(f"{uri}: file:// URIs name a local path (file:///abs/path), "
                        f"not host {parsed.netloc!r}")
    raw = unquote(parsed.path)
    if not raw.startswith("/"):
        raise DataError(f"{uri}: the path must be absolute (file:///abs/path)")
    real = os.path.realpath(raw)
    if not any(_is_under(real, Path(root)) for root in data_roots):
        roots = ", ".join(str(r) for r in data_roots) or "(none configured)"
        raise DataError(f"{raw} lies outside the data roots ({roots}); put the file under one "
                        "of them or upload it")
    if not os.path.isfile(real):
        raise DataError(f"no such file: {raw}")
    return Path(real)


# --- what a file holds --------------------------------------------------------------------------


def sniff_format(path: str | os.PathLike[str]) -> str:
    """The format of a file by its content: one of FORMATS, or DataError if unusable.

    Magic bytes: Parquet 'PAR1', NPY '\\x93NUMPY', NPZ a zip of .npy members, HDF5
    '\\x89HDF\\r\\n\\x1a\\n', ROOT 'root'; anything else must be UTF-8 text and is taken as CSV.
    """
    path = Path(path)
    try:
        with path.open("rb") as f:
            head = f.read(_SNIFF_BYTES)
    except OSError as e:
        raise DataError(f"cannot open {path}: {e.strerror or e}") from e
    if not head:
        raise DataError(f"{path.name} is empty")
    for magic, fmt in _MAGIC:
        if head.startswith(magic):
            if fmt == "npz":
                _check_npz(path)
            return fmt
    # A multi-byte character may straddle the cut: an incremental decoder waits for its end.
    try:
        codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
    except UnicodeDecodeError:
        raise DataError(f"{path.name} is not CSV, Parquet, NPY, NPZ, HDF5 or ROOT (binary data "
                        "that is not UTF-8 text)") from None
    if b"\x00" in head:
        raise DataError(f"{path.name} is not CSV text (it holds NUL bytes)")
    return "csv"


def _check_npz(path: Path) -> None:
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
    except (zipfile.BadZipFile, OSError) as e:
        raise DataError(f"could not read {path.name} as npz: {e}") from e
    if not names or not all(n.endswith(".npy") for n in names):
        raise DataError(f"{path.name} is a zip archive but not an NPZ (members must be .npy)")


def format_of(path: Path) -> str:
    """By extension; an unknown extension falls back to the content."""
    return SUFFIX_FORMATS.get(path.suffix.lower()) or sniff_format(path)


@contextlib.contextmanager
def reading(label: str, fmt: str) -> Iterator[None]:
    """Wrap the assorted exceptions of the reading libraries into one DataError."""
    try:
        yield
    except DataError:
        raise
    except Exception as e:  # noqa: BLE001 - pandas, pyarrow, h5py, uproot each raise their own
        raise DataError(f"could not read {label} as {fmt}: {type(e).__name__}: {e}") from e


def open_file(path: Path, fmt: str, table: str | None, label: str | None = None) -> Table:
    """The Table of a local file in format `fmt`; `table` picks a TTree / HDF5 dataset / NPZ
    array. `label` names the file in messages (an upload's dataset:// URI, say)."""
    label = label or str(path)
    if fmt not in FORMATS:
        raise DataError(f"unsupported format {fmt!r} for {label}; use one of {', '.join(FORMATS)}")
    with reading(label, fmt):
        if fmt == "csv":
            return _csv(path, label)
        if fmt == "parquet":
            return _parquet(path, label)
        if fmt == "npy":
            return array_table(np.load(path, mmap_mode="r", allow_pickle=False), label)
        if fmt == "npz":
            return _npz(path, table, label)
        if fmt == "hdf5":
            from models.datasets.hdf5 import hdf5_table

            return hdf5_table(path, table, label)
        from models.datasets.root import root_table

        return root_table(path, table, label)


# --- readers --------------------------------------------------------------------------------


def _csv(path: Path, label: str) -> Table:
    import pandas as pd

    columns = [str(c) for c in pd.read_csv(path, nrows=0).columns]

    def read(names: Sequence[str], max_rows: int | None) -> dict[str, np.ndarray]:
        with reading(label, "csv"):
            frame = pd.read_csv(path, usecols=list(names), nrows=max_rows)
        return {n: frame[n].to_numpy() for n in names}

    return Table(label=label, columns=columns, read=read)


def _parquet(path: Path, label: str) -> Table:
    import pyarrow as pa
    import pyarrow.parquet as pq

    columns = list(pq.ParquetFile(path).schema_arrow.names)

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
            if max_rows is None:
                data = pf.read(columns=list(names))
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

    return Table(label=label, columns=columns, read=read)


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

    return Table(label=label, columns=columns, read=read)


def _npz(path: Path, table: str | None, label: str) -> Table:
    with np.load(path, allow_pickle=False) as archive:
        names = list(archive.files)
        if table is not None:
            if table not in names:
                raise DataError(f"{label} holds no array {table!r}; arrays: {shown(names)}")
            return array_table(archive[table], label)
        if len(names) == 1:
            return array_table(archive[names[0]], label)
        arrays = {n: archive[n] for n in names}
    # Several 1-D arrays of one length (np.savez(x=..., y=...)) are the columns of one table.
    lengths = {a.shape[0] for a in arrays.values() if a.ndim == 1}
    if all(a.ndim == 1 and not a.dtype.names for a in arrays.values()) and len(lengths) == 1:

        def read(cols: Sequence[str], max_rows: int | None) -> dict[str, np.ndarray]:
            return {c: arrays[c][:max_rows] for c in cols}

        return Table(label=label, columns=names, read=read)
    raise DataError(f"{label} holds several arrays ({shown(names)}); set dataset.table to the "
                    "one to use")
