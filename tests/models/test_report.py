"""The quality report on distributions whose answer is known (no training), and the pipeline's
held-out split, report and referee on a short real training run."""

from __future__ import annotations

import json

import numpy as np
import pytest

from models.report import (
    build_report,
    classifier_auc,
    energy_distance,
    feature_metrics,
    frechet_distance,
    image_measures,
)

NAMES = ["a", "b", "c"]


def correlated(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3))
    x[:, 1] = 0.8 * x[:, 0] + 0.6 * x[:, 1]
    x[:, 2] = rng.exponential(size=n)
    return x.astype(np.float32)


def test_a_generator_that_is_the_data_distribution_is_indistinguishable():
    real, gen = correlated(6000, 1), correlated(6000, 2)
    rep = build_report(real, gen, feature_names=NAMES, seed=0)
    assert abs(rep["classifier_test"]["auc"] - 0.5) < 0.04
    for m in rep["per_feature"]:
        assert m["w1"] < 0.05
        assert m["ks"] < 0.04 and m["ks_pvalue"] > 0.001
        assert m["mean_real"] == pytest.approx(m["mean_generated"], abs=0.06)
    assert rep["correlation_difference"]["max_abs"] < 0.05
    assert abs(rep["energy_distance"]["value"]) < 0.01
    json.dumps(rep, allow_nan=False)  # JSON-safe


def test_a_generator_shifted_by_a_known_offset_is_caught_and_measured():
    real = correlated(6000, 1)
    offset = np.array([0.5, 0.0, -1.0], dtype=np.float32)
    gen = correlated(6000, 2) + offset
    rep = build_report(real, gen, feature_names=NAMES, seed=0)
    assert rep["classifier_test"]["auc"] > 0.8
    w1 = [m["w1"] for m in rep["per_feature"]]
    assert w1[0] == pytest.approx(0.5, abs=0.05)
    assert w1[1] < 0.05
    assert w1[2] == pytest.approx(1.0, abs=0.05)
    gen_means = [m["mean_generated"] - m["mean_real"] for m in rep["per_feature"]]
    assert gen_means == pytest.approx(offset.tolist(), abs=0.06)
    assert rep["energy_distance"]["value"] > 0.1
    assert rep["summary"]["w1_max"] == pytest.approx(1.0, abs=0.05)


def test_w1_of_a_shift_equals_the_shift_and_scale_shows_in_the_stds():
    rng = np.random.default_rng(0)
    r = rng.normal(size=(20000, 1))
    g = rng.normal(size=(20000, 1)) * 2.0
    (m,) = feature_metrics(r, r + 0.3, ["x"])
    assert m["w1"] == pytest.approx(0.3, abs=1e-6)  # the same rows shifted: exactly the shift
    (m,) = feature_metrics(r, g, ["x"])
    assert m["std_generated"] / m["std_real"] == pytest.approx(2.0, rel=0.03)
    assert m["w1"] == pytest.approx(np.sqrt(2 / np.pi), rel=0.05)  # E|Z| for sd 2 vs sd 1


def test_classifier_and_energy_distance_alone():
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(3000, 2)), rng.normal(size=(3000, 2))
    assert abs(classifier_auc(a, b)["auc"] - 0.5) < 0.05
    assert classifier_auc(a, b + 3.0)["auc"] > 0.99
    assert energy_distance(a, b) < 0.01 < energy_distance(a, b + 1.0)


def test_conditional_report_finds_where_in_the_condition_the_generator_is_worse():
    rng = np.random.default_rng(0)
    n = 8000
    cond = rng.uniform(0, 10, size=(n, 1)).astype(np.float32)
    real = (cond + rng.normal(size=(n, 1))).astype(np.float32)
    # Right below cond=5, wrong (shifted by 2) above it.
    gen = (cond + rng.normal(size=(n, 1)) + 2.0 * (cond > 5)).astype(np.float32)
    rep = build_report(real, gen, feature_names=["x"], condition_names=["p"], real_cond=cond,
                       gen_cond=cond, seed=0, n_bins=4)
    bins = rep["binned"]["p"]
    assert len(bins) == 4
    w1 = [b["features"][0]["w1"] for b in bins]
    assert w1[0] < 0.15 and w1[1] < 0.15
    assert w1[2] == pytest.approx(2.0, abs=0.15) and w1[3] == pytest.approx(2.0, abs=0.15)
    assert sum(b["n_real"] for b in bins) == n
    assert rep["classifier_test"]["auc"] > 0.7


def test_frechet_distance_of_gaussians_has_the_closed_form():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(20000, 3))
    b = rng.normal(size=(20000, 3)) * 2.0 + 1.0
    # |mu|^2 = 3; Tr(I + 4I - 2*2I) = 3
    assert frechet_distance(a, b) == pytest.approx(6.0, rel=0.05)
    assert frechet_distance(a, rng.normal(size=(20000, 3))) < 0.01


