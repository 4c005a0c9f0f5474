"""models.preprocessing: fits, round trips, torch modules vs numpy, ONNX export, state."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from scipy import special

from models.preprocessing import (
    KINDS,
    U_CLIP,
    Transform,
    fit_transform,
    normal_lower_ppf,
    normal_tail,
)

N = 4000


@pytest.fixture(scope="module")
def data() -> np.ndarray:
    """Columns a physicist meets: a skewed energy far from 0, a zero-inflated count (atoms),
    a constant column (a digits corner pixel), a tiny-scale one and a plain normal one."""
    rng = np.random.default_rng(0)
    energy = 50.0 + 100.0 * rng.exponential(size=N)
    count = rng.poisson(1.5, size=N).astype(float)
    count[: N // 4] = 0.0
    constant = np.full(N, 3.0)
    tiny = 1e-3 * rng.standard_normal(N)
    normal = rng.standard_normal(N)
    return np.stack([energy, count, constant, tiny, normal], axis=1).astype(np.float32)


def test_unknown_kind_and_bad_input_are_value_errors(data: np.ndarray) -> None:
    with pytest.raises(ValueError, match="unknown preprocessing 'log'"):
        fit_transform("log", data)
    with pytest.raises(ValueError, match="2-D"):
        fit_transform("standard", data[:, 0])
    bad = data.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        fit_transform("quantile", bad)
    tf = fit_transform("standard", data)
    with pytest.raises(ValueError, match="expected 5 columns"):
        tf.forward(data[:, :2])


@pytest.mark.parametrize("kind", KINDS)
def test_round_trip(kind: str, data: np.ndarray) -> None:
    tf = fit_transform(kind, data)
    y = tf.forward(data)
    assert y.dtype == np.float32 and y.shape == data.shape and np.isfinite(y).all()
    scale = data.std(0) + 1e-12
    np.testing.assert_allclose((tf.inverse(y) - data) / scale, 0, atol=2e-4)


def test_standard_scales_each_column_and_spares_constant_ones(data: np.ndarray) -> None:
    tf = fit_transform("standard", data)
    y = tf.forward(data).astype(np.float64)
    varying = [0, 1, 3, 4]
    np.testing.assert_allclose(y[:, varying].mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(y[:, varying].std(0), 1, rtol=1e-4)
    np.testing.assert_array_equal(y[:, 2], 0)  # std guarded to 1: no division by zero
    assert tf.state()["scale"][2] == 1.0


def test_minmax_maps_each_column_to_minus_one_one(data: np.ndarray) -> None:
    tf = fit_transform("minmax", data)
    y = tf.forward(data)
    varying = [0, 1, 3, 4]
    np.testing.assert_allclose(y[:, varying].min(0), -1, atol=1e-6)
    np.testing.assert_allclose(y[:, varying].max(0), 1, atol=1e-6)
    np.testing.assert_array_equal(y[:, 2], 0)


def test_quantile_makes_continuous_columns_standard_normal(data: np.ndarray) -> None:
    tf = fit_transform("quantile", data)
    y = tf.forward(data).astype(np.float64)
    for c in (0, 3, 4):
        assert abs(y[:, c].mean()) < 0.02 and abs(y[:, c].std() - 1) < 0.05
        # Halfway through the data lies halfway through the normal.
        assert abs(np.median(y[:, c])) < 0.02
    bound = -special.ndtri(U_CLIP)
    assert np.abs(y).max() <= bound + 1e-5  # F clipped to [U_CLIP, 1 - U_CLIP]
    # Monotone: the order of the rows survives.
    order = np.argsort(data[:, 0], kind="stable")
    assert np.all(np.diff(y[order, 0]) >= 0)


def test_quantile_atoms_map_to_one_value_and_back(data: np.ndarray) -> None:
    tf = fit_transform("quantile", data)
    y = tf.forward(data)
    zeros = data[:, 1] == 0
    assert np.unique(y[zeros, 1]).size == 1  # the zero-inflated count's atom
    np.testing.assert_array_equal(tf.inverse(y)[:, 1], data[:, 1])
    np.testing.assert_array_equal(y[:, 2], 0)  # a constant column is one atom, at the median
    np.testing.assert_array_equal(tf.inverse(np.full((3, 5), 2.0, np.float32))[:, 2], 3.0)


def test_quantile_inverse_stays_in_the_fitted_range(data: np.ndarray) -> None:
    tf = fit_transform("quantile", data)
    far = np.array([[-40.0] * 5, [40.0] * 5], dtype=np.float32)
    out = tf.inverse(far)
    np.testing.assert_allclose(out[0], data.min(0), rtol=1e-6)
    np.testing.assert_allclose(out[1], data.max(0), rtol=1e-6)
    torch_out = tf.inverse_module()(torch.from_numpy(far)).numpy()
    np.testing.assert_allclose(torch_out, out, rtol=1e-6)


def test_normal_approximations_match_scipy() -> None:
    t = torch.tensor(np.logspace(-12, np.log10(0.5), 3000), dtype=torch.float64)
    expected = special.ndtri(t.numpy())
    np.testing.assert_allclose(normal_lower_ppf(t).numpy(), expected, rtol=2e-9)
    y = torch.linspace(-9.0, 9.0, 3001, dtype=torch.float64)
    # Relative accuracy far into the tail, where 1 + erf(y) would be all rounding.
    np.testing.assert_allclose(normal_tail(y).numpy(), special.ndtr(-np.abs(y.numpy())),
                               rtol=2e-7)


@pytest.mark.parametrize("kind", KINDS)
def test_torch_modules_equal_numpy(kind: str, data: np.ndarray) -> None:
    tf = fit_transform(kind, data)
    y = tf.forward(data)
    with torch.no_grad():
        y_torch = tf.forward_module()(torch.from_numpy(data)).numpy()
    assert y_torch.dtype == np.float32
    np.testing.assert_allclose(y_torch, y, atol=1e-5, rtol=0)
    z = np.random.default_rng(1).normal(scale=2.0, size=(N, data.shape[1])).astype(np.float32)
    x = tf.inverse(z)
    with torch.no_grad():
        x_torch = tf.inverse_module()(torch.from_numpy(z)).numpy()
    # Compared on the model's scale, where 1e-5 means the same for every column.
    np.testing.assert_allclose(tf.forward(x_torch), tf.forward(x), atol=1e-4, rtol=0)
    np.testing.assert_allclose(x_torch, x, rtol=2e-5, atol=1e-6 * data.std(0).max())


def export(module: torch.nn.Module, n_features: int, path: Path) -> ort.InferenceSession:
    example = torch.zeros(3, n_features)
    torch.onnx.export(
        module.eval(), (example,), str(path), dynamo=False, opset_version=17,
        input_names=["x"], output_names=["y"], dynamic_axes={"x": {0: "N"}, "y": {0: "N"}},
    )
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("kind", KINDS)
def test_modules_export_to_onnx_and_onnxruntime_agrees(kind: str, data: np.ndarray,
                                                       tmp_path: Path) -> None:
    tf = fit_transform(kind, data)
    n_features = data.shape[1]
    rows = data[:500]  # another batch size than at export: the batch axis is dynamic
    forward = export(tf.forward_module(), n_features, tmp_path / "forward.onnx")
    (y_onnx,) = forward.run(None, {"x": rows})
    np.testing.assert_allclose(y_onnx, tf.forward(rows), atol=1e-5, rtol=0)
    z = np.random.default_rng(2).normal(scale=2.0, size=(500, n_features)).astype(np.float32)
    inverse = export(tf.inverse_module(), n_features, tmp_path / "inverse.onnx")
    (x_onnx,) = inverse.run(None, {"x": z})
    with torch.no_grad():
        x_torch = tf.inverse_module()(torch.from_numpy(z)).numpy()
    np.testing.assert_allclose(x_onnx, x_torch, rtol=1e-6, atol=0)
    np.testing.assert_allclose(tf.forward(x_onnx), tf.forward(tf.inverse(z)), atol=1e-4, rtol=0)


@pytest.mark.parametrize("kind", KINDS)
def test_state_round_trips_through_json(kind: str, data: np.ndarray) -> None:
    tf = fit_transform(kind, data)
    state = json.loads(json.dumps(tf.state()))
    assert state["kind"] == kind
    again = Transform.from_state(state)
    np.testing.assert_array_equal(again.forward(data), tf.forward(data))
    z = np.random.default_rng(3).normal(size=(50, data.shape[1])).astype(np.float32)
    np.testing.assert_array_equal(again.inverse(z), tf.inverse(z))


def test_from_state_refuses_unknown_kinds() -> None:
    with pytest.raises(ValueError, match="unknown transform kind 'log'"):
        Transform.from_state({"kind": "log"})


@pytest.mark.parametrize("m", [0, 1, 2, 7, 8, 99])
def test_binary_lifting_search_equals_searchsorted(m: int) -> None:
    from models.preprocessing import _count_below

    rng = np.random.default_rng(m)
    rows = np.sort(rng.integers(0, 5, size=(m, 3)), axis=0).astype(np.float64)  # with ties
    x = rng.integers(-1, 6, size=(200, 3)) + rng.choice([0.0, 0.5], size=(200, 3))
    for strict, side in ((True, "left"), (False, "right")):
        got = _count_below(torch.from_numpy(rows), m, torch.from_numpy(x), strict).numpy()
        expected = np.stack([np.searchsorted(rows[:, c], x[:, c], side=side) for c in range(3)],
                            axis=1)
        np.testing.assert_array_equal(got, expected)
