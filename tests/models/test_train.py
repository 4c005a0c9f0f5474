"""The training loop: every objective x architecture x conditioning trains; seeding, resume,
cancellation, weights and clipping behave as promised."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from models.datasets import Dataset
from models.spec import JobSpec
from models.train import Cancelled, Progress, train

OBJECTIVES = [
    {"name": "minimax"},
    {"name": "nsgan"},
    {"name": "lsgan"},
    *({"name": "fgan", "divergence": d} for d in
      ("kl", "reverse_kl", "pearson", "neyman", "hellinger", "js", "gan")),
    {"name": "fgan", "divergence": "kl", "generator_loss": "saddle"},
    {"name": "wgan"},
    {"name": "wgan-gp"},
    {"name": "wgan-gp", "one_sided": True},
    {"name": "cramer", "feature_dim": 8},
    {"name": "hinge"},
]
SMALL_NET = {"width": 16, "depth": 2}


def toy_data(conditional: bool, n: int = 512, weights: bool | str = False, seed: int = 0) -> Dataset:
    """weights: True or "signed" (some negative, as sWeights), "positive"."""
    rng = np.random.default_rng(seed)
    a = rng.uniform(0, 2 * math.pi, size=(n, 1)).astype(np.float32)
    x = np.concatenate([np.cos(a), np.sin(a)], axis=1) * 2 + 0.1 * rng.normal(size=(n, 2))
    return Dataset(
        features=x.astype(np.float32),
        conditions=a if conditional else np.zeros((n, 0), np.float32),
        weights=rng.uniform(0.1 if weights == "positive" else -0.2, 1.5, size=n).astype(np.float32)
        if weights else None,
        feature_names=["x", "y"],
        condition_names=["angle"] if conditional else [],
        image_shape=None,
        modes=None,
        mode_std=None,
    )


def small_spec(objective: dict, arch: str = "mlp", steps: int = 3, **training) -> JobSpec:
    return JobSpec.model_validate({
        "objective": objective,
        "architecture": {"name": arch, "latent_dim": 4, "generator": SMALL_NET,
                         "critic": {**SMALL_NET, **training.pop("critic", {})}},
        "dataset": {"uri": "builtin://test"},
        "training": {"steps": steps, "batch_size": 32, "log_every": 1, "ema": 0.0,
                     "device": "cpu", **training},
    })


def assert_every_parameter_has_a_gradient(module: torch.nn.Module, name: str) -> None:
    for pname, p in module.named_parameters():
        assert p.grad is not None, f"{name}.{pname} got no gradient"
        assert torch.isfinite(p.grad).all(), f"{name}.{pname} has a non-finite gradient"
        assert p.grad.abs().sum() > 0, f"{name}.{pname} has an all-zero gradient"


@pytest.mark.parametrize("conditional", [False, True], ids=["uncond", "cond"])
@pytest.mark.parametrize("arch", ["mlp", "resmlp"])
@pytest.mark.parametrize("objective", OBJECTIVES, ids=lambda o: "-".join(map(str, o.values())))
def test_every_objective_trains_with_finite_losses_and_full_gradients(objective, arch, conditional):
    spec = small_spec(objective, arch, n_critic=1)
    seen: list[Progress] = []
    trained = train(spec, toy_data(conditional), on_progress=seen.append)
    assert [p.step for p in seen] == [1, 2, 3]
    assert all(math.isfinite(v) for p in seen for v in p.losses.values())
    # ema 0 (off): the returned generator is the one that was optimised, with its last gradients.
    assert_every_parameter_has_a_gradient(trained.generator, "generator")
    assert_every_parameter_has_a_gradient(trained.critic, "critic")


@pytest.mark.parametrize("objective", OBJECTIVES, ids=lambda o: "-".join(map(str, o.values())))
def test_spectral_norm_critic_trains_with_every_objective(objective):
    spec = small_spec(objective, critic={"spectral_norm": True}, n_critic=1)
    trained = train(spec, toy_data(conditional=True))
    assert any("parametrizations" in n for n, _ in trained.critic.named_parameters())
    assert_every_parameter_has_a_gradient(trained.critic, "critic")


def test_wgan_training_keeps_every_critic_weight_clipped():
    spec = small_spec({"name": "wgan", "clip": 0.02}, steps=4)
    trained = train(spec, toy_data(conditional=True))
    values = torch.cat([p.detach().flatten() for p in trained.critic.parameters()])
    assert values.abs().max().item() <= 0.02 + 1e-7


def test_same_spec_and_seed_give_the_same_generator_on_cpu():
    spec = small_spec({"name": "wgan-gp"}, steps=5, ema=0.9)
    a = train(spec, toy_data(False)).generator.state_dict()
    b = train(spec, toy_data(False)).generator.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    c = train(small_spec({"name": "wgan-gp"}, steps=5, ema=0.9, seed=1), toy_data(False))
    assert not all(torch.equal(a[k], c.generator.state_dict()[k]) for k in a)


class Crash(Exception):
    """Stands for a worker killed mid-training: nothing runs after it."""


@pytest.mark.parametrize("interruption", ["cancel", "crash"])
@pytest.mark.parametrize("objective", [{"name": "wgan-gp"}, {"name": "cramer", "feature_dim": 8},
                                       {"name": "nsgan"}])
def test_resume_from_checkpoint_equals_an_uninterrupted_run(tmp_path, objective, interruption):
    spec = small_spec(objective, steps=12, ema=0.9, checkpoint_every=5, validate_every=3,
                      critic={"spectral_norm": objective["name"] == "nsgan"})
    # Signed weights where the objective is sound with them (nsgan refuses them).
    data = toy_data(conditional=True, weights="positive" if objective["name"] == "nsgan" else True)
    val = toy_data(conditional=True, n=128, seed=5)
    straight = train(spec, data, validation=val, workdir=tmp_path / "straight")

    if interruption == "cancel":
        # Cancelled before step 9: the loop checkpoints the 8 steps done.
        seen: list[int] = []
        with pytest.raises(Cancelled):
            train(spec, data, validation=val, workdir=tmp_path / "resumed",
                  on_progress=lambda p: seen.append(p.step), should_stop=lambda: len(seen) >= 8)
        expected_start = 8
    else:
        # Killed after step 8: only the periodic checkpoint of step 5 survives.
        def crash_at_8(p: Progress) -> None:
            if p.step == 8:
                raise Crash

        with pytest.raises(Crash):
            train(spec, data, validation=val, workdir=tmp_path / "resumed", on_progress=crash_at_8)
        expected_start = 5
    resumed = train(spec, data, validation=val, workdir=tmp_path / "resumed")
    assert resumed.resumed_from == expected_start
    assert (resumed.best_step, resumed.best_score) == (straight.best_step, straight.best_score)
    for part in ("generator", "critic"):
        a, b = getattr(straight, part).state_dict(), getattr(resumed, part).state_dict()
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), f"{part}.{k} differs after resume"


def test_a_checkpoint_of_another_spec_is_not_resumed(tmp_path):
    train(small_spec({"name": "nsgan"}, steps=4, checkpoint_every=2), toy_data(False),
          workdir=tmp_path)
    other = train(small_spec({"name": "nsgan"}, steps=4, checkpoint_every=2, seed=9),
                  toy_data(False), workdir=tmp_path)
    assert other.resumed_from is None


def test_cancellation_stops_before_the_next_step():
    seen: list[Progress] = []
    with pytest.raises(Cancelled, match="step 2"):
        train(small_spec({"name": "nsgan"}, steps=50), toy_data(False), on_progress=seen.append,
              should_stop=lambda: len(seen) >= 2)
    assert [p.step for p in seen] == [1, 2]


# --- what the losses are given: the weighted law, each row with its own weight and condition --


def indexed_data(weights: np.ndarray) -> Dataset:
    """Feature 0 is the row's index (exact in float32), so that a batch names its rows."""
    n = len(weights)
    rng = np.random.default_rng(1)
    return Dataset(
        features=np.stack([np.arange(n), rng.normal(size=n)], 1).astype(np.float32),
        conditions=rng.uniform(0, 2 * math.pi, size=(n, 1)).astype(np.float32),
        weights=weights.astype(np.float32), feature_names=["i", "y"], condition_names=["angle"],
        image_shape=None, modes=None, mode_std=None,
    )


