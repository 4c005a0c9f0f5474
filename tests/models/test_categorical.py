"""Categorical conditions: the spec field, the loader's codes and categories, the one-hot
ConditionTransform (numpy, torch, ONNX), export parity, sampling by value, report bins."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pandas as pd
import pytest
import torch
from pydantic import ValidationError

from models.architectures import build_generator
from models.datasets import DataError, load_dataset
from models.datasets.base import MAX_CATEGORIES
from models.export import export_onnx
from models.preprocessing import ConditionTransform, Transform, fit_transform
from models.report import binned_metrics, build_report
from models.spec import ArchitectureSpec, DatasetSpec, JobSpec
from serving import sampling

N = 400
COLOURS = ["blue", "green", "red"]


def codes_and_energy(seed: int = 0) -> np.ndarray:
    """[N, 3]: a continuous energy, a code of 4 categories, a skewed continuous column."""
    rng = np.random.default_rng(seed)
    return np.stack([rng.normal(50, 10, N), rng.integers(0, 4, N), rng.exponential(3, N)],
                    axis=1).astype(np.float32)


# --- the transform --------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["standard", "quantile", "minmax", "none"])
def test_one_hot_forward_inverse_and_state(kind: str) -> None:
    x = codes_and_energy()
    tf = fit_transform(kind, x, categorical={1: 4})
    assert isinstance(tf, ConditionTransform)
    assert tf.n_features == 3 and tf.n_outputs == 2 + 4
    y = tf.forward(x)
    assert y.shape == (N, 6) and y.dtype == np.float32
    # continuous first (the kind's transform of columns 0 and 2), then the one-hot block
    cont = fit_transform(kind, x[:, [0, 2]])
    np.testing.assert_array_equal(y[:, :2], cont.forward(x[:, [0, 2]]))
    np.testing.assert_array_equal(y[:, 2:], np.eye(4, dtype=np.float32)[x[:, 1].astype(int)])
    back = tf.inverse(y)
    np.testing.assert_array_equal(back[:, 1], x[:, 1])  # codes come back exactly
    np.testing.assert_allclose(back[:, [0, 2]], x[:, [0, 2]], rtol=1e-5, atol=1e-3)
    again = Transform.from_state(json.loads(json.dumps(tf.state())))
    assert isinstance(again, ConditionTransform) and again.state() == tf.state()
    np.testing.assert_array_equal(again.forward(x), y)


def test_only_categorical_columns_and_bad_codes() -> None:
    x = np.array([[0, 2], [1, 0], [2, 1], [1, 1]], dtype=np.float32)
    tf = fit_transform("standard", x, categorical={0: 3, 1: 3})
    assert tf.n_outputs == 6 and isinstance(tf, ConditionTransform) and tf.continuous is None
    np.testing.assert_array_equal(tf.forward(x)[0], [1, 0, 0, 0, 0, 1])
    np.testing.assert_array_equal(tf.inverse(tf.forward(x)), x)
    with pytest.raises(ValueError, match="codes are the integers 0..2"):
        tf.forward(np.array([[3, 0]], dtype=np.float32))
    with pytest.raises(ValueError, match="codes are the integers"):
        tf.forward(np.array([[0.5, 0]], dtype=np.float32))
    with pytest.raises(ValueError, match="codes are the integers"):
        fit_transform("standard", np.array([[0.0], [7.0]]), categorical={0: 3})
    # no categorical columns: the plain transform, as before
    assert type(fit_transform("standard", x, categorical={})).__name__ == "StandardTransform"


def test_torch_modules_match_numpy_and_one_hot_is_exact() -> None:
    x = codes_and_energy(1)
    tf = fit_transform("quantile", x, categorical={1: 4})
    with torch.no_grad():
        y = tf.forward_module()(torch.from_numpy(x)).numpy()
        back = tf.inverse_module()(torch.from_numpy(tf.forward(x))).numpy()
    np.testing.assert_allclose(y, tf.forward(x), atol=1e-5)
    np.testing.assert_array_equal(y[:, 2:], tf.forward(x)[:, 2:])  # bit-exact 0/1
    np.testing.assert_allclose(back, tf.inverse(tf.forward(x)), atol=1e-4)
    # float noise on a code still selects it; a code out of range gives a row of zeros
    noisy = x[:4].copy()
    noisy[:, 1] = [0.0000001, 1.0000001, 2.9999998, 7.0]
    with torch.no_grad():
        hot = tf.forward_module()(torch.from_numpy(noisy)).numpy()[:, 2:]
    np.testing.assert_array_equal(hot, [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, 1], [0, 0, 0, 0]])


# --- the data set ---------------------------------------------------------------------------


@pytest.fixture
def table_csv(tmp_path: Path) -> Path:
    rng = np.random.default_rng(3)
    colour = rng.choice(COLOURS, N)
    frame = pd.DataFrame({
        "x": rng.normal(size=N) + (colour == "red") * 3.0,
        "y": rng.normal(size=N),
        "colour": colour,
        "charge": rng.choice([-1, 1], N),
        "p": rng.exponential(10, N),
    })
    path = tmp_path / "t.csv"
    frame.to_csv(path, index=False)
    return path


def load(path: Path, **spec: object):  # type: ignore[no-untyped-def]
    return load_dataset(DatasetSpec(uri=f"file://{path}", **spec),  # type: ignore[arg-type]
                        data_roots=[path.parent])


def test_string_condition_is_categorical_and_int_when_asked(table_csv: Path) -> None:
    d = load(table_csv, features=["x", "y"], conditions=["colour", "charge", "p"],
             categorical=["charge"])
    assert d.categories == {"colour": COLOURS, "charge": [-1, 1]}
    assert d.category_sizes == {0: 3, 1: 2}
    frame = pd.read_csv(table_csv)
    np.testing.assert_array_equal(d.conditions[:, 0], [COLOURS.index(c) for c in frame.colour])
    np.testing.assert_array_equal(d.conditions[:, 1], (frame.charge.to_numpy() + 1) / 2)
    np.testing.assert_allclose(d.conditions[:, 2], frame.p, rtol=1e-6)  # numeric: continuous
    plain = load(table_csv, features=["x", "y"], conditions=["charge"])
    assert plain.categories == {} and set(plain.conditions[:, 0]) == {-1.0, 1.0}
    json.dumps(d.categories)  # JSON-able: plain ints and strings


def test_categorical_errors(table_csv: Path, tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match=r"not the generated feature.*\['x'\]"):
        DatasetSpec(uri="builtin://digits", features=["x"], conditions=["c"], categorical=["x"])
    with pytest.raises(ValidationError, match=r"\['z'\] are not among the conditions"):
        DatasetSpec(uri="builtin://digits", conditions=["c"], categorical=["z"])
    with pytest.raises(DataError, match="'x' is a generated feature column"):
        load(table_csv, categorical=["x"])  # no conditions named: every column is a feature
    with pytest.raises(DataError, match="'p' of .* non-integer numbers"):
        load(table_csv, features=["x"], conditions=["p"], categorical=["p"])
    with pytest.raises(DataError, match="'colour' .* not numeric.*only condition columns"):
        load(table_csv, features=["x", "colour"])
    rng = np.random.default_rng(0)
    many = pd.DataFrame({"x": rng.normal(size=MAX_CATEGORIES + 5),
                         "id": np.arange(MAX_CATEGORIES + 5)})
    many.to_csv(tmp_path / "many.csv", index=False)
    with pytest.raises(DataError, match=f"1005 distinct values; at most {MAX_CATEGORIES}"):
        load(tmp_path / "many.csv", features=["x"], conditions=["id"], categorical=["id"])
    holes = pd.DataFrame({"x": rng.normal(size=40), "c": ["a", None] * 20})
    holes.to_csv(tmp_path / "holes.csv", index=False)
    with pytest.raises(DataError, match="'c' .* missing values in 20 of 40 rows"):
        load(tmp_path / "holes.csv", features=["x"], conditions=["c"])
    one = pd.DataFrame({"x": rng.normal(size=40), "c": ["a"] * 40})
    one.to_csv(tmp_path / "one.csv", index=False)
    with pytest.raises(DataError, match="'c' .* constant .*'a'"):
        load(tmp_path / "one.csv", features=["x"], conditions=["c"])


def test_digits_label_column_categorical_or_one_hot() -> None:
    spec = DatasetSpec(uri="builtin://digits", conditions=["digit"], categorical=["digit"])
    d = load_dataset(spec, data_roots=[])
    assert d.condition_names == ["digit"] and d.categories == {"digit": list(range(10))}
    assert d.conditions.shape == (1797, 1) and d.image_shape == (1, 8, 8)
    old = load_dataset(DatasetSpec(uri="builtin://digits", conditions=["digit"]), data_roots=[])
    assert old.condition_names == [f"digit_{k}" for k in range(10)] and old.categories == {}
    np.testing.assert_array_equal(old.conditions.argmax(1), d.conditions[:, 0])
    job = JobSpec.model_validate({"objective": "wgan-gp", "architecture": "dcgan",
                                  "dataset": spec.model_dump()})
    assert job.dataset.categorical == ["digit"]


# --- export and sampling by value -------------------------------------------------------------


@pytest.mark.parametrize("preprocessing", ["standard", "quantile"])
def test_export_parity_and_sampling_by_value(table_csv: Path, tmp_path: Path,
                                             preprocessing: str) -> None:
    """String and integer categories (and a continuous condition): the ONNX graph takes the
    codes, one-hot encodes them, and agrees with PyTorch; serving.sampling maps values."""
    d = load(table_csv, features=["x", "y"], conditions=["colour", "p", "charge"],
             categorical=["charge"])
    cond_tf = fit_transform(preprocessing, d.conditions, categorical=d.category_sizes)
    feat_tf = fit_transform(preprocessing, d.features)
    torch.manual_seed(0)
    arch = ArchitectureSpec(latent_dim=4, generator={"width": 16, "depth": 2})
    G = build_generator(arch, 2, cond_tf.n_outputs, None).eval()
    assert G.n_conditions == 1 + 3 + 2
    meta = {"feature_names": json.dumps(["x", "y"]), "latent_dim": "4",
            "condition_names": json.dumps(d.condition_names),
            "categories": json.dumps(d.categories)}
    path = tmp_path / "g.onnx"
    report = export_onnx(G, path, feature_transform=feat_tf, condition_transform=cond_tf,
                         metadata=meta)
    assert report.max_abs_error <= 1e-4
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[1].shape == ["N", 3]  # one column per condition

    model = sampling.load_model(path, ["CPUExecutionProvider"])
    assert model.categories == {"colour": COLOURS, "charge": [-1, 1]}
    colours = ["red", "blue", "green", "red", "blue", "red"]
    charges = [1, -1, "1", 1.0, "-1", 1]
    a = np.column_stack([sampling.encode_category("colour", COLOURS, colours),
                         np.linspace(0.5, 30, 6, dtype=np.float32),
                         sampling.encode_category("charge", [-1, 1], charges)])
    np.testing.assert_array_equal(a[:, 0], [2, 0, 1, 2, 0, 2])
    np.testing.assert_array_equal(a[:, 2], [1, 0, 1, 1, 0, 1])
    onnx_out = sampling.sample(model, 6, seed=11, conditions=a)
    z = torch.from_numpy(sampling.draw_noise(11, 6, 4))
    with torch.no_grad():
        raw = G(z, torch.from_numpy(cond_tf.forward(a))).numpy()
    assert np.abs(feat_tf.forward(onnx_out) - raw).max() <= 1e-4
    with pytest.raises(sampling.UnknownCategory, match=r"'purple' for condition 'colour'; "
                       r"known categories: 'blue', 'green', 'red'"):
        sampling.encode_category("colour", COLOURS, ["red", "purple"])
    with pytest.raises(sampling.SamplingError, match="'charge' is categorical"):
        sampling.sample(model, 1, 0, np.array([[0, 1.0, 5]], dtype=np.float32))


# --- the quality report ---------------------------------------------------------------------


def test_report_bins_by_category() -> None:
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 3, 600).astype(np.float32)
    cont = rng.uniform(0, 1, 600).astype(np.float32)
    cond = np.column_stack([codes, cont])
    real = (codes[:, None] * 2 + rng.normal(size=(600, 1))).astype(np.float32)
    gen = real + rng.normal(0, 0.1, real.shape).astype(np.float32)
    gen[codes == 2] += 5.0  # wrong only for the third category
    cats = {"colour": COLOURS}
    out = binned_metrics(real, gen, cond, cond, ["x"], ["colour", "u"], categories=cats)
    assert [b["category"] for b in out["colour"]] == COLOURS
    assert [b["centre"] for b in out["colour"]] == [0.0, 1.0, 2.0]
    assert sum(b["n_real"] for b in out["colour"]) == 600
    w1 = [b["features"][0]["w1"] for b in out["colour"]]
    assert w1[2] > 4 and max(w1[:2]) < 0.5
    assert len(out["u"]) == 5 and "category" not in out["u"][0]  # quantile bins, as before
    report = build_report(real, gen, feature_names=["x"], condition_names=["colour", "u"],
                          real_cond=cond, gen_cond=cond, categories=cats)
    assert [b["category"] for b in report["binned"]["colour"]] == COLOURS
    json.dumps(report)


def test_dcgan_on_digits_with_a_categorical_label_exports(tmp_path: Path) -> None:
    from models.train import train

    spec = JobSpec.model_validate({
        "objective": "wgan-gp",
        "architecture": {"name": "dcgan", "latent_dim": 8, "generator": {"channels": 4},
                         "critic": {"channels": 4, "norm": "layer"}},
        "dataset": {"uri": "builtin://digits", "conditions": ["digit"],
                    "categorical": ["digit"]},
        "training": {"steps": 2, "batch_size": 16, "n_critic": 1, "log_every": 1,
                     "device": "cpu"},
    })
    data = load_dataset(spec.dataset, data_roots=[])
    trained = train(spec, data)
    assert trained.generator.n_conditions == 10
    assert isinstance(trained.condition_transform, ConditionTransform)
    path = tmp_path / "g.onnx"
    meta = {"feature_names": json.dumps(trained.feature_names), "latent_dim": "8",
            "condition_names": json.dumps(["digit"]), "categories": json.dumps(data.categories)}
    report = export_onnx(trained.generator, path, feature_transform=trained.feature_transform,
                         condition_transform=trained.condition_transform, metadata=meta)
    assert report.max_abs_error <= 1e-4
    model = sampling.load_model(path, ["CPUExecutionProvider"])
    a = sampling.encode_category("digit", model.categories["digit"], [3, 7])[:, None]
    assert sampling.sample(model, 2, 0, a).shape == (2, 64)
