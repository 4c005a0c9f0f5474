"""POST /v1/models/{id}/samples with the conditions as a binary body (in-process, SQLite): an
npy array, an Arrow IPC stream or a Parquet file, chosen by Content-Type, give the rows of the
JSON body for the same seed; malformed, mis-shaped, compressed or oversized bodies get 422 or
413 before their data are read; the OpenAPI schema documents the content types."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient

from gan_platform.artifacts import ArtifactStore
from gan_platform.records import Records
from gan_platform.settings import Settings
from service.main import create_app
from tests.service.test_api import assert_problem, make_settings, register_model

NPY, ARROW, PARQUET = "application/x-npy", "application/vnd.apache.arrow.stream", \
    "application/vnd.apache.parquet"
COLOURS = ["blue", "green", "red"]


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path, f"sqlite:///{tmp_path / 'gan.db'}",
                         MAX_SAMPLES_PER_REQUEST=5000, MAX_BODY_BYTES=16384,
                         MAX_SAMPLING_BODY_BYTES=200_000)


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as c:
        yield c


def npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=True)
    return buf.getvalue()


def arrow(columns: dict[str, object], **options: object) -> bytes:
    table = pa.table(columns)
    sink = io.BytesIO()
    with pa.ipc.new_stream(sink, table.schema,
                           options=pa.ipc.IpcWriteOptions(**options)) as writer:  # type: ignore[arg-type]
        writer.write_table(table, max_chunksize=50)
    return sink.getvalue()


def parquet(columns: dict[str, object]) -> bytes:
    sink = io.BytesIO()
    pq.write_table(pa.table(columns), sink, row_group_size=60)
    return sink.getvalue()


def post(client: TestClient, model_id: str, body: bytes, media: str, **params: object):  # type: ignore[no-untyped-def]
    return client.post(f"/v1/models/{model_id}/samples", content=body,
                       headers={"content-type": media, "accept": "application/x-npy"},
                       params=params)


def rows(response) -> np.ndarray:  # type: ignore[no-untyped-def]
    assert response.status_code == 200, response.text
    return np.load(io.BytesIO(response.content))


def json_rows(client: TestClient, model_id: str, conditions: dict[str, list], seed: int
              ) -> np.ndarray:
    return rows(client.post(f"/v1/models/{model_id}/samples", json={
        "conditions": conditions, "seed": seed}, headers={"accept": "application/x-npy"}))


def test_npy_arrow_and_parquet_give_the_json_rows(client: TestClient, settings: Settings,
                                                  tmp_path: Path) -> None:
    model_id = register_model(settings, tmp_path, conditions=("p", "eta"))
    rng = np.random.default_rng(0)
    p, eta = rng.normal(size=(2, 130)).astype(np.float32)
    expected = json_rows(client, model_id, {"p": p.tolist(), "eta": eta.tolist()}, seed=11)
    assert expected.shape == (130, 2)
    matrix = np.column_stack([p, eta])
    got = post(client, model_id, npy(matrix), NPY, seed=11)
    assert got.headers["x-seed"] == "11" and got.headers["x-rows"] == "130"
    assert np.array_equal(rows(got), expected)
    # float64, Fortran order, octet-stream, media-type parameters: the same rows
    assert np.array_equal(rows(post(client, model_id, npy(np.asfortranarray(
        matrix.astype(np.float64))), "application/octet-stream", seed=11)), expected)
    assert np.array_equal(rows(post(client, model_id, npy(matrix), NPY + "; v=1", seed=11)),
                          expected)
    # Arrow (several batches) and Parquet (several row groups), columns in any order
    assert np.array_equal(rows(post(client, model_id, arrow({"eta": eta, "p": p}), ARROW,
                                    seed=11)), expected)
    for media in (PARQUET, "application/x-parquet"):
        assert np.array_equal(rows(post(client, model_id, parquet({"eta": eta, "p": p}), media,
                                        seed=11)), expected)
    # the answer's format still follows Accept / format
    as_json = client.post(f"/v1/models/{model_id}/samples", content=npy(matrix),
                          params={"seed": 11, "format": "json"},
                          headers={"content-type": NPY}).json()
    assert np.array_equal(np.array(as_json["data"], dtype=np.float32), expected)
    # no seed: a random one, said in X-Seed, reproduces the rows
    first = post(client, model_id, npy(matrix), NPY)
    again = post(client, model_id, npy(matrix), NPY, seed=int(first.headers["x-seed"]))
    assert np.array_equal(rows(first), rows(again))


def test_a_binary_body_may_be_larger_than_a_json_one(client: TestClient, settings: Settings,
                                                     tmp_path: Path) -> None:
    """MAX_BODY_BYTES (16 KiB here) still caps JSON; binary bodies have their own limit."""
    model_id = register_model(settings, tmp_path, conditions=("p", "eta"))
    matrix = np.ones((4000, 2), np.float32)  # 32 KB
    assert len(rows(post(client, model_id, npy(matrix), NPY, seed=1))) == 4000
    big_json = {"conditions": {"p": [1.0] * 3000, "eta": [1.0] * 3000}}
    assert_problem(client.post(f"/v1/models/{model_id}/samples", json=big_json), 413)
    # above MAX_SAMPLING_BODY_BYTES: 413, by Content-Length and by the bytes received
    huge = npy(np.ones((30_000, 2), np.float32))
    r = assert_problem(post(client, model_id, huge, NPY), 413)
    assert "MAX_SAMPLING_BODY_BYTES" in r["detail"]

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(huge), 50_000):
            yield huge[start:start + 50_000]

    r = client.post(f"/v1/models/{model_id}/samples", content=chunks(),
                    headers={"content-type": NPY})
    assert_problem(r, 413)


def test_malformed_bodies_get_422(client: TestClient, settings: Settings,
                                  tmp_path: Path) -> None:
    model_id = register_model(settings, tmp_path, conditions=("p", "eta"))
    good = np.ones((10, 2), np.float32)
    cases = {
        "not npy": (b"hello", NPY),
        "wrong columns": (npy(np.ones((10, 3), np.float32)), NPY),
        "1-D": (npy(np.ones(10, np.float32)), NPY),
        "no rows": (npy(np.ones((0, 2), np.float32)), NPY),
        "pickled objects": (npy(np.array([[object(), 1]], dtype=object)), NPY),
        "strings": (npy(np.array([["a", "b"]])), NPY),
        "truncated": (npy(good)[:-4], NPY),
        "trailing bytes": (npy(good) + b"xxxx", NPY),
        "non-finite": (npy(np.array([[1, np.nan]], np.float32)), NPY),
        "too many rows": (npy(np.ones((5001, 2), np.float32)), NPY),
        "arrow missing column": (arrow({"p": [1.0, 2.0]}), ARROW),
        "arrow extra column": (arrow({"p": [1.0], "eta": [1.0], "q": [1.0]}), ARROW),
        "arrow not numbers": (arrow({"p": ["a"], "eta": [1.0]}), ARROW),
        "arrow nulls": (arrow({"p": [1.0, None], "eta": [1.0, 2.0]}), ARROW),
        "arrow compressed": (arrow({"p": [1.0] * 10, "eta": [1.0] * 10},
                                   compression="zstd"), ARROW),
        "arrow garbage": (b"\xff\xff\xff\xff\x10\x00\x00\x00" + b"\x00" * 20, ARROW),
        "arrow too many rows": (arrow({"p": np.ones(5001), "eta": np.ones(5001)}), ARROW),
        "parquet garbage": (b"PAR1" + b"\x00" * 20 + b"PAR1", PARQUET),
        "parquet missing column": (parquet({"p": [1.0]}), PARQUET),
        "parquet too many rows": (parquet({"p": np.ones(5001), "eta": np.ones(5001)}),
                                  PARQUET),
    }
    for name, (body, media) in cases.items():
        r = post(client, model_id, body, media)
        problem = assert_problem(r, 422)
        assert problem["detail"], name
    detail = assert_problem(post(client, model_id, cases["arrow compressed"][0], ARROW),
                            422)["detail"]
    assert "compressed" in detail
    assert "eta" in assert_problem(post(client, model_id, *cases["non-finite"]), 422)["detail"]
    # an unconditional model takes no conditions
    free = register_model(settings, tmp_path)
    assert "unconditional" in assert_problem(post(client, free, npy(good), NPY), 422)["detail"]
    # the seed once: a JSON body's and the query's may not disagree
    r = client.post(f"/v1/models/{model_id}/samples", params={"seed": 2},
                    json={"conditions": {"p": [1.0], "eta": [1.0]}, "seed": 3})
    assert_problem(r, 422)


def with_categories(settings: Settings, model_id: str, categories: dict[str, list]) -> None:
    """Give a registered model's ONNX file the `categories` metadata of the exporter."""
    records = Records(settings.DATABASE_URL)
    row = records.get_model(model_id)
    records.dispose()
    assert row is not None
    store = ArtifactStore(settings.ARTIFACT_ROOT)
    path = store.local_path(store.key_of(row["onnx_uri"]))
    graph = onnx.load(str(path))
    entry = graph.metadata_props.add()
    entry.key, entry.value = "categories", json.dumps(categories)
    onnx.save(graph, str(path))


