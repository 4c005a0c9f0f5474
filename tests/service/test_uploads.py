"""Uploads and data set URIs at the API (issue 10), in-process, on SQLite and PostgreSQL: an
upload is inspected before it is stored and stored under a neutral name; a URI is parsed by
the loader's own parser, so what the worker would refuse is a 422 at submit."""

from __future__ import annotations

import copy
import uuid
from collections.abc import Iterator
from pathlib import Path

import h5py
import pytest
from fastapi.testclient import TestClient

from gan_platform.artifacts import ArtifactStore
from gan_platform.records import Records
from gan_platform.settings import Settings
from models.datasets import DataError, load_dataset
from models.spec import DatasetSpec
from service.main import create_app
from tests.conftest import FAST_SPEC
from tests.models.test_upload_fuzz import SECRET, csv_polyglot

CSV = b"x,y\n" + b"".join(f"{i},{(i * 7) % 13}\n".encode() for i in range(100))


def make_settings(tmp_path: Path, db_url: str, **extra: object) -> Settings:
    (tmp_path / "data").mkdir(exist_ok=True)
    values: dict[str, object] = {
        "DATABASE_URL": db_url, "REDIS_URL": None, "ARTIFACT_ROOT": str(tmp_path / "artifacts"),
        "WORK_ROOT": tmp_path / "work", "DATA_ROOTS": [tmp_path / "data"],
        "ALLOWED_HOSTS": ["data.example.org"],
    }
    values.update(extra)
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture
def settings(tmp_path: Path, db_url: str) -> Settings:
    return make_settings(tmp_path, db_url)


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as c:
        yield c


def stored_path(settings: Settings, dataset_id: str) -> tuple[str, Path]:
    """(the artifact key, its local path) of an upload, as the worker resolves it."""
    records = Records(settings.DATABASE_URL)
    try:
        row = records.get_dataset(dataset_id)
    finally:
        records.dispose()
    assert row is not None
    store = ArtifactStore(settings.ARTIFACT_ROOT)
    key = store.key_of(row["artifact_uri"])
    return key, store.local_path(key)


def submit(client: TestClient, uri: str) -> dict:
    spec = copy.deepcopy(FAST_SPEC)
    spec["dataset"]["uri"] = uri
    r = client.post("/v1/jobs", json=spec)
    return {**r.json(), "http": r.status_code}


def test_an_upload_is_stored_under_a_neutral_name(client: TestClient, settings: Settings) -> None:
    r = client.post("/v1/datasets", files={"file": ("results.csv.gz", CSV, "text/csv")})
    assert r.status_code == 201, r.text
    up = r.json()
    assert up["filename"] == "results.csv.gz" and up["format"] == "csv"  # for display only
    key, path = stored_path(settings, up["id"])
    assert key.endswith(f"uploads/{up['id']}/data") and path.read_bytes() == CSV


def test_a_zip_named_csv_upload_is_never_unzipped(client: TestClient, settings: Settings,
                                                   tmp_path: Path) -> None:
    """CSV text, then a zip of a larger CSV, named x.zip: typed csv by its content, and read
    as the text it is (compression off), not as the zip pandas would see by its name."""
    content = csv_polyglot(tmp_path, inner_rows=50_000).read_bytes()
    r = client.post("/v1/datasets", files={"file": ("x.zip", content)})
    assert r.status_code == 201, r.text
    up = r.json()
    assert up["format"] == "csv"
    _, path = stored_path(settings, up["id"])
    with pytest.raises(DataError, match=r"could not read dataset://.* as csv: UnicodeDecodeError"):
        load_dataset(DatasetSpec(uri=up["uri"]), data_roots=[], upload_resolver=lambda _: path)


def test_a_hostile_upload_is_a_422_and_nothing_is_kept(client: TestClient, settings: Settings,
                                                       tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_bytes(SECRET)
    path = tmp_path / "steal.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("x", shape=(len(SECRET),), dtype="u1",
                         external=[(str(secret), 0, len(SECRET))])
    r = client.post("/v1/datasets", files={"file": ("steal.h5", path.read_bytes())})
    assert r.status_code == 422, r.text
    body = r.json()
    assert body["errors"][0]["loc"] == ["body", "file"]
    assert "dataset '/x' of steal.h5 keeps its data in external files" in body["detail"]
    assert SECRET.decode() not in r.text
    uploads = Path(settings.ARTIFACT_ROOT) / "uploads"
    assert not uploads.exists() or not any(uploads.iterdir())


