"""models.datasets: builtin sets, file formats, URIs and their security, validation."""

from __future__ import annotations

import functools
import http.server
import os
import re
import threading
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import uproot

from models.datasets import (
    BUILTINS,
    CONDITIONAL_RING_STD,
    MIN_ROWS,
    DataError,
    Dataset,
    conditional_ring_centre,
    load_dataset,
    sniff_format,
)
from models.datasets.builtin import (
    LAMARR_CONDITIONS,
    LAMARR_TARGETS,
    SPLOT_COLUMNS,
    SPLOT_SIGNAL_FRACTION,
    SPLOT_SIGNAL_X1_MEAN,
    SPLOT_SIGNAL_X2_MEAN,
    lamarr_toy_conditions,
    lamarr_toy_heavy_probability,
    lamarr_toy_sample,
    splot_toy_mass_pdfs,
    splot_toy_signal,
    two_gaussian_responsibilities,
    two_gaussian_weights,
)
from models.datasets.splot import splot, sweights
from models.metrics import mode_coverage
from models.spec import DatasetSpec

SHARED_DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
ZMUMU = SHARED_DATA / "Zmumu.root"
N = 200  # rows of the files the tests write


def load(uri: str, roots: list[Path] | None = None, **spec: object) -> Dataset:
    return load_dataset(DatasetSpec(uri=uri, **spec), data_roots=roots or [])


@pytest.fixture
def root_dir(tmp_path: Path) -> Path:
    d = tmp_path / "data"
    d.mkdir()
    return d


@pytest.fixture
def frame() -> pd.DataFrame:
    rng = np.random.default_rng(1)
    return pd.DataFrame({
        "a": rng.normal(size=N),
        "b": rng.normal(size=N) * 10,
        "cond": rng.uniform(size=N),
        "w": rng.normal(size=N) + 0.5,  # sWeight-like: some negative
    })


def file_uri(path: Path) -> str:
    return f"file://{path}"


# --- builtin sets -----------------------------------------------------------------------------