def test_categorical_conditions(client: TestClient, settings: Settings,
                                tmp_path: Path) -> None:
    """npy carries the codes (as the graph takes them); Arrow and Parquet the values, as JSON."""
    model_id = register_model(settings, tmp_path, conditions=("p", "colour"))
    with_categories(settings, model_id, {"colour": COLOURS})
    colours = ["red", "blue", "green", "red"]
    p = [0.5, 1.0, 1.5, 2.0]
    expected = json_rows(client, model_id, {"p": p, "colour": colours}, seed=5)
    codes = np.array([[v, COLOURS.index(c)] for v, c in zip(p, colours, strict=True)],
                     np.float32)
    assert np.array_equal(rows(post(client, model_id, npy(codes), NPY, seed=5)), expected)
    columns = {"p": pa.array(p, pa.float32()), "colour": colours}
    assert np.array_equal(rows(post(client, model_id, arrow(columns), ARROW, seed=5)), expected)
    dictionary = {"p": p, "colour": pa.array(colours).dictionary_encode()}
    assert np.array_equal(rows(post(client, model_id, arrow(dictionary), ARROW, seed=5)),
                          expected)
    assert np.array_equal(rows(post(client, model_id, parquet(columns), PARQUET, seed=5)),
                          expected)
    # a code that is no category, an unknown value: 422 naming the condition
    bad = codes.copy()
    bad[0, 1] = 3
    assert "colour" in assert_problem(post(client, model_id, npy(bad), NPY), 422)["detail"]
    unknown = arrow({"p": [1.0], "colour": ["purple"]})
    assert "purple" in assert_problem(post(client, model_id, unknown, ARROW), 422)["detail"]


def test_openapi_documents_the_binary_bodies(client: TestClient) -> None:
    op = create_app().openapi()["paths"]["/v1/models/{model_id}/samples"]["post"]
    content = op["requestBody"]["content"]
    assert content["application/json"]["schema"] == {"$ref": "#/components/schemas/SamplesRequest"}
    for media in (NPY, "application/octet-stream", ARROW, PARQUET, "application/x-parquet"):
        assert content[media]["schema"]["format"] == "binary", media
    assert "query:seed" in {f"{p['in']}:{p['name']}" for p in op["parameters"]}