def test_upload_limits_come_from_the_settings(tmp_path: Path, db_url: str) -> None:
    settings = make_settings(tmp_path, db_url, MAX_COLUMNS=3, MAX_COLUMN_NAME_LENGTH=5)
    with TestClient(create_app(settings)) as client:
        wide = client.post("/v1/datasets", files={"file": ("w.csv", b"a,b,c,d\n1,2,3,4\n")})
        assert wide.status_code == 422
        assert "has 4 columns; at most 3 are allowed (MAX_COLUMNS)" in wide.json()["detail"]
        long = client.post("/v1/datasets", files={"file": ("l.csv", b"abcdef,b\n1,2\n")})
        assert "'abcdef' of l.csv is 6 characters long; at most 5" in long.json()["detail"]
        assert client.post("/v1/datasets", files={"file": ("ok.csv", CSV)}).status_code == 201


@pytest.mark.parametrize(("uri", "words"), [
    ("dataset://ID/../x", "by its id alone"),
    ("dataset://ID/", None),  # a trailing slash is the same upload
    ("dataset://not-a-uuid", "no uploaded data set 'not-a-uuid': upload ids are UUIDs"),
    (f"dataset://{uuid.uuid4()}", "no uploaded data set"),
    ("https://user:pw@data.example.org/x.csv", "must not hold credentials"),
    ("https://data.example.org/x.csv#part", "take no fragment"),
    ("file://DATA/x.csv?v=2", "take no query"),
    ("builtin://8gaussians/more", "name one builtin set"),
])
def test_the_api_parses_uris_with_the_loaders_parser(client: TestClient, settings: Settings,
                                                     uri: str, words: str | None) -> None:
    up = client.post("/v1/datasets", files={"file": ("t.csv", CSV)}).json()
    (settings.DATA_ROOTS[0] / "x.csv").write_bytes(CSV)
    uri = uri.replace("ID", up["id"]).replace("DATA", str(settings.DATA_ROOTS[0]))
    answer = submit(client, uri)
    if words is None:
        assert answer["http"] == 202, answer
        return
    assert answer["http"] == 422, answer
    assert words in answer["detail"] and answer["errors"][0]["field"] == "dataset.uri"
    if "://ID" in uri or "no uploaded" in words:
        return
    # The worker would have refused it with the same words: one parser for both.
    with pytest.raises(DataError, match=words):
        load_dataset(DatasetSpec(uri=uri), data_roots=settings.DATA_ROOTS)


def test_an_upload_id_is_its_canonical_spelling(client: TestClient) -> None:
    """Ids are looked up as strings: another spelling of the UUID is refused at submit, as
    the worker would refuse it, rather than pass one check and fail another."""
    up = client.post("/v1/datasets", files={"file": ("t.csv", CSV)}).json()
    answer = submit(client, f"dataset://{up['id'].upper()}")
    assert answer["http"] == 422 and "upload ids are UUIDs in lowercase" in answer["detail"]


def test_condition_names_refused_are_the_sampling_routes_query_parameters() -> None:
    from models.datasets import RESERVED_CONDITION_NAMES
    from service.routers.models import RESERVED_QUERY

    assert frozenset(RESERVED_QUERY) == RESERVED_CONDITION_NAMES


def test_one_usable_table_is_enough_at_upload(client: TestClient, tmp_path: Path) -> None:
    """A job's dataset.table picks one table: an upload is refused only when none is usable
    (a link or external storage anywhere in the file refuses it whole)."""
    import numpy as np

    mixed = tmp_path / "mixed.h5"
    with h5py.File(mixed, "w") as f:
        f.create_dataset("wide", shape=(10, 5000), dtype="f4")
        f["good"] = np.zeros((100, 2))
    assert client.post("/v1/datasets", files={"file": ("m.h5", mixed.read_bytes())}
                       ).status_code == 201
    arrays = tmp_path / "arrays.npz"
    np.savez(arrays, cube=np.zeros((4, 4, 4)), table=np.zeros((100, 2)))
    assert client.post("/v1/datasets", files={"file": ("a.npz", arrays.read_bytes())}
                       ).status_code == 201
    empty = tmp_path / "empty.h5"
    h5py.File(empty, "w").close()
    r = client.post("/v1/datasets", files={"file": ("e.h5", empty.read_bytes())})
    assert r.status_code == 422 and "no 1-D datasets in group '/'" in r.json()["detail"]
