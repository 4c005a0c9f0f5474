"""Cheap inspection of a data file from its headers and metadata, before any data is read.

The same checks run twice: when a file is uploaded (POST /v1/datasets answers 422 with the
reason) and when the loader opens it (the job fails with the reason), so neither an old
upload nor a file:// path skips them. Nothing here decompresses or parses the data itself:

- NPY: the header's shape and dtype (object arrays are pickles: refused), against the size.
- NPZ: the zip's central directory size and entry count from its end record, before
  `zipfile` parses it; then each member's .npy header, read from the first bytes of the
  member, against the member's declared size and its compressed size (zip bombs).
- CSV: the header line, read only up to the bytes MAX_COLUMNS names can take.
- Parquet: the footer's length and the schema's element count, before pyarrow parses it;
  then column chunks that name another file (`file_path`).
- HDF5 (models.datasets.hdf5) and ROOT (models.datasets.root) check their own structure.
"""

from __future__ import annotations

import csv
import io
import math
import stat
import struct
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import IO, Any

import numpy as np

from models.datasets.base import DataError, reading
from models.datasets.limits import DataLimits, check_cells, check_columns, one_table_usable
from models.datasets.uri import clip

# An NPY header is a Python literal parsed by ast.literal_eval: bounded, and large enough
# for a structured dtype of MAX_COLUMNS fields.
_NPY_HEADER_BYTES_PER_FIELD = 160
# Below this declared size an NPZ member is not a memory threat whatever its ratio (a small
# all-zero array compresses 1000 times and is harmless).
RATIO_FLOOR_BYTES = 16 * 1024**2
# Bytes of central directory allowed per zip entry (46 fixed, the name, zip64 extras).
_CENTRAL_DIRECTORY_BYTES_PER_ENTRY = 256
# pyarrow parses the whole footer at open: 16 MiB is about 80 000 column chunks (1000
# columns x 80 row groups); the parse of a footer this size takes well under a second.
MAX_PARQUET_FOOTER_BYTES = 16 * 1024**2
_ZIP_METHODS = {zipfile.ZIP_STORED: "stored", zipfile.ZIP_DEFLATED: "deflated"}


# --- NPY headers --------------------------------------------------------------------------


