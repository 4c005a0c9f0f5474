"""Hostile data files: truncated, bit-flipped, wrongly encoded, with huge headers, or carrying
a pickle. Every one must end in a DataError that names the file and says what is wrong (the
job's clear `failed` reason), never another exception, a hang, or code execution. And no
pickle is ever loaded anywhere in the code.

Each case is read twice: as file:// (format by extension) and as an upload, dataset://UUID
(format by content). The hostile structures (HDF5 external storage and links, zip bombs,
wide files) are in tests/models/test_upload_fuzz.py.
"""

from __future__ import annotations

import io
import pickle
import re
import struct
import time
import uuid
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import uproot

from models.datasets import DataError, load_dataset
from models.spec import DatasetSpec
from tests.conftest import ROOT

N = 300
EXTENSIONS = {"csv": "csv", "parquet": "parquet", "npy": "npy", "npz": "npz", "root": "root",
              "hdf5": "h5"}
# A file of another format given by content: what sniffing the upload says.
NOT_A_FORMAT = "not CSV, Parquet, NPY, NPZ, HDF5 or ROOT"
# What a damaged file of each format is refused with (by its reader, or by its header check).
DAMAGED = {
    "csv": r"has no header line|is empty|holds only \d+ rows|NaN or inf values",
    "parquet": r"could not read .* as parquet|is empty",
    "npy": r"has no valid \.npy header|is truncated: its header declares|is empty",
    "npz": r"could not read .* as npz|has no valid \.npy header|is empty",
    "root": r"could not read .* as root|is empty",
    "hdf5": r"could not read .* as hdf5|is empty",
}


