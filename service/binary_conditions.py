"""Per-row conditions as a binary body of POST /v1/models/{id}/samples, chosen by
Content-Type: an `.npy` 2-D numeric array (columns in the model's condition order, a
categorical condition as its codes, as the graph takes them), an Arrow IPC stream or a
Parquet file (one column per condition, named as the model names them; a categorical
condition as its values, as in the JSON body).

Each is checked from its header or metadata before its data are read: the shape and dtype of
an npy file (no pickles), the row count and the absence of compression of every Arrow record
batch (an uncompressed batch is read in place, never more than the body), the rows, columns
and declared uncompressed bytes of a Parquet file. The body itself is bounded by
MAX_SAMPLING_BODY_BYTES (service.limits).
"""

from __future__ import annotations

import io
import struct
from collections.abc import Mapping
from typing import Any

import numpy as np

from service.problems import invalid
from service.samples import check_n, code_matrix, condition_matrix
from serving.sampling import LoadedModel

NPY, ARROW, PARQUET = "npy", "arrow", "parquet"
CONDITION_MEDIA_TYPES: Mapping[str, str] = {
    "application/x-npy": NPY,
    "application/npy": NPY,
    "application/octet-stream": NPY,
    "application/vnd.apache.arrow.stream": ARROW,
    "application/vnd.apache.parquet": PARQUET,
    "application/x-parquet": PARQUET,
}
MAX_PARQUET_FOOTER_BYTES = 1024**2
LOC: list[str | int] = ["body"]


def media_type(content_type: str | None) -> str:
    """`application/x-npy; charset=...` -> `application/x-npy`."""
    return (content_type or "").split(";", 1)[0].strip().lower()


def binary_conditions(model: LoadedModel, body: bytes, kind: str, max_rows: int) -> np.ndarray:
    """The [n, C] float32 conditions the graph takes, from a body of `kind`; 422 for
    anything else (a malformed file, the wrong columns, too many rows)."""
    if not model.condition_names:
        raise invalid("this model is unconditional: it takes no conditions; POST "
                      '{"n": ...} as JSON or GET ?n=...', LOC)
    if kind == NPY:
        return _npy(model, body, max_rows)
    if kind == ARROW:
        return _columns(model, _arrow_columns(body, max_rows))
    return _columns(model, _parquet_columns(model, body, max_rows))


# --- npy ----------------------------------------------------------------------------------------


def _npy(model: LoadedModel, body: bytes, max_rows: int) -> np.ndarray:
    fmt = np.lib.format
    stream = io.BytesIO(body)
    try:
        version = fmt.read_magic(stream)
        if version == (1, 0):
            shape, fortran, dtype = fmt.read_array_header_1_0(stream)
        elif version == (2, 0):
            shape, fortran, dtype = fmt.read_array_header_2_0(stream)
        else:
            raise ValueError(f"npy format version {version} is not read here (1.0 or 2.0)")
    except ValueError as exc:
        raise invalid(f"the body is not an npy array: {exc}"[:300], LOC) from None
    c = len(model.condition_names)
    if dtype.hasobject or dtype.kind not in "fiu" or dtype.fields is not None:
        raise invalid(f"the npy array holds {dtype}; conditions are numbers (float32 best)",
                      LOC)
    if len(shape) != 2 or shape[1] != c:
        raise invalid(f"the npy array has the shape {list(shape)}; this model takes [n, {c}] "
                      f"(columns {model.condition_names})", LOC)
    check_n(shape[0], max_rows, [*LOC, "rows"])
    start = stream.tell()
    expected = shape[0] * c * dtype.itemsize
    if len(body) - start != expected:
        raise invalid(f"the npy array's data are {len(body) - start} bytes; its header says "
                      f"{expected}", LOC)
    flat = np.frombuffer(body, dtype=dtype, count=shape[0] * c, offset=start)
    matrix = flat.reshape(shape[::-1]).T if fortran else flat.reshape(shape)
    return code_matrix(model, matrix, LOC)


# --- Arrow IPC ----------------------------------------------------------------------------------


def _field(buf: memoryview, table: int, index: int) -> int | None:
    """The position of field `index` of the flatbuffer table at `table`, None if absent."""
    vtable = table - struct.unpack_from("<i", buf, table)[0]
    size = struct.unpack_from("<H", buf, vtable)[0]
    if 4 + 2 * index >= size:
        return None
    offset = struct.unpack_from("<H", buf, vtable + 4 + 2 * index)[0]
    return table + offset if offset else None


def _child(buf: memoryview, table: int, index: int) -> int | None:
    pos = _field(buf, table, index)
    return None if pos is None else pos + struct.unpack_from("<I", buf, pos)[0]