@dataclass(frozen=True)
class NpyHeader:
    """What an .npy header declares; `offset`: bytes before the data."""

    shape: tuple[int, ...]
    dtype: np.dtype
    fortran_order: bool
    offset: int

    @property
    def n_items(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.n_items * self.dtype.itemsize

    @property
    def cells(self) -> int:
        """Numbers held: items times fields for a structured array."""
        return self.n_items * max(len(self.dtype.names or ()), 1)


def npy_header_limit(limits: DataLimits) -> int:
    """The `max_header_size` for numpy: a structured dtype of max_columns fields fits."""
    return max(10_000, limits.max_columns * _NPY_HEADER_BYTES_PER_FIELD)


def read_npy_header(fp: IO[bytes], label: str, limits: DataLimits) -> NpyHeader:
    """The header at the start of `fp` (a file or a zip member); DataError if unusable."""
    fmt = np.lib.format
    try:
        version = fmt.read_magic(fp)
        reader = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
        shape, fortran_order, dtype = reader(fp, max_header_size=npy_header_limit(limits))
    except (ValueError, OSError, EOFError, SyntaxError, zipfile.BadZipFile) as e:
        if "max_header_size" in str(e):  # numpy's own advice (allow_pickle) must not be shown
            raise DataError(f"{label} has a .npy header longer than "
                            f"{npy_header_limit(limits)} bytes: a structured dtype of more "
                            f"than {limits.max_columns} fields (MAX_COLUMNS)?") from None
        raise DataError(f"{label} has no valid .npy header: {str(e)[:200]}") from None
    if dtype.hasobject:
        raise DataError(f"{label} holds Python objects (dtype {str(dtype)[:80]}); they are "
                        "stored as pickles, which are never loaded: save numbers")
    return NpyHeader(tuple(int(n) for n in shape), dtype, bool(fortran_order), fp.tell())


def npy_file_header(path: Path, label: str, limits: DataLimits) -> NpyHeader:
    """The header of an .npy file, checked against the file's size."""
    with path.open("rb") as f:
        header = read_npy_header(f, label, limits)
    size = path.stat().st_size
    if header.offset + header.nbytes > size:
        raise DataError(f"{label} is truncated: its header declares shape {header.shape} "
                        f"({header.nbytes} bytes of data) but it holds {size - header.offset}")
    return header


# --- NPZ: the zip, then each member's header ----------------------------------------------


def _zip_directory(path: Path, label: str) -> tuple[int, int]:
    """(entries, central directory bytes) from the zip's end record, without zipfile (which
    parses the whole central directory into memory first)."""
    size = path.stat().st_size
    with path.open("rb") as f:
        tail_start = max(0, size - (22 + 65_535))  # the end record and its longest comment
        f.seek(tail_start)
        tail = f.read()
        pos = tail.rfind(b"PK\x05\x06")
        if pos < 0 or len(tail) - pos < 22:
            raise DataError(f"could not read {label} as npz: no zip end record")
        entries, directory = struct.unpack("<HI", tail[pos + 10: pos + 16])
        if entries != 0xFFFF and directory != 0xFFFFFFFF:
            return entries, directory
        locator = tail.rfind(b"PK\x06\x07", 0, pos)  # zip64: the true counts are further on
        if locator < 0:
            raise DataError(f"could not read {label} as npz: no zip64 end record locator")
        (offset,) = struct.unpack("<Q", tail[locator + 8: locator + 16])
        f.seek(offset)
        record = f.read(56)
    if len(record) < 56 or record[:4] != b"PK\x06\x06":
        raise DataError(f"could not read {label} as npz: bad zip64 end record")
    entries64, directory64 = struct.unpack("<QQ", record[32:48])
    return entries64, directory64


def check_zip_directory(path: Path, label: str, limits: DataLimits) -> None:
    """Refuse a zip whose central directory alone would be costly to parse."""
    entries, directory = _zip_directory(path, label)
    if entries > limits.max_file_objects:
        raise DataError(f"{label} has {entries} zip members; at most "
                        f"{limits.max_file_objects} are allowed (MAX_FILE_OBJECTS)")
    if directory > limits.max_file_objects * _CENTRAL_DIRECTORY_BYTES_PER_ENTRY:
        raise DataError(f"{label} has a zip central directory of {directory} bytes; at most "
                        f"{limits.max_file_objects * _CENTRAL_DIRECTORY_BYTES_PER_ENTRY} are "
                        "allowed (MAX_FILE_OBJECTS)")


def _member_name(info: zipfile.ZipInfo, label: str, seen: set[str]) -> str:
    name = info.filename
    if not name.endswith(".npy"):
        raise DataError(f"{label} is a zip archive but not an NPZ (members must be .npy, "
                        f"found {clip(name)})")
    array = name[: -len(".npy")]
    # numpy reads members into memory and never extracts them, so a path cannot escape; a
    # member with one is still no array numpy writes, and would be an odd table name.
    if not array or "/" in array or "\\" in array or array.startswith("."):
        raise DataError(f"member {clip(name)} of {label} has a path; NPZ members are plain "
                        "array names")
    if stat.S_ISLNK(info.external_attr >> 16):
        raise DataError(f"member {clip(name)} of {label} is a symbolic link; NPZ members are "
                        "arrays")
    if array in seen:
        raise DataError(f"{label} holds member {clip(name)} twice")
    if info.flag_bits & 0x1:
        raise DataError(f"member {clip(name)} of {label} is encrypted")
    if info.compress_type not in _ZIP_METHODS:
        raise DataError(f"member {clip(name)} of {label} uses zip compression method "
                        f"{info.compress_type}; only stored and deflated (numpy's) are read")
    return array


def _check_member(info: zipfile.ZipInfo, header: NpyHeader, member: str,
                  limits: DataLimits) -> None:
    if header.offset + header.nbytes != info.file_size:
        raise DataError(f"{member} declares shape {header.shape} of {header.dtype} "
                        f"({header.offset + header.nbytes} bytes) but holds "
                        f"{info.file_size} bytes: truncated or inconsistent")
    ratio = info.file_size / max(info.compress_size, 1)
    if info.file_size > RATIO_FLOOR_BYTES and ratio > limits.max_compression_ratio:
        raise DataError(f"{member} expands {ratio:.0f} times ({info.compress_size} bytes "
                        f"compressed, {info.file_size} bytes declared); at most "
                        f"{limits.max_compression_ratio:g} is allowed (MAX_COMPRESSION_RATIO): "
                        "a zip bomb, or data without information")
    rows = header.shape[0] if header.shape else 1
    check_cells(rows, header.cells // max(rows, 1), member, limits,
                what="columns (numpy inflates the whole array to read any part)")


def npz_members(path: Path, label: str, limits: DataLimits) -> dict[str, NpyHeader]:
    """{array name: its header} of an NPZ, every member checked before any is decompressed."""
    check_zip_directory(path, label, limits)
    members: dict[str, NpyHeader] = {}
    try:
        with zipfile.ZipFile(path) as z:
            infos = z.infolist()
            if not infos:
                raise DataError(f"{label} is an empty zip archive, not an NPZ")
            for info in infos:
                array = _member_name(info, label, set(members))
                member = f"array {clip(array)} of {label}"
                with z.open(info) as fp:  # only the first block is inflated
                    header = read_npy_header(fp, member, limits)
                _check_member(info, header, member, limits)
                members[array] = header
    except (zipfile.BadZipFile, OSError, RuntimeError, NotImplementedError, EOFError) as e:
        raise DataError(f"could not read {label} as npz: {type(e).__name__}: "
                        f"{str(e)[:200]}") from None
    return members


def header_columns(header: NpyHeader, label: str) -> list[str]:
    """The columns an array offers: its fields, or col0.. (models.datasets.files)."""
    if header.dtype.names:
        if len(header.shape) != 1:
            raise DataError(f"{label}: a structured array must be 1-D, got shape "
                            f"{header.shape}")
        return list(header.dtype.names)
    if len(header.shape) == 2:
        return [f"col{i}" for i in range(header.shape[1])]
    if len(header.shape) == 1:
        return ["col0"]
    raise DataError(f"{label}: expected a 2-D array [rows, columns], got shape {header.shape}")


def check_array_columns(header: NpyHeader, label: str, limits: DataLimits) -> list[str]:
    """header_columns, with the column count checked before the names are made."""
    width = header.shape[1] if len(header.shape) == 2 and not header.dtype.names else 0
    if width > limits.max_columns:
        raise DataError(f"{label} has {width} columns; at most {limits.max_columns} are "
                        "allowed (MAX_COLUMNS)")
    columns = header_columns(header, label)
    check_columns(columns, label, limits)
    return columns


# --- CSV: the header line only ------------------------------------------------------------


def _header_end(text: str) -> int | None:
    """Index of the newline that ends the first record (quoted newlines skipped), or None."""
    quotes = 0
    start = 0
    while (pos := text.find("\n", start)) >= 0:
        quotes += text.count('"', start, pos)
        if quotes % 2 == 0:
            return pos
        start = pos + 1
    return None


def csv_header(path: Path, label: str, limits: DataLimits) -> list[str]:
    """The names of the header line, read from at most `limits.max_header_bytes` bytes: a
    header longer than MAX_COLUMNS names can be is refused without parsing it."""
    cap = limits.max_header_bytes
    with path.open("rb") as f:
        head = f.read(cap + 1)
    text = head.decode("utf-8-sig", errors="replace")
    end = _header_end(text)
    line = text if end is None else text[:end]
    names = _split_header(line.rstrip("\r"))
    if end is None and len(head) > cap:
        _refuse_long_header(names, label, limits)
    if not names:
        raise DataError(f"{label} has no header line (the first line names the columns)")
    check_columns(names, label, limits)
    return names


def _split_header(line: str) -> list[str]:
    """The names of a header line. A field beyond the csv module's limit (128 KiB) is far
    beyond any allowed name: split on commas then, only to say which name is too long."""
    try:
        return next(csv.reader(io.StringIO(line)), [])
    except csv.Error:
        return line.split(",")


def _refuse_long_header(names: list[str], label: str, limits: DataLimits) -> None:
    """The header goes on beyond the bytes allowed: say why, from the names read so far
    (too many of them, or one too long: the last, cut, name usually)."""
    if len(names) > limits.max_columns:
        raise DataError(f"{label} has more than {limits.max_columns} columns; at most "
                        f"{limits.max_columns} are allowed (MAX_COLUMNS)")
    *complete, cut = names or [""]
    check_columns(complete, label, limits)
    if len(cut) > limits.max_column_name_length:  # only its start was read
        raise DataError(f"column {clip(cut)} of {label} is more than {len(cut)} characters "
                        f"long; at most {limits.max_column_name_length} are allowed "
                        "(MAX_COLUMN_NAME_LENGTH)")
    raise DataError(f"the header line of {label} is longer than {limits.max_header_bytes} "
                    f"bytes: at most {limits.max_columns} columns (MAX_COLUMNS) of at most "
                    f"{limits.max_column_name_length} characters (MAX_COLUMN_NAME_LENGTH) are "
                    "allowed")


# --- Parquet: the footer --------------------------------------------------------------------


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while pos < len(data):
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
    raise ValueError("truncated varint")


def _schema_elements(footer_head: bytes) -> int | None:
    """The schema's element count from the first bytes of a Parquet footer (Thrift compact
    protocol: field 1 `version` i32, then field 2 `schema` list<SchemaElement>), or None when
    the footer does not start the way every writer writes it."""
    try:
        if footer_head[:1] != b"\x15":  # field 1, type i32
            return None
        _, pos = _varint(footer_head, 1)
        if footer_head[pos: pos + 1] != b"\x19":  # field 2 (delta 1), type list
            return None
        header = footer_head[pos + 1]
        if header & 0x0F != 12:  # elements are structs
            return None
        size = header >> 4
        if size == 15:
            size, _ = _varint(footer_head, pos + 2)
        return size
    except (IndexError, ValueError):
        return None


def check_parquet_footer(path: Path, label: str, limits: DataLimits) -> None:
    """Refuse a footer pyarrow would take long to parse: too long, or too many columns."""
    size = path.stat().st_size
    with path.open("rb") as f:
        if size < 12:
            raise DataError(f"could not read {label} as parquet: the file is {size} bytes")
        f.seek(size - 8)
        length, magic = struct.unpack("<I4s", f.read(8))
        if magic != b"PAR1" or length > size - 12:
            raise DataError(f"could not read {label} as parquet: no valid footer (truncated?)")
        if length > MAX_PARQUET_FOOTER_BYTES:
            raise DataError(f"{label} has a Parquet footer of {length} bytes; at most "
                            f"{MAX_PARQUET_FOOTER_BYTES} are read (too many columns or row "
                            "groups)")
        f.seek(size - 8 - length)
        elements = _schema_elements(f.read(min(length, 32)))
    # One element per column, one for the root, a few for nested types (refused later).
    if elements is not None and elements > 4 * limits.max_columns + 1:
        raise DataError(f"{label} has a Parquet schema of {elements} elements; at most "
                        f"{limits.max_columns} columns are allowed (MAX_COLUMNS)")


def check_parquet_file(pf: Any, label: str, limits: DataLimits) -> None:
    """Column names, and no column chunk stored in another file.

    pyarrow's ParquetFile reads a chunk from its own file even when `file_path` names
    another (checked in tests), but a `_metadata`-style footer that points elsewhere has no
    business in an upload, and a dataset reader (pyarrow.dataset) would follow it.
    """
    meta = pf.metadata
    check_columns(list(pf.schema_arrow.names), label, limits)
    for g in range(meta.num_row_groups):
        group = meta.row_group(g)
        for c in range(group.num_columns):
            if group.column(c).file_path:
                raise DataError(f"column {clip(group.column(c).path_in_schema)} of {label} "
                                "is stored in another file (a Parquet file_path); such "
                                "files are refused: upload the data file itself")


def parquet_bytes(pf: Any, names: Sequence[str], max_rows: int | None = None) -> int:
    """Uncompressed bytes of the named columns' chunks in the row groups that hold the first
    `max_rows` rows (all: None). Strings have no fixed size a cell: this bounds them."""
    meta = pf.metadata
    index = {meta.schema.column(i).path: i for i in range(meta.num_columns)}
    total = rows = 0
    for g in range(meta.num_row_groups):
        if max_rows is not None and rows >= max_rows:
            break
        group = meta.row_group(g)
        rows += group.num_rows
        total += sum(group.column(index[n]).total_uncompressed_size for n in names
                     if n in index)
    return total


# --- at upload time -------------------------------------------------------------------------


def _npz_tables(members: dict[str, NpyHeader], label: str,
                limits: DataLimits) -> list[Callable[[], object]]:
    headers = list(members.values())
    checks: list[Callable[[], object]] = [
        partial(check_array_columns, header, f"array {clip(name)} of {label}", limits)
        for name, header in members.items()]
    if len(headers) > 1 and all(len(h.shape) == 1 and not h.dtype.names for h in headers):
        checks.insert(0, partial(check_columns, list(members), label, limits))
    return checks


def inspect_upload(path: Path, fmt: str, limits: DataLimits, label: str = "the file") -> None:
    """Every check that needs no job spec: DataError for what no job could ever load.

    The file's structure is checked whole (HDF5 links and storage, zip members); of its
    tables (HDF5 datasets and groups, NPZ arrays, ROOT trees) one must be usable, since a
    job's `dataset.table` may pick it. Row budgets depend on the spec (`max_rows`, the columns
    used): the loader checks those, except for NPZ members, inflated whole whatever the spec.
    """
    with reading(label, fmt):
        _inspect(path, fmt, limits, label)


def _inspect(path: Path, fmt: str, limits: DataLimits, label: str) -> None:
    if fmt == "csv":
        import pandas as pd

        csv_header(path, label, limits)
        columns = pd.read_csv(path, nrows=0, compression=None).columns
        check_columns([str(c) for c in columns], label, limits)
    elif fmt == "parquet":
        import pyarrow.parquet as pq

        check_parquet_footer(path, label, limits)
        check_parquet_file(pq.ParquetFile(path), label, limits)
    elif fmt == "npy":
        check_array_columns(npy_file_header(path, label, limits), label, limits)
    elif fmt == "npz":
        one_table_usable(_npz_tables(npz_members(path, label, limits), label, limits), label)
    elif fmt == "hdf5":
        from models.datasets.hdf5 import inspect_hdf5

        inspect_hdf5(path, label, limits)
    elif fmt == "root":
        from models.datasets.root import inspect_root

        inspect_root(path, label, limits)
    else:
        raise DataError(f"unsupported format {fmt!r} for {label}")
