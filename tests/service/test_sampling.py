"""serving.sampling and gan_platform.settings: noise, formats, sessions, providers, configuration."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from gan_platform.settings import Settings
from serving import formats, sampling
from tests.conftest import make_linear_onnx


def test_chunked_noise_equals_one_draw(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = sampling.load_model(make_linear_onnx(tmp_path / "g.onnx", latent_dim=2))
    whole = sampling.sample(model, 1000, seed=5)
    monkeypatch.setattr(sampling, "CHUNK_ROWS", 7)
    chunked = sampling.sample(model, 1000, seed=5)
    assert np.array_equal(whole, chunked)
    monkeypatch.setattr(sampling, "CPU_RUN_ROWS", 3)  # calls smaller than the noise pieces
    assert np.array_equal(whole, sampling.sample(model, 1000, seed=5))
    assert np.array_equal(whole, sampling.draw_noise(5, 1000, 2))  # identity weights


@pytest.mark.parametrize(("n", "rows"), [(1, 4), (10, 10), (11, 10), (1000, 7), (64, 1)])
def test_noise_drawn_ahead_in_pieces_is_the_one_draw(n: int, rows: int) -> None:
    pieces = list(sampling.noise_chunks(3, n, 5, rows))
    assert [len(p) for p in pieces] == [min(rows, n - s) for s in range(0, n, rows)]
    assert np.array_equal(np.concatenate(pieces), sampling.draw_noise(3, n, 5))
    abandoned = sampling.noise_chunks(3, n, 5, rows)
    assert np.array_equal(next(abandoned), pieces[0])
    abandoned.close()  # a request stopped half-way: its draw ahead is dropped


def test_session_cache_is_lru(tmp_path: Path) -> None:
    cache = sampling.ModelCache(size=2)
    paths = [make_linear_onnx(tmp_path / f"g{i}.onnx") for i in range(3)]
    a = cache.get("a", paths[0])
    assert cache.get("a", lambda: 1 / 0) is a  # a hit never calls the factory
    cache.get("b", paths[1])
    cache.get("a", paths[0])
    cache.get("c", paths[2])
    assert "a" in cache and "c" in cache and "b" not in cache


def test_provider_is_cpu_without_cuda(tmp_path: Path) -> None:
    model = sampling.load_model(make_linear_onnx(tmp_path / "g.onnx"))
    if "CUDAExecutionProvider" in ort.get_available_providers():
        assert model.provider == "CUDAExecutionProvider"
    else:
        assert sampling.preferred_providers() == ["CPUExecutionProvider"]
        assert model.provider == "CPUExecutionProvider"


@pytest.mark.gpu
def test_cuda_provider_when_a_gpu_is_there(tmp_path: Path) -> None:
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("no CUDA: this onnxruntime build has no CUDAExecutionProvider "
                    "(install onnxruntime-gpu on a machine with an NVIDIA GPU)")
    model = sampling.load_model(make_linear_onnx(tmp_path / "g.onnx"))
    assert model.provider == "CUDAExecutionProvider"
    cpu = sampling.load_model(tmp_path / "g.onnx", ["CPUExecutionProvider"])
    assert np.allclose(sampling.sample(model, 100, 1), sampling.sample(cpu, 100, 1), atol=1e-5)


def test_conditions_checked(tmp_path: Path) -> None:
    model = sampling.load_model(make_linear_onnx(tmp_path / "g.onnx", conditions=("p",)))
    assert model.condition_names == ["p"]
    with pytest.raises(sampling.SamplingError):
        sampling.sample(model, 3, 0)
    with pytest.raises(sampling.SamplingError):
        sampling.sample(model, 3, 0, np.zeros((2, 1)))
    with pytest.raises(sampling.SamplingError):
        sampling.sample(model, 1, 0, np.array([[np.nan]]))
    assert sampling.sample(model, 3, 0, np.zeros((3, 1))).shape == (3, 2)


def test_category_values_to_codes() -> None:
    codes = sampling.encode_category("d", [-1, 3, 7], [3, 3.0, "3", " 7 ", "7.0", -1, "-1"])
    assert codes.dtype == np.float32 and codes.tolist() == [1, 1, 1, 2, 2, 0, 0]
    for bad in (3.5, "x", True, None, 4):
        with pytest.raises(sampling.UnknownCategory, match="known categories: -1, 3, 7") as e:
            sampling.encode_category("d", [-1, 3, 7], [3, bad])
        assert e.value.value == bad and e.value.known == [-1, 3, 7]
    assert sampling.encode_category("c", ["1", "a"], ["a", 1, 1.0, "1"]).tolist() == [1, 0, 0, 0]
    with pytest.raises(sampling.UnknownCategory, match="'A' for condition 'c'"):
        sampling.encode_category("c", ["1", "a"], ["A"])
    many = list(range(250))
    assert sampling.known_categories(many).endswith("99, ... (150 more)")


def test_categories_metadata_is_read_and_checked(tmp_path: Path) -> None:
    import onnx

    path = make_linear_onnx(tmp_path / "g.onnx", conditions=("p", "kind"))
    assert sampling.load_model(path).categories == {}
    model = onnx.load(str(path))
    entry = model.metadata_props.add()
    entry.key, entry.value = "categories", '{"kind": ["a", "b"]}'
    onnx.save(model, str(path))
    loaded = sampling.load_model(path)
    assert loaded.categories == {"kind": ["a", "b"]}
    assert sampling.sample(loaded, 2, 0, np.array([[1, 0], [1, 1]])).shape == (2, 2)
    with pytest.raises(sampling.SamplingError, match="'kind' is categorical.*0..1"):
        sampling.sample(loaded, 1, 0, np.array([[1, 2]]))
    entry.value = '{"other": ["a"]}'
    onnx.save(model, str(path))
    with pytest.raises(ValueError, match="'categories' must map condition names"):
        sampling.load_model(path)


def test_choose_format() -> None:
    assert formats.choose_format(None, None) == "json"
    assert formats.choose_format("NPY", "text/csv") == "npy"
    assert formats.choose_format(None, "text/html, text/csv;q=0.5, application/x-npy") == "npy"
    assert formats.choose_format(None, "text/csv;q=0.9, application/json;q=0.1") == "csv"
    assert formats.choose_format(None, "*/*") == "json"
    with pytest.raises(sampling.SamplingError):
        formats.choose_format("xml", None)


def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATA_ROOTS", "/a, /b")
    monkeypatch.setenv("ALLOWED_HOSTS", '["x.org", "y.org"]')
    monkeypatch.setenv("REDIS_URL", "redis://h:6379/2")
    monkeypatch.setenv("REDIS_KEY_PREFIX", "p:")
    monkeypatch.setenv("LEASE_SECONDS", "30")
    s = Settings()
    assert s.DATA_ROOTS == [Path("/a"), Path("/b")] and s.ALLOWED_HOSTS == ["x.org", "y.org"]
    assert s.reaper_interval == 10
    conf = s.celery_config()
    assert conf["broker_url"] == "redis://h:6379/2"
    assert conf["broker_transport_options"] == {"visibility_timeout": 7 * 24 * 3600,
                                                "global_keyprefix": "p:"}
    monkeypatch.delenv("REDIS_URL")
    defaults = Settings()
    assert defaults.DATABASE_URL == "sqlite:///var/gan.db" and defaults.broker_url is None
    assert defaults.MAX_SAMPLES_PER_REQUEST == 1_000_000 and defaults.TASK_QUEUE == "gpu"


def test_a_forked_child_draws_noise_ahead_too() -> None:
    """The noise threads do not survive a fork: a child (a worker's job process) must get a
    pool of its own instead of queueing draws that no thread runs."""
    import multiprocessing

    expected = sampling.draw_noise(4, 50, 3)
    assert np.array_equal(np.concatenate(list(sampling.noise_chunks(4, 50, 3, 7))), expected)
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(1) as pool:
        got = pool.apply_async(_drawn_ahead, (4, 50, 3, 7)).get(timeout=30)
    assert np.array_equal(got, expected)


def _drawn_ahead(seed: int, n: int, latent: int, rows: int) -> np.ndarray:
    return np.concatenate(list(sampling.noise_chunks(seed, n, latent, rows)))
