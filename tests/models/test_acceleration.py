"""training.compile and training.precision: the fast paths train the same generator."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from models.acceleration import CompileFailed
from models.datasets import Dataset
from models.spec import JobSpec
from models.train import TrainedModel, sample_trained, train
from models.workdir import CHECKPOINT_NAME

OBJECTIVES = [{"name": "nsgan"}, {"name": "wgan-gp"}, {"name": "cramer", "feature_dim": 8}]


def ring(n: int = 512) -> Dataset:
    rng = np.random.default_rng(0)
    a = rng.uniform(0, 2 * math.pi, size=(n, 1)).astype(np.float32)
    x = np.concatenate([np.cos(a), np.sin(a)], axis=1) * 2 + 0.1 * rng.normal(size=(n, 2))
    return Dataset(features=x.astype(np.float32), conditions=a, weights=None,
                   feature_names=["x", "y"], condition_names=["angle"], image_shape=None,
                   modes=None, mode_std=None)


def spec(objective: dict, net: dict | None = None, **training) -> JobSpec:
    net = net or {"width": 16, "depth": 2}
    return JobSpec.model_validate({
        "objective": objective,
        "architecture": {"name": "mlp", "latent_dim": 4, "generator": net, "critic": net},
        "dataset": {"uri": "builtin://test"},
        "training": {"steps": 8, "batch_size": 64, "n_critic": 2, "log_every": 4,
                     "validate_every": 0, "device": "cpu", "seed": 5, **training},
    })


def rows(trained: TrainedModel) -> np.ndarray:
    data = ring()
    return sample_trained(trained, 200, data.conditions[:200], seed=2)


@pytest.mark.parametrize("objective", OBJECTIVES, ids=lambda o: o["name"])
def test_compiled_steps_train_the_generator_of_the_eager_steps(objective, tmp_path):
    eager = train(spec(objective), ring())
    compiled = train(spec(objective, compile=True), ring(), workdir=tmp_path)
    np.testing.assert_allclose(rows(compiled), rows(eager), atol=2e-5)
    assert compiled.history[-1].losses["critic"] == pytest.approx(
        eager.history[-1].losses["critic"], abs=1e-5)
    # What outlives the steps is the plain network: a checkpoint loads into an eager one.
    ckpt = torch.load(tmp_path / CHECKPOINT_NAME, weights_only=True)
    assert ckpt["generator"].keys() == eager.generator.state_dict().keys()
    assert not isinstance(compiled.generator, torch._dynamo.eval_frame.OptimizedModule)


@pytest.mark.parametrize("objective", OBJECTIVES[:2], ids=lambda o: o["name"])
def test_bfloat16_steps_train_close_to_but_not_as_float32(objective):
    full = rows(train(spec(objective), ring()))
    half = rows(train(spec(objective, precision="bfloat16"), ring()))
    gap = float(np.abs(half - full).max())
    # bfloat16 keeps 8 bits of mantissa: the matrix products differ in the third digit, and
    # eight steps at lr 1e-3 move the rows by a few thousandths of their unit scale.
    assert 0 < gap < 0.05, gap


def test_compiled_bfloat16_steps_train_the_generator_of_the_eager_bfloat16_steps():
    objective = {"name": "wgan-gp"}
    eager = rows(train(spec(objective, precision="bfloat16"), ring()))
    both = rows(train(spec(objective, precision="bfloat16", compile=True), ring()))
    np.testing.assert_allclose(both, eager, atol=1e-4)


def test_a_failed_compilation_names_training_compile(monkeypatch):
    import torch._inductor.config as inductor

    monkeypatch.setattr(inductor.cpp, "cxx", ("/nonexistent/c++",))
    monkeypatch.setattr(inductor, "fx_graph_cache", False)  # a cached graph needs no compiler
    torch._dynamo.reset()
    with pytest.raises(CompileFailed, match="training.compile.*C\\+\\+ compiler"):
        train(spec({"name": "nsgan"}, {"width": 12, "depth": 1}, compile=True), ring())
    torch._dynamo.reset()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
@pytest.mark.parametrize("objective", OBJECTIVES, ids=lambda o: o["name"])
def test_compiled_bfloat16_steps_train_on_cuda(objective):
    eager = train(spec(objective, device="cuda"), ring())
    fast = train(spec(objective, device="cuda", compile=True, precision="bfloat16"), ring())
    assert fast.device.startswith("cuda")
    gap = float(np.abs(rows(fast) - rows(eager)).max())
    assert gap < 0.05, gap
