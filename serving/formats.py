"""The formats of sampled rows: JSON, CSV, npy and Arrow IPC, chosen by `format` or Accept,
encoded whole or in pieces (a large answer is streamed). Torch-free."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator, Sequence

import numpy as np
import orjson

from serving.sampling import SamplingError

FORMATS: dict[str, str] = {
    "json": "application/json",
    "csv": "text/csv",
    "npy": "application/x-npy",
    "arrow": "application/vnd.apache.arrow.stream",
}
# Accept-header media types understood, to the format they select.
MEDIA_TYPES: dict[str, str] = {
    "application/json": "json",
    "text/csv": "csv",
    "application/x-npy": "npy",
    "application/npy": "npy",
    "application/octet-stream": "npy",
    "application/vnd.apache.arrow.stream": "arrow",
    "application/vnd.apache.arrow.file": "arrow",
}


class NotAcceptable(SamplingError):
    """No format the client accepts (its Accept header) can be produced: HTTP 406."""



def choose_format(fmt: str | None, accept: str | None) -> str:
    """The `format` query parameter wins; else the Accept header's most preferred media type
    that is understood (q=0 means "not this one"; `*/*` and `application/*` take json); no
    Accept header: json. NotAcceptable when the header names only types not produced here."""
    if fmt:
        fmt = fmt.lower()
        if fmt not in FORMATS:
            raise SamplingError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
        return fmt
    if not accept or not accept.strip():
        return "json"
    ranked = []
    for i, part in enumerate(accept.split(",")):
        media, *params = [p.strip() for p in part.split(";")]
        q = 1.0
        for param in params:
            if param.replace(" ", "").startswith("q="):
                try:
                    q = float(param.split("=", 1)[1])
                except ValueError:
                    q = 0.0
        if q > 0 and media:
            ranked.append((-q, i, media.lower()))
    for _, _, media in sorted(ranked):
        if media in MEDIA_TYPES:
            return MEDIA_TYPES[media]
        if media in ("*/*", "application/*"):
            return "json"
        if media == "text/*":
            return "csv"
    raise NotAcceptable(f"none of the accepted media types ({accept[:200]}) can be produced; "
                        f"samples come as {', '.join(sorted(set(FORMATS.values())))}")


# A spreadsheet reads a cell that starts with one of these as a formula (CSV injection).
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_safe(name: str) -> str:
    """A column name as a CSV cell that no spreadsheet runs: a leading formula character gets
    a single quote before it (OWASP's advice). The data cells are numbers, never text."""
    return "'" + name if name.startswith(_FORMULA_START) else name


# Rows encoded per piece of a streamed answer: small enough that one piece holds the GIL for
# a few milliseconds only (the API's event loop and health checks wait for it).
STREAM_ROWS = 8192


def json_numbers(values: np.ndarray) -> bytes:
    """A float array as a JSON array (nested as the array is), each float32 widened to the
    float64 that reads back exactly. orjson writes numpy arrays without a Python float per
    value: 12-20x faster than json.dumps(values.tolist()), the API's main cost under load
    (bench/load.py). It would write NaN as null: refused here instead."""
    wide = np.ascontiguousarray(values, dtype=np.float64)
    if not np.isfinite(wide).all():
        raise SamplingError("the generator produced non-finite values (NaN or infinity), "
                            "which JSON cannot carry")
    return orjson.dumps(wide, option=orjson.OPT_SERIALIZE_NUMPY)


def json_strings(values: Sequence[str]) -> bytes:
    return orjson.dumps(list(values))


def encode_chunks(samples: np.ndarray, columns: Sequence[str], fmt: str,
                  rows: int = STREAM_ROWS) -> Iterator[bytes]:
    """The bytes of `encode(samples, columns, fmt)`, in pieces of `rows` rows: a large answer
    is streamed without its whole text in memory."""
    if fmt == "json":
        yield b'{"columns":' + json_strings(columns) + b',"data":['
        for start in range(0, len(samples), rows):
            text = json_numbers(samples[start:start + rows])[1:-1]
            yield (b"," if start else b"") + text
        yield b"]}"
    elif fmt == "csv":
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerow([csv_safe(c) for c in columns])
        yield buf.getvalue().encode()
        for start in range(0, len(samples), rows):
            buf = io.StringIO()
            np.savetxt(buf, samples[start:start + rows], fmt="%.9g", delimiter=",")
            yield buf.getvalue().encode()
    else:
        yield encode(samples, columns, fmt)


def encode(samples: np.ndarray, columns: Sequence[str], fmt: str) -> bytes:
    if fmt == "json":
        return b'{"columns":' + json_strings(columns) + b',"data":' + json_numbers(samples) + b"}"
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow([csv_safe(c) for c in columns])
        # 9 significant digits read back to the same float32.
        np.savetxt(buf, samples, fmt="%.9g", delimiter=",")
        return buf.getvalue().encode()
    if fmt == "npy":
        raw = io.BytesIO()
        np.save(raw, np.ascontiguousarray(samples, dtype=np.float32), allow_pickle=False)
        return raw.getvalue()
    if fmt == "arrow":
        import pyarrow as pa

        table = pa.table({name: samples[:, i] for i, name in enumerate(columns)})
        sink = io.BytesIO()
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        return sink.getvalue()
    raise SamplingError(f"unknown format {fmt!r}")