class _Canary:
    """Unpickling this writes a file: proof that a pickle was loaded."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (Path.write_text, (Path(self.path), "pwned"))


def _valid_files(folder: Path) -> dict[str, bytes]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(N, 3)).astype(np.float32)
    df = pd.DataFrame(x, columns=["a", "b", "c"])
    out: dict[str, bytes] = {}
    out["csv"] = df.to_csv(index=False).encode()
    buf = io.BytesIO()
    df.to_parquet(buf)
    out["parquet"] = buf.getvalue()
    buf = io.BytesIO()
    np.save(buf, x)
    out["npy"] = buf.getvalue()
    buf = io.BytesIO()
    np.savez(buf, data=x)
    out["npz"] = buf.getvalue()
    path = folder / "valid.root"
    with uproot.recreate(path) as f:
        f.mktree("tree", {"a": np.float32, "b": np.float32, "c": np.float32}).extend(
            {"a": x[:, 0], "b": x[:, 1], "c": x[:, 2]})
    out["root"] = path.read_bytes()
    path = folder / "valid.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("table", data=x, chunks=(50, 3), compression="gzip")
    out["hdf5"] = path.read_bytes()
    return out


def _broken_variants(folder: Path) -> list[tuple[str, str, bytes, str]]:
    """(name, extension, content, the regex its DataError must match)."""
    cases: list[tuple[str, str, bytes, str]] = []
    for fmt, data in _valid_files(folder).items():
        ext = EXTENSIONS[fmt]
        for frac in (0.0, 0.05, 0.3, 0.5, 0.9, 0.99):
            cut = int(len(data) * frac)
            if (fmt == "csv" and frac > 0.3) or (fmt == "root" and frac > 0.9):
                continue  # a shorter valid CSV; a ROOT file whose rows are all still there
            cases.append((f"{fmt}-truncated-{frac}", ext, data[:cut], DAMAGED[fmt]))
        if fmt != "csv":
            flipped = bytearray(data)
            for pos in range(8, len(flipped), max(len(flipped) // 7, 1)):
                flipped[pos] ^= 0xFF
            cases.append((f"{fmt}-bitflips", ext, bytes(flipped), DAMAGED[fmt]))
            cases.append((f"{fmt}-garbage", ext, bytes(range(256)) * 40,
                          f"{DAMAGED[fmt]}|{NOT_A_FORMAT}"))
    csv_text = "a,b,c\n" + "".join(f"{i}.5,{i},é{i}\n" for i in range(N))
    cases += [
        ("csv-utf16", "csv", csv_text.encode("utf-16"),
         f"holds control characters|{NOT_A_FORMAT}"),
        ("csv-latin1-text", "csv", csv_text.encode("latin-1"),
         f"could not read .* as csv: UnicodeDecodeError|{NOT_A_FORMAT}"),
        ("csv-nul-bytes", "csv", b"a,b\x00,c\n" + b"\x00\x01\x02" * 500,
         "holds control characters|it holds NUL bytes"),
        ("csv-huge-header", "csv", b",".join(b"c%d" % i for i in range(20_000)) + b"\n1,2\n",
         r"has 20000 columns; at most 1000 are allowed \(MAX_COLUMNS\)"),
        ("csv-one-huge-line", "csv", b"a,b\n" + b"9" * 5_000_000 + b",1\n",
         r"column 'a' of .* is not numeric"),
        ("empty", "csv", b"", "has no header line|is empty"),
    ]
    # NPY: a header claiming an absurd length, an object (pickled) array, a huge shape
    cases.append(("npy-huge-header-len", "npy",
                  b"\x93NUMPY\x01\x00" + struct.pack("<H", 65535) + b"{" * 100,
                  r"has no valid \.npy header: EOF"))
    cases.append(("npy-v2-huge-header-len", "npy",
                  b"\x93NUMPY\x02\x00" + struct.pack("<I", 2**31 - 1) + b"{'descr'",
                  r"has no valid \.npy header"))
    header = "{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999, 3), }"
    header = header.ljust(118) + "\n"
    cases.append(("npy-huge-shape", "npy", b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header))
                  + header.encode() + b"\x00" * 64,
                  r"is truncated: its header declares shape \(99999999999, 3\)"))
    canary = folder / "CANARY"
    obj = np.array([_Canary(str(canary)), 1], dtype=object)
    buf = io.BytesIO()
    np.save(buf, obj, allow_pickle=True)
    pickled = "holds Python objects .* never loaded"
    cases.append(("npy-object-pickle", "npy", buf.getvalue(), pickled))
    cases.append(("pickle-named-npy", "npy", pickle.dumps(_Canary(str(canary))),
                  rf"has no valid \.npy header: the magic string|{NOT_A_FORMAT}"))
    buf = io.BytesIO()
    np.savez(buf, data=obj)
    cases.append(("npz-object-pickle", "npz", buf.getvalue(), pickled))
    return cases


@pytest.mark.timeout(240)
def test_every_broken_file_is_a_data_error(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    cases = _broken_variants(tmp_path)
    assert len(cases) > 50
    assert {name.split("-")[0] for name, *_ in cases} >= {"root", "hdf5"}
    uploads: dict[str, Path] = {}
    wrong: list[tuple[str, str]] = []
    slow: list[str] = []
    for name, ext, content, expected in cases:
        path = data / f"{name}.{ext}"
        path.write_bytes(content)
        upload_id = str(uuid.uuid4())
        uploads[upload_id] = path
        # By name (file://, the label is the path); by content (an upload, the label its URI).
        for uri, label in ((f"file://{path}", path.name), (f"dataset://{upload_id}",
                                                             f"dataset://{upload_id}")):
            t0 = time.monotonic()
            try:
                load_dataset(DatasetSpec(uri=uri), data_roots=[data],
                             upload_resolver=uploads.__getitem__)
                wrong.append((uri, f"{name} loaded"))
            except DataError as exc:
                message = str(exc)
                if not re.search(expected, message) or len(message) > 2000:
                    wrong.append((name, f"unexpected message {message[:300]!r}"))
                elif label not in message and name != "csv-one-huge-line":
                    wrong.append((name, f"the message does not name {label}: {message[:200]}"))
            except Exception as exc:  # noqa: BLE001 - the point of the test
                wrong.append((uri, f"{type(exc).__name__}: {str(exc)[:200]}"))
            if time.monotonic() - t0 > 20:
                slow.append(name)
    assert not wrong, wrong
    assert not slow, slow
    assert not (tmp_path / "CANARY").exists(), "a pickle was loaded"


def test_no_pickle_is_ever_loaded_in_the_code() -> None:
    """np.load only with allow_pickle=False, torch.load only with weights_only=True, and no
    pickle/joblib/dill loading at all, in the code that the service and the worker run."""
    offenders = []
    calls = 0
    for folder in ("models", "service", "worker", "cli"):
        for path in (ROOT / folder).rglob("*.py"):
            text = path.read_text()
            for call, needed in ((r"\b(np|numpy)\.load\(", "allow_pickle=False"),
                                 (r"\btorch\.load\(", "weights_only=True")):
                for m in re.finditer(call, text):
                    calls += 1
                    if needed not in _call_arguments(text, m.end() - 1):
                        offenders.append(f"{path}: {text[m.start(): m.start() + 80]}")
            for pat in (r"\bpickle\.loads?\(", r"\bjoblib\.load\(", r"\bdill\.loads?\(",
                        r"allow_pickle=True", r"weights_only=False", r"pd\.read_pickle\("):
                offenders += [f"{path}: {m.group(0)}" for m in re.finditer(pat, text)]
    assert calls >= 2  # the .npy and .npz readers at least: the check sees them
    assert not offenders, offenders


def _call_arguments(text: str, start: int) -> str:
    """The text between the parenthesis at `start` and its match."""
    depth = 0
    for end in range(start, len(text)):
        depth += {"(": 1, ")": -1}.get(text[end], 0)
        if depth == 0:
            return text[start + 1: end]
    return text[start + 1:]


def test_every_pandas_reader_has_compression_off() -> None:
    """pandas decompresses by the file's name (x.zip, x.gz) unless told not to: every reader
    call in the code passes compression=None, so nothing is read by its name."""
    offenders = []
    calls = 0
    for folder in ("models", "service", "worker", "cli"):
        for path in (ROOT / folder).rglob("*.py"):
            text = path.read_text()
            for m in re.finditer(r"\b(pd|pandas)\.read_(csv|table|json|fwf)\(", text):
                calls += 1
                if "compression=None" not in _call_arguments(text, m.end() - 1):
                    offenders.append(f"{path}: {text[m.start(): m.start() + 80]}")
    assert calls >= 3  # the CSV reader's three calls at least: the check sees them
    assert not offenders, offenders