def loss_calls(monkeypatch: pytest.MonkeyPatch, spec: JobSpec, data: Dataset) -> list[dict]:
    """Trains `spec` (data in its own units: preprocessing "none") and returns, for every call
    of the objective's critic and generator losses, the rows of the real batch (by index), its
    conditions and the weights the loss was given."""
    import models.train as train_module

    calls: list[dict] = []
    make = train_module.get_objective

    def spying(params):  # type: ignore[no-untyped-def]
        objective = make(params)
        for part in ("critic_loss", "generator_loss"):
            loss = getattr(objective, part)

            def spy(critic, real, fakes, cond, w, loss=loss, part=part):  # type: ignore[no-untyped-def]
                calls.append({"part": part, "rows": real[:, 0].long().numpy().copy(),
                              "cond": cond[:, 0].numpy().copy(),
                              "w": None if w is None else w.numpy().copy()})
                return loss(critic, real, fakes, cond, w)

            setattr(objective, part, spy)
        return objective

    monkeypatch.setattr(train_module, "get_objective", spying)
    spec = spec.model_copy(deep=True)
    spec.dataset.preprocessing = "none"
    train(spec, data)
    assert {c["part"] for c in calls} == {"critic_loss", "generator_loss"}
    for c in calls:  # each row comes with its own condition
        np.testing.assert_array_equal(c["cond"], data.conditions[c["rows"], 0])
    return calls