def batch_header(metadata: bytes) -> tuple[int, bool] | None:
    """(rows, compressed) of an IPC record batch or dictionary batch message (its
    flatbuffer Message), None for another message (the schema)."""
    buf = memoryview(metadata)
    message = struct.unpack_from("<I", buf, 0)[0]
    kind_at = _field(buf, message, 1)
    kind = buf[kind_at] if kind_at is not None else 0
    header = _child(buf, message, 2)
    if header is None or kind not in (2, 3):  # 2: DictionaryBatch, 3: RecordBatch
        return None
    batch = _child(buf, header, 1) if kind == 2 else header
    if batch is None:
        return 0, False
    length_at = _field(buf, batch, 0)
    rows = struct.unpack_from("<q", buf, length_at)[0] if length_at is not None else 0
    return rows, _field(buf, batch, 3) is not None


def _arrow_columns(body: bytes, max_rows: int) -> Any:
    import pyarrow as pa

    rows = 0
    try:
        for message in pa.ipc.MessageReader.open_stream(pa.BufferReader(body)):
            header = batch_header(message.metadata.to_pybytes())
            if header is None:
                continue
            if header[1]:
                raise invalid("the Arrow stream is compressed; send it uncompressed (it is "
                              "read in place)", LOC)
            if message.type == "record batch":
                rows += header[0]
        check_n(rows, max_rows, [*LOC, "rows"])
        return pa.ipc.open_stream(pa.BufferReader(body)).read_all()
    except (pa.ArrowException, OSError, struct.error, IndexError, ValueError) as exc:
        raise invalid(f"the body is not an Arrow IPC stream: {exc}"[:300], LOC) from None


# --- Parquet ------------------------------------------------------------------------------------


def _parquet_columns(model: LoadedModel, body: bytes, max_rows: int) -> Any:
    import pyarrow as pa
    import pyarrow.parquet as pq

    if len(body) < 12 or body[-4:] != b"PAR1":
        raise invalid("the body is not a Parquet file (no footer)", LOC)
    footer = struct.unpack_from("<I", body, len(body) - 8)[0]
    if footer > min(len(body) - 12, MAX_PARQUET_FOOTER_BYTES):
        raise invalid(f"the Parquet footer is {footer} bytes; at most "
                      f"{MAX_PARQUET_FOOTER_BYTES} are read", LOC)
    try:
        pf = pq.ParquetFile(pa.BufferReader(body))
        meta = pf.metadata
        check_n(meta.num_rows, max_rows, [*LOC, "rows"])
        names = list(pf.schema_arrow.names)
        _check_names(model, names)
        index = {meta.schema.column(i).path: i for i in range(meta.num_columns)}
        declared = 0
        for g in range(meta.num_row_groups):
            group = meta.row_group(g)
            for i in range(group.num_columns):
                if group.column(i).file_path:
                    raise invalid("a Parquet column chunk is stored in another file", LOC)
            declared += sum(group.column(index[n]).total_uncompressed_size
                            for n in model.condition_names if n in index)
        allowed = meta.num_rows * len(model.condition_names) * 16 + 64 * 1024**2
        if declared > allowed:
            raise invalid(f"the conditions hold {declared} bytes uncompressed; at most "
                          f"{allowed} are read (16 bytes a cell + 64 MiB)", LOC)
        return pf.read(columns=list(model.condition_names))
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise invalid(f"the body is not a readable Parquet file: {exc}"[:300], LOC) from None


# --- named columns ------------------------------------------------------------------------------


def _check_names(model: LoadedModel, names: list[str]) -> None:
    """The columns must be the model's conditions (checked again by condition_matrix; here
    before any data are read)."""
    missing = [c for c in model.condition_names if c not in names]
    extra = [n for n in names if n not in model.condition_names]
    if missing or extra:
        raise invalid(f"the columns must be the model's conditions {model.condition_names}; "
                      f"missing: {missing or 'none'}, unknown: {extra or 'none'}"[:500], LOC)


def _columns(model: LoadedModel, table: Any) -> np.ndarray:
    import pyarrow as pa

    names = list(table.column_names)
    _check_names(model, names)
    if len(set(names)) != len(names):
        raise invalid(f"a column is given twice: {names}"[:300], LOC)
    columns: dict[str, Any] = {}
    for name in model.condition_names:
        data = table.column(name)
        kind = data.type
        if data.null_count:
            raise invalid(f"condition {name!r} has {data.null_count} missing values", LOC)
        if name in model.categories and (
                pa.types.is_integer(kind) or pa.types.is_string(kind)
                or pa.types.is_large_string(kind) or pa.types.is_dictionary(kind)):
            columns[name] = data.to_pylist()  # the values of a categorical condition
        elif pa.types.is_integer(kind) or pa.types.is_floating(kind):
            columns[name] = data.to_numpy()
        else:
            raise invalid(f"condition {name!r} is of Arrow type {kind}; conditions are "
                          "numbers (categorical ones: their values)", LOC)
    if not table.num_rows:
        raise invalid("the conditions have no rows", LOC)
    matrix = condition_matrix(model, columns, LOC)
    assert matrix is not None  # a conditional model
    return matrix
