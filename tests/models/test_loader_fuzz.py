"""Hostile data files: truncated, bit-flipped, wrongly encoded, with huge headers, or carrying
a pickle. Every one must end in a DataError (the job's clear `failed` reason), never another
exception, a hang, or code execution. And no pickle is ever loaded anywhere in the code."""

from __future__ import annotations

import io
import pickle
import re
import struct
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from models.datasets import DataError, load_dataset
from models.spec import DatasetSpec
from tests.conftest import ROOT

N = 300


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
    try:
        import uproot

        path = folder / "valid.root"
        with uproot.recreate(path) as f:
            f["tree"] = {"a": x[:, 0], "b": x[:, 1], "c": x[:, 2]}
        out["root"] = path.read_bytes()
    except Exception:  # uproot cannot write here: ROOT cases skipped
        pass
    return out


def _broken_variants(folder: Path) -> list[tuple[str, str, bytes]]:
    """(name, extension, content)."""
    cases: list[tuple[str, str, bytes]] = []
    for fmt, data in _valid_files(folder).items():
        ext = {"parquet": "parquet", "npy": "npy", "npz": "npz", "csv": "csv",
               "root": "root"}[fmt]
        for frac in (0.0, 0.05, 0.3, 0.5, 0.9, 0.99):
            cut = int(len(data) * frac)
            if (fmt == "csv" and frac > 0.3) or (fmt == "root" and frac > 0.9):
                continue  # a shorter valid CSV; a ROOT file whose rows are all still there
            cases.append((f"{fmt}-truncated-{frac}", ext, data[:cut]))
        if fmt != "csv":
            flipped = bytearray(data)
            for pos in range(8, len(flipped), max(len(flipped) // 7, 1)):
                flipped[pos] ^= 0xFF
            cases.append((f"{fmt}-bitflips", ext, bytes(flipped)))
            cases.append((f"{fmt}-garbage", ext, bytes(range(256)) * 40))
    csv_text = "a,b,c\n" + "".join(f"{i}.5,{i},é{i}\n" for i in range(N))
    cases += [
        ("csv-utf16", "csv", csv_text.encode("utf-16")),
        ("csv-latin1-text", "csv", csv_text.encode("latin-1")),
        ("csv-nul-bytes", "csv", b"a,b\x00,c\n" + b"\x00\x01\x02" * 500),
        ("csv-huge-header", "csv", b",".join(b"c%d" % i for i in range(20_000)) + b"\n1,2\n"),
        ("csv-one-huge-line", "csv", b"a,b\n" + b"9" * 5_000_000 + b",1\n"),
        ("empty", "csv", b""),
    ]
    # NPY: a header claiming an absurd length, an object (pickled) array, a huge shape
    cases.append(("npy-huge-header-len", "npy",
                  b"\x93NUMPY\x01\x00" + struct.pack("<H", 65535) + b"{" * 100))
    cases.append(("npy-v2-huge-header-len", "npy",
                  b"\x93NUMPY\x02\x00" + struct.pack("<I", 2**31 - 1) + b"{'descr'"))
    header = "{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999, 3), }"
    header = header.ljust(118) + "\n"
    cases.append(("npy-huge-shape", "npy", b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header))
                  + header.encode() + b"\x00" * 64))
    canary = folder / "CANARY"
    obj = np.array([_Canary(str(canary)), 1], dtype=object)
    buf = io.BytesIO()
    np.save(buf, obj, allow_pickle=True)
    cases.append(("npy-object-pickle", "npy", buf.getvalue()))
    cases.append(("pickle-named-npy", "npy", pickle.dumps(_Canary(str(canary)))))
    buf = io.BytesIO()
    np.savez(buf, data=obj)
    cases.append(("npz-object-pickle", "npz", buf.getvalue()))
    return cases


@pytest.mark.timeout(240)
def test_every_broken_file_is_a_data_error(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    cases = _broken_variants(tmp_path)
    assert len(cases) > 40
    uploads: dict[str, Path] = {}
    for name, ext, content in cases:
        path = data / f"{name}.{ext}"
        path.write_bytes(content)
        uploads[name] = path
    slow, wrong = [], []
    for name, ext, _ in cases:
        for uri in (f"file://{data}/{name}.{ext}", f"dataset://{name}"):  # by name; by content
            t0 = time.monotonic()
            try:
                load_dataset(DatasetSpec(uri=uri), data_roots=[data],
                             upload_resolver=lambda i: uploads[i])
                wrong.append((uri, "loaded"))
            except DataError as exc:
                if not str(exc) or len(str(exc)) > 20_000:
                    wrong.append((uri, f"unclear message {str(exc)[:100]!r}"))
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
    for folder in ("models", "service", "worker", "cli"):
        for path in (ROOT / folder).rglob("*.py"):
            text = path.read_text()
            for m in re.finditer(r"\b(np|numpy)\.load\((?P<args>[^)]*)\)", text):
                if "allow_pickle=False" not in m.group("args"):
                    offenders.append(f"{path}: {m.group(0)}")
            for m in re.finditer(r"\btorch\.load\((?P<args>[^)]*)\)", text):
                if "weights_only=True" not in m.group("args"):
                    offenders.append(f"{path}: {m.group(0)}")
            for pat in (r"\bpickle\.loads?\(", r"\bjoblib\.load\(", r"\bdill\.loads?\(",
                        r"allow_pickle=True", r"weights_only=False", r"pd\.read_pickle\("):
                offenders += [f"{path}: {m.group(0)}" for m in re.finditer(pat, text)]
    assert not offenders, offenders