def test_non_negative_weights_draw_rows_in_proportion_and_count_each_once(monkeypatch):
    # A quarter of the rows weigh 0, a quarter 1, half 3: drawn 0, 1/7 and 6/7 of the time.
    n = 512
    w = np.repeat([0.0, 1.0, 3.0, 3.0], n // 4)
    spec = small_spec({"name": "nsgan"}, steps=40, n_critic=1)
    calls = loss_calls(monkeypatch, spec, indexed_data(w))
    rows = np.concatenate([c["rows"] for c in calls])
    assert len(rows) >= 2500
    assert w[rows].min() > 0, "a row of weight 0 was drawn"
    share = float((w[rows] == 3.0).mean())
    assert share == pytest.approx(6 / 7, abs=0.03), share  # uniform rows: 1/2; w^2: 18/19
    # the draw is the weighting: the losses get no weights on top (that would count w twice)
    weighted = sum(c["w"] is not None for c in calls)
    assert weighted == 0, f"{weighted} of {len(calls)} loss calls got weights on top of the draw"


def test_signed_weights_go_to_both_losses_with_their_own_rows(monkeypatch):
    # Signed weights cannot be probabilities: rows are drawn uniformly and every loss gets each
    # row's weight, normalised to mean 1 (the same scale as no weights).
    n = 512
    w = np.tile([2.0, -0.5, 1.0, 0.5], n // 4)
    w[:64] = 4.0  # rows 0..63 weigh more: a weight that drew its rows would show
    spec = as_given(small_spec({"name": "wgan-gp"}, steps=40, n_critic=1))
    calls = loss_calls(monkeypatch, spec, indexed_data(w))
    normalised = (w / w.mean()).astype(np.float32)
    for c in calls:
        assert c["w"] is not None, c["part"]
        np.testing.assert_allclose(c["w"], normalised[c["rows"]], rtol=1e-6,
                                   err_msg=f"{c['part']}: not the weights of its rows")
    rows = np.concatenate([c["rows"] for c in calls])
    assert float((rows < 64).mean()) == pytest.approx(64 / n, abs=0.03)  # uniform rows


def test_dcgan_trains_on_digits_conditional_and_not():
    from models.datasets import load_dataset
    from models.spec import DatasetSpec

    for conditions in ([], ["digit"]):
        spec = JobSpec.model_validate({
            "objective": "wgan-gp",
            "architecture": {"name": "dcgan", "latent_dim": 8, "generator": {"channels": 8},
                             "critic": {"channels": 8, "norm": "layer"}},
            "dataset": {"uri": "builtin://digits", "conditions": conditions},
            "training": {"steps": 2, "batch_size": 16, "n_critic": 1, "ema": 0.0,
                         "log_every": 1, "device": "cpu"},
        })
        data = load_dataset(DatasetSpec.model_validate(spec.dataset.model_dump()), data_roots=[])
        trained = train(spec, data)
        assert trained.image_shape == (1, 8, 8)
        assert_every_parameter_has_a_gradient(trained.generator, "generator")
        assert_every_parameter_has_a_gradient(trained.critic, "critic")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_trains_on_cuda_when_asked():
    trained = train(small_spec({"name": "wgan-gp"}, device="cuda"), toy_data(True))
    assert trained.device.startswith("cuda")


def test_cuda_request_falls_back_to_cpu_without_a_gpu():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present: the fallback path is not taken")
    trained = train(small_spec({"name": "wgan-gp"}, device="cuda"), toy_data(True))
    assert trained.device == "cpu"


# --- model selection, early stopping, EMA batch norm, instance noise, signed weights ---------


def validation_scores(history: list[Progress]) -> dict[int, float]:
    return {p.step: p.metrics["validation_swd"] for p in history if "validation_swd" in p.metrics}


def test_the_exported_generator_is_the_best_validated_one():
    from models.selection import Validator

    spec = small_spec({"name": "wgan-gp"}, steps=30, validate_every=3, patience=0, ema=0.5,
                      lr_g=3e-3, lr_d=3e-3)
    data, val = toy_data(True), toy_data(True, n=256, seed=7)
    trained = train(spec, data, validation=val)
    scores = validation_scores(trained.history)
    assert sorted(scores) == list(range(3, 31, 3))
    best_step = min(scores, key=scores.get)
    assert trained.best_step == best_step and trained.best_score == scores[best_step]
    assert trained.last_step == 30
    # Rescoring the exported weights on the same validation rows gives the best score back.
    x = torch.as_tensor(trained.feature_transform.forward(val.features), dtype=torch.float32)
    a = torch.as_tensor(trained.condition_transform.forward(val.conditions), dtype=torch.float32)
    rescored = Validator(x, a, None, spec.architecture.latent_dim, spec.training.seed)
    assert rescored.score(trained.generator) == pytest.approx(trained.best_score, rel=1e-6)
    if best_step != 30:  # the last weights differ from the exported ones
        assert scores[30] > trained.best_score


def test_training_stops_after_patience_scores_without_improvement(tmp_path):
    spec = small_spec({"name": "nsgan"}, steps=400, validate_every=1, patience=2,
                      optimizer="sgd", lr_g=0.5, lr_d=0.5, lr_schedule="constant")
    data, val = toy_data(False), toy_data(False, n=128, seed=3)
    trained = train(spec, data, validation=val, workdir=tmp_path)
    scores = validation_scores(trained.history)
    assert trained.last_step < 400
    assert trained.history[-1].metrics.get("stopped_early") == 1.0
    last_two = [scores[trained.last_step - 1], scores[trained.last_step]]
    assert min(last_two) >= trained.best_score and trained.best_step <= trained.last_step - 2
    # A job resumed after it stopped early does not train on.
    again = train(spec, data, validation=val, workdir=tmp_path)
    assert again.resumed_from == trained.last_step and again.last_step == trained.last_step
    state, state2 = trained.generator.state_dict(), again.generator.state_dict()
    assert all(torch.equal(state[k], state2[k]) for k in state)


def test_ema_generator_has_batchnorm_statistics_of_its_own_weights():
    from models.selection import refresh_batchnorm

    spec = JobSpec.model_validate({
        "objective": "wgan-gp",
        "architecture": {"name": "mlp", "latent_dim": 4,
                         "generator": {"width": 16, "depth": 2, "norm": "batch"},
                         "critic": SMALL_NET},
        "dataset": {"uri": "builtin://test"},
        "training": {"steps": 40, "batch_size": 64, "ema": 0.95, "lr_g": 1e-2, "device": "cpu",
                     "validate_every": 0},
    })
    trained = train(spec, toy_data(False))
    bn = [m for m in trained.generator.modules() if isinstance(m, torch.nn.BatchNorm1d)]
    exported = [(m.running_mean.clone(), m.running_var.clone()) for m in bn]
    # Statistics recomputed from the exported (averaged) weights' own activations agree with
    # what it carries; the live generator's statistics (the old copy) would not.
    refresh_batchnorm(trained.generator, None, 0, 4, 512, seed=11, n_batches=32)
    for m, (mean, var) in zip(bn, exported, strict=True):
        np.testing.assert_allclose(m.running_mean, mean, atol=0.1 * float(var.sqrt().max()))
        np.testing.assert_allclose(m.running_var, var, rtol=0.15)


def test_instance_noise_is_annealed_to_zero_and_changes_training():
    spec = small_spec({"name": "nsgan"}, steps=10, instance_noise=0.5)
    noisy = train(spec, toy_data(False))
    sigmas = [p.metrics["instance_noise"] for p in noisy.history]
    assert sigmas[0] == pytest.approx(0.5) and sigmas[-1] == pytest.approx(0.05)
    assert all(a > b for a, b in zip(sigmas, sigmas[1:], strict=False))
    plain = train(small_spec({"name": "nsgan"}, steps=10), toy_data(False))
    a, b = noisy.generator.state_dict(), plain.generator.state_dict()
    assert not all(torch.equal(a[k], b[k]) for k in a)


def as_given(spec: JobSpec) -> JobSpec:
    """The spec with dataset.regress_weights off: training sees the signed weights."""
    spec = spec.model_copy(deep=True)
    spec.dataset.regress_weights = False
    return spec


@pytest.mark.parametrize("name", ["minimax", "nsgan", "lsgan", "fgan", "hinge"])
def test_classifier_losses_refuse_negative_weights(name):
    from models.datasets import DataError

    with pytest.raises(DataError) as err:
        train(as_given(small_spec({"name": name})), toy_data(True, weights="signed"))
    for sound in ("wgan", "wgan-gp", "cramer", "regress_weights"):
        assert sound in str(err.value)
    train(as_given(small_spec({"name": name})), toy_data(True, weights="positive"))
    # Regressed weights (the default for signed ones) are never negative: accepted.
    train(small_spec({"name": name}), toy_data(True, weights="signed"))


def test_signed_weights_are_regressed_by_default_and_kept_when_asked():
    from models.train import training_weights

    data, val = toy_data(True, n=2000, weights="signed"), toy_data(True, n=500, weights=True, seed=4)
    spec = small_spec({"name": "wgan-gp"})
    fitted, val_fitted = training_weights(spec, data, val)
    assert (fitted >= 0).all() and (val_fitted >= 0).all()
    assert not np.array_equal(fitted, data.weights)
    # The weights here are noise around their mean, whatever x and a: the regression finds it.
    assert abs(fitted.mean() - data.weights.mean()) < 0.05
    assert fitted.std() < 0.5 * data.weights.std()
    given, val_given = training_weights(as_given(spec), data, val)
    assert given is data.weights and val_given is val.weights
    positive = toy_data(True, weights="positive")
    assert training_weights(spec, positive, None)[0] is positive.weights  # no negative: as given


@pytest.mark.parametrize("name", ["wgan", "wgan-gp", "cramer"])
def test_ipm_losses_train_with_negative_weights(name):
    trained = train(as_given(small_spec({"name": name})), toy_data(True, weights="signed"))
    assert all(np.isfinite(v) for p in trained.history for v in p.losses.values())


@pytest.mark.parametrize("objective", [{"name": "nsgan"}, {"name": "wgan-gp"},
                                       {"name": "cramer", "feature_dim": 8}])
def test_no_host_copy_between_progress_reports(monkeypatch, objective):
    """A step copies nothing to the host (on a GPU each copy is a sync): the losses, the logs
    and the referee's loss stay tensors until a progress report reads them."""
    reads: list[str] = []
    torch_dir = str(Path(torch.__file__).parent)
    for name in ("item", "__float__", "tolist", "numpy", "__bool__"):
        original = getattr(torch.Tensor, name)

        def counted(self, *args, _original=original, **kwargs):  # type: ignore[no-untyped-def]
            caller = sys._getframe(1).f_code.co_filename
            # torch's own reads (Adam's step count, a CPU scalar on every device) are not ours
            if not caller.startswith(torch_dir):
                reads.append(f"{caller}:{sys._getframe(1).f_lineno}")
            return _original(self, *args, **kwargs)
        monkeypatch.setattr(torch.Tensor, name, counted)
    steps, log_every = 120, 60
    spec = small_spec(objective, steps=steps, log_every=log_every, referee_every=1000,
                      validate_every=0, n_critic=2, ema=0.9)
    reports: list[Progress] = []
    train(spec, toy_data(conditional=True), on_progress=reports.append)
    assert [p.step for p in reports] == [60, 120]
    per_report = 2 + 8  # the two losses and the loss logs; the referee's AUC at the end
    assert len(reads) < 2 * per_report + 10, reads  # setup reads a few; a step none