def test_image_measures_assign_real_images_to_their_class():
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    out = image_measures(x[:1200], x[1200:], x[1200:], labels_train=y[:1200], asked=y[1200:])
    assert out["asked_class_share"] > 0.85
    assert out["frechet_distance"] == pytest.approx(0.0, abs=1e-3)
    noise = np.random.default_rng(0).uniform(0, 16, size=(597, 64))
    bad = image_measures(x[:1200], x[1200:], noise, labels_train=y[:1200], asked=y[1200:])
    assert bad["frechet_distance"] > 10 * max(out["frechet_distance"], 1.0)
    unlabelled = image_measures(x[:1200], x[1200:], x[1200:])
    assert "PCA" in unlabelled["feature_extractor"]


# --- the pipeline: split, report and referee on a short real run --------------------------------


def _spec(dataset: dict, **training):
    from models.spec import JobSpec

    return JobSpec.model_validate({
        "objective": "wgan-gp",
        "architecture": {"name": "mlp", "latent_dim": 8, "generator": {"width": 32, "depth": 2},
                         "critic": {"width": 32, "depth": 2}},
        "dataset": dataset,
        "training": {"steps": 20, "batch_size": 64, "checkpoint_every": 10, "log_every": 5,
                     "device": "cpu", **training},
    })


def test_holdout_split_is_deterministic_and_disjoint():
    from models.datasets import load_dataset
    from models.pipeline import split_holdout

    data = load_dataset(_spec({"uri": "builtin://8gaussians", "max_rows": 1000}).dataset,
                        data_roots=[])
    tr1, ho1 = split_holdout(data, 0.2, seed=3)
    tr2, ho2 = split_holdout(data, 0.2, seed=3)
    _, ho3 = split_holdout(data, 0.2, seed=4)
    assert (tr1.n_rows, ho1.n_rows) == (800, 200)
    assert np.array_equal(ho1.features, ho2.features)
    assert not np.array_equal(ho1.features, ho3.features)
    rows = {tuple(r) for r in tr1.features}
    assert not any(tuple(r) in rows for r in ho1.features)
    assert split_holdout(data, 0.0, seed=3) == (data, None)


def test_the_trainer_never_sees_the_held_out_rows(tmp_path, monkeypatch):
    import models.pipeline as pipeline

    seen = {}
    real_train = pipeline.train

    def spy(spec, data, **kw):
        seen["n"] = data.n_rows
        return real_train(spec, data, **kw)

    monkeypatch.setattr(pipeline, "train", spy)
    spec = _spec({"uri": "builtin://conditional-ring", "max_rows": 1000,
                  "holdout_fraction": 0.25}, referee_every=5)
    result = pipeline.run_job(spec, tmp_path, on_progress=lambda p: seen.setdefault("p", p))
    assert seen["n"] == 750
    rep = result.report
    assert rep["n_real"] == 250 and rep["reference"] == "held-out rows"
    assert set(rep["binned"]) == {"angle"}
    assert {"curves", "hist_x", "hist_y", "pair_x_y", "condition_angle"} <= set(result.plots)
    assert rep["plots"] == sorted(result.plots)
    assert json.loads((tmp_path / "report" / "report.json").read_text())["n_real"] == 250
    first = seen["p"]
    assert 0.0 <= first.metrics["referee_auc"] <= 1.0
    assert first.metrics["eta_seconds"] >= 0


def test_a_referee_does_not_change_the_trained_weights(tmp_path):
    from models.datasets import load_dataset
    from models.train import train

    plain = _spec({"uri": "builtin://8gaussians", "max_rows": 500})
    refd = _spec({"uri": "builtin://8gaussians", "max_rows": 500}, referee_every=5)
    data = load_dataset(plain.dataset, data_roots=[])
    a = train(plain, data)
    b = train(refd, data)
    for pa, pb in zip(a.generator.parameters(), b.generator.parameters(), strict=True):
        assert np.array_equal(pa.detach().numpy(), pb.detach().numpy())
    aucs = [p.metrics["referee_auc"] for p in b.history]
    assert all(0 <= v <= 1 for v in aucs) and "referee_auc" not in a.history[-1].metrics


def test_a_run_with_a_referee_resumes_exactly(tmp_path):
    from models.datasets import load_dataset
    from models.train import Cancelled, train

    spec = _spec({"uri": "builtin://conditional-ring", "max_rows": 500}, referee_every=5)
    data = load_dataset(spec.dataset, data_roots=[])
    whole = train(spec, data)
    calls = iter(range(10_000))
    with pytest.raises(Cancelled):
        train(spec, data, workdir=tmp_path, should_stop=lambda: next(calls) >= 12)
    resumed = train(spec, data, workdir=tmp_path)
    assert resumed.resumed_from == 12
    assert ([p.metrics["referee_auc"] for p in resumed.history]
            == [p.metrics["referee_auc"] for p in whole.history])
    for pa, pb in zip(whole.generator.parameters(), resumed.generator.parameters(), strict=True):
        assert np.array_equal(pa.detach().numpy(), pb.detach().numpy())
