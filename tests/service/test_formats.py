"""serving.formats: the JSON encoder gives back every float32 exactly, whole or streamed, and
refuses what JSON cannot carry."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

from serving.formats import encode, encode_chunks, json_numbers
from serving.sampling import SamplingError

COLUMNS = ["px", "=cmd", "η"]


def awkward_floats() -> np.ndarray:
    rng = np.random.default_rng(7)
    values = rng.standard_normal((5000, 3)) * 10.0 ** rng.integers(-40, 38, (5000, 3))
    values[:4] = [[0.0, -0.0, 1e-45], [np.finfo(np.float32).max, -np.finfo(np.float32).tiny,
                  0.1], [1.0, 2.0, 3.0], [1e-5, 1e22, -7.25]]
    return values.astype(np.float32)


def test_json_gives_back_each_float32_widened_exactly() -> None:
    samples = awkward_floats()
    doc = json.loads(encode(samples, COLUMNS, "json"))
    assert doc["columns"] == COLUMNS
    back = np.array(doc["data"], dtype=np.float64)
    np.testing.assert_array_equal(back, samples.astype(np.float64))
    np.testing.assert_array_equal(back.astype(np.float32), samples)


def test_streamed_json_is_the_whole_json() -> None:
    samples = awkward_floats()
    whole = encode(samples, COLUMNS, "json")
    pieces = list(encode_chunks(samples, COLUMNS, "json", rows=1024))
    assert len(pieces) > 5
    assert json.loads(b"".join(pieces)) == json.loads(whole)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_json_refuses_non_finite_values(bad: float) -> None:
    samples = np.ones((3, 2), dtype=np.float32)
    samples[1, 1] = bad
    with pytest.raises(SamplingError, match="non-finite"):
        json_numbers(samples)
    with pytest.raises(SamplingError, match="non-finite"):
        encode(samples, ["a", "b"], "json")


def test_json_numbers_keeps_the_shape() -> None:
    assert json.loads(json_numbers(np.arange(6, dtype=np.float32).reshape(2, 3)[:, ::2])) == \
        [[0.0, 2.0], [3.0, 5.0]]
    assert json.loads(json_numbers(np.zeros((0, 3), dtype=np.float32))) == []


@pytest.mark.parametrize("n", [10, 20_000])  # answered whole, streamed
def test_a_generator_giving_nan_gets_a_422_naming_the_format_and_gives_its_rows_back(
        n: int) -> None:
    from service.problems import Problem
    from service.samples import samples_response
    from serving.sampling import LoadedModel

    model = LoadedModel(session=None, feature_names=["a", "b"], condition_names=[],  # type: ignore[arg-type]
                        latent_dim=2, provider="CPUExecutionProvider", input_names=["z"],
                        output_name="x")
    samples = np.ones((n, 2), dtype=np.float32)
    samples[-1, 0] = np.nan
    released = []
    with pytest.raises(Problem) as caught:
        samples_response(samples, model, "m", 0, "json", lambda: released.append(n))
    assert caught.value.status == 422 and "non-finite" in caught.value.detail
    assert caught.value.errors[0]["loc"] == ["query", "format"]
    assert released == [n]
    released.clear()
    r = samples_response(samples, model, "m", 0, "npy", lambda: released.append(n))
    assert np.isnan(np.load(io.BytesIO(r.body))[-1, 0])  # npy carries the NaN
    assert released == [n]