def nearest_mode(points: np.ndarray, modes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    dist = np.linalg.norm(points[:, None, :] - modes[None], axis=-1)
    return dist.argmin(1), dist.min(1)


def test_8gaussians_follows_the_wgan_gp_toy_code() -> None:
    d = load("builtin://8gaussians")
    assert d.features.shape == (100_000, 2) and d.features.dtype == np.float32
    assert d.feature_names == ["x", "y"] and d.conditions.shape == (100_000, 0)
    assert d.weights is None and d.image_shape is None
    # Centres 2 * unit vectors, then everything divided by 1.414.
    assert d.modes is not None and d.modes.shape == (8, 2)
    np.testing.assert_allclose(np.linalg.norm(d.modes, axis=1), 2 / 1.414)
    assert any(np.allclose(m, [2 / 1.414, 0]) for m in d.modes)
    assert any(np.allclose(m, [np.sqrt(2) / 1.414] * 2) for m in d.modes)
    assert d.mode_std == pytest.approx(0.02 / 1.414)
    which, dist = nearest_mode(d.features, d.modes)
    assert dist.max() < 6 * d.mode_std
    assert np.bincount(which, minlength=8).min() > 11_500  # random.choice: about 12 500 each
    residual = d.features - d.modes[which]
    np.testing.assert_allclose(residual.std(0), d.mode_std, rtol=0.02)


def test_25gaussians_is_the_papers_balanced_grid() -> None:
    d = load("builtin://25gaussians")
    assert d.modes is not None and d.modes.shape == (25, 2)
    grid = np.unique(np.round(d.modes[:, 0] * 2.828 / 2, 6))
    np.testing.assert_allclose(grid, [-2, -1, 0, 1, 2], atol=1e-9)  # 2 * {-2..2} / 2.828
    assert d.mode_std == pytest.approx(0.05 / 2.828)
    which, _ = nearest_mode(d.features, d.modes)
    assert np.all(np.bincount(which, minlength=25) == 4000)
    np.testing.assert_allclose((d.features - d.modes[which]).std(0), d.mode_std, rtol=0.02)
    # Shuffled, as in the paper: the first rows are not all from one centre.
    assert len(np.unique(which[:100])) > 10


def test_swissroll_is_columns_0_and_2_divided_by_7_5() -> None:
    d = load("builtin://swissroll")
    assert d.modes is None and d.mode_std is None
    # make_swiss_roll: (t cos t, height, t sin t) with t in [1.5 pi, 4.5 pi]; columns 0 and 2
    # lie on a spiral of radius t (the uniform height column would not).
    radius = np.linalg.norm(d.features.astype(np.float64) * 7.5, axis=1)
    assert radius.min() > 1.5 * np.pi - 1.5 and radius.max() < 4.5 * np.pi + 1.5


def test_builtin_sets_are_the_same_every_time_and_max_rows_keeps_the_first() -> None:
    full = load("builtin://8gaussians")
    again = load("builtin://8gaussians")
    np.testing.assert_array_equal(full.features, again.features)
    capped = load("builtin://8gaussians", max_rows=1000)
    np.testing.assert_array_equal(capped.features, full.features[:1000])
    capped.features[:] = 0  # the cached rows are not shared with a caller
    np.testing.assert_array_equal(load("builtin://8gaussians").features, full.features)


def test_conditional_ring_always_has_its_angle_condition() -> None:
    d = load("builtin://conditional-ring")
    assert d.condition_names == ["angle"] and d.conditions.shape == (100_000, 1)
    assert d.feature_names == ["x", "y"]
    angle = d.conditions[:, 0]
    assert angle.min() >= 0 and angle.max() <= 2 * np.pi
    residual = d.features - conditional_ring_centre(angle)
    np.testing.assert_allclose(residual.std(0), CONDITIONAL_RING_STD, rtol=0.02)
    np.testing.assert_allclose(residual.mean(0), 0, atol=3e-3)
    near = np.abs(angle - 1.0) < 0.02
    np.testing.assert_allclose(d.features[near].mean(0), conditional_ring_centre([1.0])[0],
                               atol=0.05)


def test_digits_unconditional_by_default_one_hot_when_asked() -> None:
    d = load("builtin://digits")
    assert d.features.shape == (1797, 64) and d.image_shape == (1, 8, 8)
    assert d.feature_names[0] == "pixel_0" and d.feature_names[-1] == "pixel_63"
    assert d.conditions.shape == (1797, 0)
    assert d.features.min() == 0 and d.features.max() == 16
    c = load("builtin://digits", conditions=["digit"])
    assert c.condition_names == [f"digit_{k}" for k in range(10)]
    np.testing.assert_array_equal(c.conditions.sum(1), 1)
    assert c.feature_names == d.feature_names and c.image_shape == (1, 8, 8)
    explicit = load("builtin://digits", conditions=[f"digit_{k}" for k in range(10)])
    np.testing.assert_array_equal(explicit.conditions, c.conditions)
    # A subset of the pixels is no longer an image.
    assert load("builtin://digits", features=["pixel_3", "pixel_4"]).image_shape is None


def test_unknown_builtin_lists_the_builtins() -> None:
    with pytest.raises(DataError, match="unknown builtin") as e:
        load("builtin://nope")
    assert all(name in str(e.value) for name in BUILTINS)


def test_a_column_in_two_roles_is_refused() -> None:
    with pytest.raises(DataError, match="more than one role.*angle"):
        load("builtin://conditional-ring", features=["x", "angle"])


def test_mode_information_only_describes_the_builtins_own_features() -> None:
    assert load("builtin://8gaussians", features=["y", "x"]).modes is None


# --- files: formats ---------------------------------------------------------------------------


def test_csv_roles_default_features_and_raw_weights(root_dir: Path, frame: pd.DataFrame) -> None:
    path = root_dir / "t.csv"
    frame.to_csv(path, index=False)
    d = load(file_uri(path), [root_dir], conditions=["cond"], weights="w")
    assert d.feature_names == ["a", "b"] and d.condition_names == ["cond"]
    np.testing.assert_allclose(d.features, frame[["a", "b"]].to_numpy(), rtol=1e-6)
    assert d.weights is not None and d.weights.dtype == np.float32
    np.testing.assert_allclose(d.weights, frame["w"], rtol=1e-6)  # negative ones untouched
    assert (d.weights < 0).any()
    picked = load(file_uri(path), [root_dir], features=["b"], max_rows=50)
    assert picked.features.shape == (50, 1)
    np.testing.assert_allclose(picked.features[:, 0], frame["b"][:50], rtol=1e-6)


def test_unknown_column_lists_the_available_columns(root_dir: Path, frame: pd.DataFrame) -> None:
    path = root_dir / "t.csv"
    frame.to_csv(path, index=False)
    with pytest.raises(DataError, match="'nope'") as e:
        load(file_uri(path), [root_dir], features=["a", "nope"])
    assert "available columns: 'a', 'b', 'cond', 'w'" in str(e.value)


def test_parquet_reads_the_requested_columns(root_dir: Path, frame: pd.DataFrame) -> None:
    path = root_dir / "t.parquet"
    frame.to_parquet(path)
    d = load(file_uri(path), [root_dir], features=["b", "a"], max_rows=70)
    np.testing.assert_allclose(d.features, frame[["b", "a"]].to_numpy()[:70], rtol=1e-6)


def test_parquet_missing_values_are_reported_as_nan(root_dir: Path, frame: pd.DataFrame) -> None:
    frame["n"] = pd.array([1] * (N - 2) + [None, None], dtype="Int64")
    path = root_dir / "t.pq"
    frame.to_parquet(path)
    with pytest.raises(DataError, match="'n': 2 of 200 rows"):
        load(file_uri(path), [root_dir])


def test_npy_columns_are_col0_col1(root_dir: Path) -> None:
    array = np.arange(3 * N, dtype=np.float64).reshape(N, 3)
    path = root_dir / "t.npy"
    np.save(path, array)
    d = load(file_uri(path), [root_dir], conditions=["col2"])
    assert d.feature_names == ["col0", "col1"] and d.condition_names == ["col2"]
    np.testing.assert_array_equal(d.conditions[:, 0], array[:, 2])


def test_npz_picks_the_table_or_the_only_array(root_dir: Path) -> None:
    rng = np.random.default_rng(0)
    single, multi = root_dir / "one.npz", root_dir / "two.npz"
    np.savez(single, data=rng.normal(size=(N, 2)))
    np.savez(multi, first=rng.normal(size=(N, 2)), second=rng.normal(size=(N, 4)))
    assert load(file_uri(single), [root_dir]).features.shape == (N, 2)
    assert load(file_uri(multi), [root_dir], table="second").features.shape == (N, 4)
    with pytest.raises(DataError, match="several arrays.*'first', 'second'"):
        load(file_uri(multi), [root_dir])
    with pytest.raises(DataError, match="no array 'third'"):
        load(file_uri(multi), [root_dir], table="third")


def test_npz_of_equal_length_vectors_is_a_table(root_dir: Path) -> None:
    path = root_dir / "cols.npz"
    np.savez(path, x=np.arange(N), y=np.arange(N) * 2.0)
    d = load(file_uri(path), [root_dir], conditions=["x"])
    assert d.feature_names == ["y"]
    np.testing.assert_array_equal(d.features[:, 0], np.arange(N) * 2.0)


def test_pickled_arrays_are_never_loaded(root_dir: Path) -> None:
    path = root_dir / "obj.npy"
    np.save(path, np.array([{"a": 1}] * N, dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match="holds Python objects .*never loaded"):
        load(file_uri(path), [root_dir])


def test_hdf5_2d_compound_and_group_layouts(root_dir: Path, frame: pd.DataFrame) -> None:
    path = root_dir / "t.h5"
    records = frame.to_records(index=False)
    with h5py.File(path, "w") as f:
        f["matrix"] = frame.to_numpy()
        f["records"] = records
        for name in frame.columns:
            f[f"events/{name}"] = frame[name].to_numpy()
    m = load(file_uri(path), [root_dir], table="matrix", features=["col1"])
    np.testing.assert_allclose(m.features[:, 0], frame["b"], rtol=1e-6)
    r = load(file_uri(path), [root_dir], table="records", conditions=["cond"], weights="w")
    assert r.feature_names == ["a", "b"]
    np.testing.assert_allclose(r.conditions[:, 0], frame["cond"], rtol=1e-6)
    g = load(file_uri(path), [root_dir], table="events", features=["a"], max_rows=40)
    np.testing.assert_allclose(g.features[:, 0], frame["a"][:40], rtol=1e-6)
    with pytest.raises(DataError, match="no dataset or group 'nope'.*matrix"):
        load(file_uri(path), [root_dir], table="nope")


def write_root(path: Path, frame: pd.DataFrame, *, jagged: bool = False,
               second_tree: bool = False, kind: str = "ttree") -> None:
    """kind "ttree" (mktree) or "rntuple" (what uproot writes for a plain assignment)."""
    import awkward as ak

    with uproot.recreate(path) as f:
        branches: dict[str, object] = {c: frame[c].to_numpy() for c in frame.columns}
        if jagged:
            branches["hits"] = ak.Array([[1.0] * (i % 3) for i in range(len(frame))])
        if kind == "ttree":
            types = {c: (np.float64 if c != "hits" else "var * float64") for c in branches}
            f.mktree("tree", types).extend(branches)
        else:
            f["tree"] = branches
        if second_tree:
            f.mktree("other", {"z": np.float64}).extend({"z": np.arange(len(frame), dtype="f8")})


@pytest.mark.parametrize("kind", ["ttree", "rntuple"])
def test_root_reads_the_named_branches(root_dir: Path, frame: pd.DataFrame, kind: str) -> None:
    path = root_dir / "t.root"
    write_root(path, frame, jagged=True, kind=kind)
    # The jagged branch is never read unless asked for.
    d = load(file_uri(path), [root_dir], features=["a", "b"], conditions=["cond"], weights="w",
             max_rows=150)
    np.testing.assert_allclose(d.features, frame[["a", "b"]].to_numpy()[:150], rtol=1e-6)
    assert d.weights is not None and d.weights.shape == (150,)
    with pytest.raises(DataError, match="branch 'hits'.*jagged"):
        load(file_uri(path), [root_dir], features=["a", "hits"])


def test_root_with_several_trees_needs_the_table(root_dir: Path, frame: pd.DataFrame) -> None:
    path = root_dir / "two.root"
    write_root(path, frame, second_tree=True)
    with pytest.raises(DataError, match="2 TTrees.*'other'.*dataset.table"):
        load(file_uri(path), [root_dir])
    assert load(file_uri(path), [root_dir], table="tree").feature_names == list(frame.columns)
    with pytest.raises(DataError, match="no TTree 'nope'"):
        load(file_uri(path), [root_dir], table="nope")


@pytest.mark.skipif(not ZMUMU.is_file(), reason=f"{SHARED_DATA} (Zmumu.root) is not present")
def test_zmumu_loads_the_requested_branches() -> None:
    roots = [SHARED_DATA]
    d = load(file_uri(ZMUMU.resolve()), roots, features=["px1", "py1", "pz1", "E1"],
             conditions=["M"])
    assert d.features.shape == (2304, 4) and d.conditions.shape == (2304, 1)
    expected = uproot.open(ZMUMU)["events"]["E1"].array(library="np")
    np.testing.assert_allclose(d.features[:, 3], expected, rtol=1e-6)
    with pytest.raises(DataError, match="'Type'.*not numeric"):
        load(file_uri(ZMUMU.resolve()), roots)  # every branch: Type holds strings


# --- files: where they may lie ----------------------------------------------------------------


def test_path_traversal_is_refused(tmp_path: Path, root_dir: Path, frame: pd.DataFrame) -> None:
    outside = tmp_path / "secret.csv"
    frame.to_csv(outside, index=False)
    with pytest.raises(DataError, match="outside the data roots") as e:
        load(f"file://{root_dir}/../secret.csv", [root_dir])
    assert str(root_dir) in str(e.value) and "secret.csv" in str(e.value)
    with pytest.raises(DataError, match="outside the data roots"):
        load("file:///root/../etc/passwd", [root_dir])


def test_a_symlink_out_of_the_root_is_refused(tmp_path: Path, root_dir: Path,
                                              frame: pd.DataFrame) -> None:
    outside = tmp_path / "secret.csv"
    frame.to_csv(outside, index=False)
    os.symlink(outside, root_dir / "link.csv")
    with pytest.raises(DataError, match="outside the data roots"):
        load(file_uri(root_dir / "link.csv"), [root_dir])
    # A sibling folder whose name merely starts with the root's is outside too.
    sibling = Path(f"{root_dir}-other")
    sibling.mkdir()
    frame.to_csv(sibling / "t.csv", index=False)
    with pytest.raises(DataError, match="outside the data roots"):
        load(file_uri(sibling / "t.csv"), [root_dir])
    inside = root_dir / "real.csv"
    frame.to_csv(inside, index=False)
    os.symlink(inside, root_dir / "inner-link.csv")
    assert load(file_uri(root_dir / "inner-link.csv"), [root_dir]).n_rows == N


def test_missing_file_and_malformed_file_uris(root_dir: Path) -> None:
    with pytest.raises(DataError, match="no such file"):
        load(file_uri(root_dir / "absent.csv"), [root_dir])
    with pytest.raises(DataError, match="not host 'example.com'"):
        load("file://example.com/data.csv", [root_dir])
    with pytest.raises(DataError, match=r"\(none configured\)"):
        load(file_uri(root_dir / "absent.csv"), [])


# --- validation -------------------------------------------------------------------------------


def test_string_column_is_named(root_dir: Path, frame: pd.DataFrame) -> None:
    frame["label"] = ["signal", "background"] * (N // 2)
    path = root_dir / "t.csv"
    frame.to_csv(path, index=False)
    with pytest.raises(DataError, match="column 'label' .* not numeric.*'signal'"):
        load(file_uri(path), [root_dir])
    assert load(file_uri(path), [root_dir], features=["a"]).features.shape == (N, 1)


def test_nan_and_inf_are_counted_per_column(root_dir: Path, frame: pd.DataFrame) -> None:
    frame.loc[[3, 7, 11], "b"] = np.nan
    frame.loc[5, "cond"] = np.inf
    path = root_dir / "t.csv"
    frame.to_csv(path, index=False)
    with pytest.raises(DataError, match="NaN or inf") as e:
        load(file_uri(path), [root_dir], conditions=["cond"])
    message = str(e.value)
    assert "'b': 3 of 200 rows" in message and "'cond': 1 of 200 rows" in message
    assert "'a'" not in message


def test_values_beyond_float32_count_as_inf(root_dir: Path, frame: pd.DataFrame) -> None:
    frame.loc[0, "a"] = 1e300
    path = root_dir / "t.csv"
    frame.to_csv(path, index=False)
    with pytest.raises(DataError, match="'a': 1 of 200 rows"):
        load(file_uri(path), [root_dir])


def test_empty_and_too_small_data(root_dir: Path, frame: pd.DataFrame) -> None:
    empty = root_dir / "empty.csv"
    frame.head(0).to_csv(empty, index=False)
    with pytest.raises(DataError, match="no rows"):
        load(file_uri(empty), [root_dir])
    small = root_dir / "small.csv"
    frame.head(MIN_ROWS - 1).to_csv(small, index=False)
    with pytest.raises(DataError, match=f"only {MIN_ROWS - 1} rows; at least {MIN_ROWS}"):
        load(file_uri(small), [root_dir])
    frame.head(MIN_ROWS).to_csv(small, index=False)
    assert load(file_uri(small), [root_dir]).n_rows == MIN_ROWS
    with pytest.raises(DataError, match="only 10 rows"):
        load("builtin://8gaussians", max_rows=10)


def test_constant_condition_and_non_positive_weights(root_dir: Path, frame: pd.DataFrame) -> None:
    frame["const"] = 4.0
    frame["neg"] = -1.0
    path = root_dir / "t.csv"
    frame.to_csv(path, index=False)
    with pytest.raises(DataError, match="condition column 'const' .* constant"):
        load(file_uri(path), [root_dir], features=["a"], conditions=["const"])
    with pytest.raises(DataError, match="weights column 'neg' .* sums to -200"):
        load(file_uri(path), [root_dir], features=["a"], weights="neg")


@pytest.mark.parametrize("fmt", ["parquet", "root", "hdf5", "npy"])
def test_truncated_files_are_wrapped(root_dir: Path, frame: pd.DataFrame, fmt: str) -> None:
    path = root_dir / f"t.{fmt if fmt != 'hdf5' else 'h5'}"
    if fmt == "parquet":
        frame.to_parquet(path)
    elif fmt == "root":
        write_root(path, frame)
    elif fmt == "hdf5":
        with h5py.File(path, "w") as f:
            f["m"] = frame.to_numpy()
    else:
        np.save(path, frame.to_numpy())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    # NPY: the header is read first, and says what is missing.
    words = f"{path} is truncated" if fmt == "npy" else f"could not read {path} as {fmt}"
    with pytest.raises(DataError, match=words):
        load(file_uri(path), [root_dir], features=["a"] if fmt in ("parquet", "root") else None)


# --- URIs: one parser for the API and the loader ---------------------------------------------

UPLOAD_ID = "0b1c2d3e-4f50-4a6b-8c7d-9e0f1a2b3c4d"


def test_the_parser_gives_each_scheme_its_parts() -> None:
    from models.datasets import parse_dataset_uri

    assert parse_dataset_uri("builtin://8gaussians").name == "8gaussians"
    upload = parse_dataset_uri(f"dataset://{UPLOAD_ID}/")
    assert (upload.scheme, upload.upload_id) == ("dataset", UPLOAD_ID)
    assert parse_dataset_uri("file:///data/my%20set.csv").path == "/data/my set.csv"
    remote = parse_dataset_uri("https://Data.Example.org:8443/x.csv?sig=1")
    assert (remote.host, remote.path) == ("data.example.org", "/x.csv")
    assert parse_dataset_uri("s3://bucket/key/x.parquet").host == "bucket"


@pytest.mark.parametrize(("uri", "words"), [
    (f"dataset://{UPLOAD_ID}/../x", "by its id alone"),
    (f"dataset://{UPLOAD_ID}?x=1", "take no query"),
    ("dataset://ds1", "upload ids are UUIDs"),
    ("dataset://" + UPLOAD_ID.replace("-", ""), "upload ids are UUIDs"),
    ("dataset://" + UPLOAD_ID.upper(), "upload ids are UUIDs in lowercase"),
    ("dataset://", "upload ids are UUIDs"),
    ("builtin://8gaussians/extra", "name one builtin set"),
    ("file://host/data/x.csv", "not host 'host'"),
    ("file:///data/x.csv#frag", "take no query"),
    ("file:///data/x%00.csv", "control characters"),
    ("https://user:secret@data.example.org/x.csv", "must not hold credentials"),
    ("https:///x.csv", "no host"),
    ("https://data.example.org:99999/x.csv", "malformed data set URI"),
    ("s3://bucket", "no object key"),
    ("ftp://example.org/x.csv", "unsupported URI scheme 'ftp'"),
    ("/data/x.csv", "is not a data set URI"),
    ("file:///data/x\n.csv", "control characters"),
    ("https://data.example.org/" + "a" * 5000, "at most 4096"),
])
def test_the_parser_refuses_what_no_worker_could_resolve(uri: str, words: str) -> None:
    from models.datasets import InvalidURI, parse_dataset_uri

    with pytest.raises(InvalidURI, match=re.escape(words)) as refused:
        parse_dataset_uri(uri)
    assert len(str(refused.value)) < 400  # a hostile URI is never echoed whole
    if uri.startswith(("dataset:", "file:", "builtin:", "https:", "s3:")):  # DatasetSpec's
        # The loader parses with the same function: the same refusal, before any lookup.
        with pytest.raises(DataError, match=re.escape(words)):
            load_dataset(DatasetSpec(uri=uri), data_roots=[], upload_resolver=lambda _: Path())


# --- uploads and sniffing ---------------------------------------------------------------------


def test_uploads_are_read_by_content(tmp_path: Path, frame: pd.DataFrame) -> None:
    store = tmp_path / "store"
    store.mkdir()
    frame.to_parquet(store / "blob")  # no extension: the content decides
    ds1, ds2 = str(uuid.uuid4()), str(uuid.uuid4())
    resolver = {ds1: store / "blob"}.__getitem__
    d = load_dataset(DatasetSpec(uri=f"dataset://{ds1}", features=["a"]), data_roots=[],
                     upload_resolver=resolver)
    np.testing.assert_allclose(d.features[:, 0], frame["a"], rtol=1e-6)
    with pytest.raises(DataError, match=f"no uploaded data set '{ds2}'"):
        load_dataset(DatasetSpec(uri=f"dataset://{ds2}"), data_roots=[], upload_resolver=resolver)
    with pytest.raises(DataError, match="cannot be resolved"):
        load_dataset(DatasetSpec(uri=f"dataset://{ds1}"), data_roots=[])


def test_sniff_format_by_magic_bytes(tmp_path: Path, frame: pd.DataFrame) -> None:
    writers = {
        "parquet": lambda p: frame.to_parquet(p),
        "npy": lambda p: np.save(p, frame.to_numpy()),
        "npz": lambda p: np.savez(p, m=frame.to_numpy()),
        "hdf5": lambda p: h5py.File(p, "w").close(),
        "root": lambda p: write_root(p, frame),
        "csv": lambda p: frame.to_csv(p, index=False),
    }
    for fmt, write in writers.items():
        path = tmp_path / f"{fmt}.bin"
        write(path)
        # np.save/savez add their suffix to a name without it
        path = path if path.exists() else next(tmp_path.glob(f"{fmt}.bin.*"))
        assert sniff_format(path) == fmt


def test_sniff_format_refuses_binary_and_foreign_zips(tmp_path: Path) -> None:
    binary = tmp_path / "blob"
    binary.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(DataError, match="not CSV, Parquet"):
        sniff_format(binary)
    archive = tmp_path / "doc.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("word/document.xml", "<xml/>")
    with pytest.raises(DataError, match="not an NPZ"):
        sniff_format(archive)
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    with pytest.raises(DataError, match="empty"):
        sniff_format(empty)


# --- remote -----------------------------------------------------------------------------------


class _Handler(http.server.SimpleHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - the http.server API
        if self.path.startswith("/redirect"):
            self.send_response(302)
            self.send_header("Location", "/t.csv")
            self.end_headers()
            return
        super().do_GET()

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - quiet tests
        pass


@pytest.fixture
def http_root(tmp_path: Path, frame: pd.DataFrame) -> Iterator[str]:
    served = tmp_path / "served"
    served.mkdir()
    frame.to_csv(served / "t.csv", index=False)
    handler = functools.partial(_Handler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_http_from_an_allowed_host(http_root: str, frame: pd.DataFrame) -> None:
    d = load_dataset(DatasetSpec(uri=f"{http_root}/t.csv", conditions=["cond"]),
                     data_roots=[], allowed_hosts=["127.0.0.1"])
    assert d.feature_names == ["a", "b", "w"]
    np.testing.assert_allclose(d.conditions[:, 0], frame["cond"], rtol=1e-6)


def test_http_hosts_must_be_allowed(http_root: str) -> None:
    for allowed in (None, [], ["example.org"]):
        with pytest.raises(DataError, match="host '127.0.0.1' is not allowed"):
            load_dataset(DatasetSpec(uri=f"{http_root}/t.csv"), data_roots=[],
                         allowed_hosts=allowed)
    with pytest.raises(DataError, match="bucket 'bucket' is not allowed"):
        load_dataset(DatasetSpec(uri="s3://bucket/key.csv"), data_roots=[])


def test_http_redirects_and_missing_files_fail(http_root: str) -> None:
    with pytest.raises(DataError, match="could not download .*redirects are refused"):
        load_dataset(DatasetSpec(uri=f"{http_root}/redirect"), data_roots=[],
                     allowed_hosts=["127.0.0.1"])
    with pytest.raises(DataError, match="could not download .*absent.csv: not found"):
        load_dataset(DatasetSpec(uri=f"{http_root}/absent.csv"), data_roots=[],
                     allowed_hosts=["127.0.0.1"])


# --- physics toys: two-gaussians, lamarr-toy, splot-toy (and the sPlot fit) -------------------


def test_two_gaussians_is_the_mode_collapse_example() -> None:
    d = load("builtin://two-gaussians")
    assert d.features.shape == (100_000, 1) and d.feature_names == ["x"]
    assert d.conditions.shape == (100_000, 0) and d.weights is None
    np.testing.assert_array_equal(d.modes, [[5.0], [-4.0]])
    np.testing.assert_array_equal(d.mode_std, [0.8, 1.0])
    x = d.features[:, 0].astype(np.float64)
    # The true shares 0.7 / 0.3 (binomial standard error 0.0015).
    np.testing.assert_array_equal(two_gaussian_weights(), [0.7, 0.3])
    np.testing.assert_allclose(two_gaussian_responsibilities(x).mean(0), [0.7, 0.3], atol=0.006)
    right, left = x[x > 0.5], x[x <= 0.5]  # 5.6 and 4.5 sigma from the two centres
    assert abs(right.mean() - 5) < 0.01 and abs(right.std() - 0.8) < 0.01
    assert abs(left.mean() + 4) < 0.02 and abs(left.std() - 1.0) < 0.015
    # The data themselves: both modes, P(|z| <= 3) = 0.9973 high-quality.
    cov = mode_coverage(d.features, d.modes, d.mode_std)
    assert (cov.modes_captured, cov.n_modes) == (2, 2)
    assert abs(cov.high_quality_fraction - 0.9973) < 0.001
    # A collapsed generator: every sample on the big mode; the shares show it.
    collapsed = 5 + 0.8 * np.random.default_rng(0).standard_normal((5000, 1))
    assert mode_coverage(collapsed, d.modes, d.mode_std).modes_captured == 1
    assert two_gaussian_responsibilities(collapsed)[:, 1].mean() < 1e-3


def test_mode_coverage_takes_one_std_per_mode() -> None:
    modes, stds = np.array([[5.0], [-4.0]]), np.array([0.8, 1.0])
    points = np.array([[7.3], [7.5], [-6.9], [-1.2]])  # 2.9, 3.1, 2.9, 2.8 of their sigma
    cov = mode_coverage(points, modes, stds)
    assert cov.high_quality_fraction == 0.75 and cov.modes_captured == 2
    # One float for every mode, as before: with 0.8, -6.9 and -1.2 lie 3.6 and 3.5 sigma out.
    assert mode_coverage(points, modes, 0.8).high_quality_fraction == 0.25
    with pytest.raises(ValueError, match="one value per mode"):
        mode_coverage(points, modes, np.array([0.8, 1.0, 1.0]))


def test_lamarr_toy_has_four_conditions_and_three_targets() -> None:
    d = load("builtin://lamarr-toy")
    assert d.condition_names == LAMARR_CONDITIONS == ["p", "eta", "nTracks", "charge"]
    assert d.feature_names == LAMARR_TARGETS == ["dll_k", "dll_p", "dll_mu"]
    assert d.features.shape == (50_000, 3) and d.conditions.shape == (50_000, 4)
    assert d.weights is None and d.modes is None
    p, eta, n_tracks, charge = d.conditions.astype(np.float64).T
    assert p.min() >= 2 and p.max() <= 500 and 15 < np.median(p) < 25
    assert eta.min() >= 1.8 and eta.max() <= 5.5
    assert np.all(n_tracks == np.round(n_tracks)) and n_tracks.min() >= 0
    assert 145 < n_tracks.mean() < 155 and n_tracks.var() > 10 * n_tracks.mean()  # overdispersed
    assert set(np.unique(charge)) == {-1.0, 1.0} and abs(charge.mean()) < 0.015
    # The targets alone, conditioned on a subset: both load.
    only = load("builtin://lamarr-toy", conditions=["p", "eta"], features=["dll_k"])
    assert only.conditions.shape == (50_000, 2) and only.feature_names == ["dll_k"]


def test_lamarr_toy_targets_depend_on_the_conditions_and_correlate() -> None:
    d = load("builtin://lamarr-toy")
    x = d.features.astype(np.float64)
    p, eta, n_tracks, charge = d.conditions.astype(np.float64).T
    low, high = x[p < 10], x[p > 50]
    se = np.sqrt(low.var(0) / len(low) + high.var(0) / len(high))
    assert np.all(np.abs(low.mean(0) - high.mean(0)) > 10 * se)  # every target moves with p
    # The spread grows with nTracks: in the table (mixed with everything else) and at fixed
    # p, eta, charge in the truth.
    assert np.all(x[n_tracks > 200].std(0) > 1.04 * x[n_tracks < 100].std(0))
    rng = np.random.default_rng(5)
    quiet, quiet_type = lamarr_toy_sample(np.tile([20.0, 3.65, 50.0, 1.0], (20_000, 1)), rng,
                                          return_heavy=True)
    busy, busy_type = lamarr_toy_sample(np.tile([20.0, 3.65, 400.0, 1.0], (20_000, 1)), rng,
                                        return_heavy=True)
    for kind in (0, 1):  # within one latent type: the noise alone, sqrt(1 + nTracks / 150)
        ratio = busy[busy_type == kind].std(0) / quiet[quiet_type == kind].std(0)
        np.testing.assert_allclose(ratio, np.sqrt((1 + 400 / 150) / (1 + 50 / 150)), rtol=0.05)
    # Charge shifts dll_p by +0.5 charge, and nothing else.
    shift = x[charge > 0].mean(0) - x[charge < 0].mean(0)
    assert abs(shift[1] - 1.0) < 0.15 and abs(shift[0]) < 0.15 and abs(shift[2]) < 0.05
    # The shared latent type correlates the targets.
    corr = np.corrcoef(x.T)
    assert corr[0, 1] > 0.6 and corr[0, 2] < -0.3 and corr[1, 2] < -0.3
    # Skewed tails: dll_mu's log-normal noise.
    z = (x[:, 2] - x[:, 2].mean()) / x[:, 2].std()
    assert (z**3).mean() > 0.3


def test_lamarr_toy_sample_is_the_law_of_the_table() -> None:
    from scipy.stats import ks_2samp

    d = load("builtin://lamarr-toy")
    fresh = lamarr_toy_sample(d.conditions, np.random.default_rng(7))
    assert fresh.shape == (50_000, 3)
    for j in range(3):
        assert ks_2samp(fresh[:, j], d.features[:, j]).pvalue > 1e-3
    # The same truth at fixed conditions: a low-p and a high-p point.
    rng = np.random.default_rng(8)
    at_low = lamarr_toy_sample(np.tile([5.0, 3.0, 150.0, 1.0], (20_000, 1)), rng)
    at_high = lamarr_toy_sample(np.tile([100.0, 3.0, 150.0, 1.0], (20_000, 1)), rng)
    assert at_low[:, 0].mean() < -3 and at_high[:, 0].mean() > 0.5
    # A mapping of the condition names works alike, and the latent type is available.
    cond = lamarr_toy_conditions(1000, np.random.default_rng(9))
    as_map = {n: cond[:, i] for i, n in enumerate(LAMARR_CONDITIONS)}
    np.testing.assert_array_equal(lamarr_toy_sample(cond, np.random.default_rng(1)),
                                  lamarr_toy_sample(as_map, np.random.default_rng(1)))
    big = lamarr_toy_conditions(50_000, np.random.default_rng(10))
    _, heavy = lamarr_toy_sample(big, np.random.default_rng(2), return_heavy=True)
    assert abs(heavy.mean() - lamarr_toy_heavy_probability(big[:, 0], big[:, 1]).mean()) < 0.01
    with pytest.raises(ValueError, match=r"\[N, 4\]"):
        lamarr_toy_sample(cond[:, :3], np.random.default_rng(1))


def _weighted_mean(x: np.ndarray, w: np.ndarray) -> tuple[float, float]:
    mean = float((w * x).sum() / w.sum())
    return mean, float(np.sqrt((w**2 * (x - mean) ** 2).sum()) / w.sum())


def _mass_sample(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mass, a signal-only variable y, is_signal) from splot-toy's mass shapes: y ~ N(2, 1)
    for signal, N(0, 1) for background, independent of the mass within each species."""
    rng = np.random.default_rng(seed)
    is_signal = rng.random(n) < 0.45
    mass = np.where(is_signal, rng.normal(5.28, 0.03, n),
                    5.1 - np.log1p(-rng.random(n) * (1 - np.exp(-0.8))) / 2.0)
    keep = (mass > 5.1) & (mass < 5.5)
    y = np.where(is_signal, 2.0, 0.0) + rng.standard_normal(n)
    return mass[keep], y[keep], is_signal[keep]


def test_sweights_sum_to_the_fitted_yield_and_unfold_the_signal() -> None:
    mass, y, is_signal = _mass_sample(20_000, 3)
    signal_pdf, background_pdf = splot_toy_mass_pdfs()
    w, yields = sweights(mass, signal_pdf, background_pdf)
    assert w.shape == mass.shape and yields.shape == (2,)
    assert w.sum() == pytest.approx(yields[0], rel=1e-8)
    assert yields.sum() == pytest.approx(len(mass), rel=1e-8)  # extended ML: total = N
    full = splot(mass, [signal_pdf, background_pdf])
    np.testing.assert_allclose(full.weights.sum(1), 1.0, atol=1e-8)  # species weights add to 1
    np.testing.assert_allclose(full.weights.sum(0), full.yields, rtol=1e-8)
    sigma_yield = np.sqrt(full.covariance[0, 0])
    assert abs(yields[0] - is_signal.sum()) < 3 * sigma_yield
    assert (w < 0).mean() > 0.3
    mean, se = _weighted_mean(y, w)
    assert abs(mean - 2.0) < 3 * se and se < 0.03
    assert abs(y.mean() - 2.0) > 0.5  # unweighted: the background pulls it down


def test_sweights_refuse_bad_densities() -> None:
    mass = np.linspace(5.1, 5.5, 100)
    signal_pdf, background_pdf = splot_toy_mass_pdfs()
    with pytest.raises(ValueError, match="non-negative"):
        sweights(mass, signal_pdf, lambda m: -np.ones_like(m))
    with pytest.raises(ValueError, match="zero density"):
        sweights(mass, lambda m: np.zeros_like(m), lambda m: np.zeros_like(m))


def test_splot_toy_defaults_and_its_sweights() -> None:
    d = load("builtin://splot-toy")
    assert d.feature_names == ["x1", "x2"] and d.condition_names == ["pt"]
    assert d.features.shape == (50_000, 2) and d.weights is None  # weights only when asked
    w = load("builtin://splot-toy", weights="sweight")
    assert w.feature_names == ["x1", "x2"] and w.condition_names == ["pt"]
    assert w.weights is not None and w.weights.shape == (50_000,)
    assert (w.weights < 0).mean() > 0.3
    # The truth label and the mass load only by name.
    truth = load("builtin://splot-toy", features=["x1", "x2", "mass", "is_signal"],
                 weights="sweight")
    mass, is_signal = truth.features[:, 2].astype(np.float64), truth.features[:, 3]
    assert set(np.unique(is_signal)) == {0.0, 1.0}
    assert abs(is_signal.mean() - SPLOT_SIGNAL_FRACTION) < 0.01
    assert mass.min() >= 5.1 and mass.max() <= 5.5
    assert set(SPLOT_COLUMNS) == {"pt", "x1", "x2", "mass", "sweight", "is_signal"}
    # The stored sWeights are the fit's: refitting the mass gives them back, summing to N_s.
    refit, yields = sweights(mass, *splot_toy_mass_pdfs())
    np.testing.assert_allclose(refit, w.weights, rtol=1e-4, atol=1e-5)
    assert w.weights.astype(np.float64).sum() == pytest.approx(yields[0], rel=1e-5)
    assert abs(yields[0] - is_signal.sum()) < 3 * np.sqrt(is_signal.sum())


def test_splot_toy_sweights_unfold_the_signal_law() -> None:
    d = load("builtin://splot-toy", weights="sweight")
    ww = d.weights.astype(np.float64)
    x1, x2 = d.features.astype(np.float64).T
    pt = d.conditions[:, 0].astype(np.float64)
    for values, truth in ((x1, SPLOT_SIGNAL_X1_MEAN), (x2, SPLOT_SIGNAL_X2_MEAN), (pt, 7.5)):
        mean, se = _weighted_mean(values, ww)
        assert abs(mean - truth) < 3 * se, (mean, truth, se)
        assert abs(values.mean() - truth) > 10 * se  # unweighted: clearly off
    # The truth sampler: pure signal rows (pt, x1, x2) with those means.
    signal = splot_toy_signal(200_000, np.random.default_rng(4))
    assert signal.shape == (200_000, 3)
    np.testing.assert_allclose(signal.mean(0), [7.5, SPLOT_SIGNAL_X1_MEAN, SPLOT_SIGNAL_X2_MEAN],
                               atol=0.02)
    # The weighted correlation of x1 and x2 is the signal's (0.6), not the mixture's.
    m1, m2 = _weighted_mean(x1, ww)[0], _weighted_mean(x2, ww)[0]
    cov = np.cov(np.stack([x1, x2]))
    wcov = (ww * (x1 - m1) * (x2 - m2)).sum() / ww.sum()
    wv1 = (ww * (x1 - m1) ** 2).sum() / ww.sum()
    wv2 = (ww * (x2 - m2) ** 2).sum() / ww.sum()
    s = signal[:, 1:]
    true_corr = np.corrcoef(s.T)[0, 1]
    assert abs(wcov / np.sqrt(wv1 * wv2) - true_corr) < 0.05
    assert abs(cov[0, 1] / np.sqrt(cov[0, 0] * cov[1, 1]) - true_corr) > 0.2
