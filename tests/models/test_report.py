"""The quality report on distributions whose answer is known (no training), the referee on
generators whose answer is known, and the pipeline's held-out split, report and referee on a
short real training run."""

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


# --- per-event weights (sWeights) and where the generator fails ---------------------------------


def signal_plus_subtracted_background(seed: int = 0, n_signal: int = 6000,
                                      n_background: int = 3000):
    """Real rows: signal N(0, 1) with weight 1, and background U(-5, 5) rows each present
    twice, once with weight +1 and once with weight -1: the weighted law is exactly the signal."""
    rng = np.random.default_rng(seed)
    signal = rng.normal(size=(n_signal, 1))
    background = rng.uniform(-5, 5, size=(n_background, 1))
    real = np.concatenate([signal, background, background]).astype(np.float32)
    w = np.concatenate([np.ones(n_signal), np.ones(n_background), -np.ones(n_background)])
    return real, w, signal.astype(np.float32)


def test_weighted_report_sees_the_signal_through_signed_weights():
    from scipy import stats

    real, w, signal = signal_plus_subtracted_background()
    gen = np.random.default_rng(1).normal(size=(9000, 1)).astype(np.float32)
    rep = build_report(real, gen, feature_names=["x"], weights=w, seed=0)
    plain = build_report(real, gen, feature_names=["x"], seed=0)
    assert rep["weighted"] is True and plain["weighted"] is False
    (m,) = rep["per_feature"]
    (u,) = plain["per_feature"]
    # The weighted ECDF of the real rows is the signal's ECDF exactly.
    s, g = signal[:, 0].astype(np.float64), gen[:, 0].astype(np.float64)
    assert m["w1"] == pytest.approx(stats.wasserstein_distance(s, g), rel=1e-9)
    assert m["ks"] == pytest.approx(stats.ks_2samp(s, g).statistic, rel=1e-9)
    assert m["mean_real"] == pytest.approx(s.mean(), abs=1e-9)
    assert m["std_real"] == pytest.approx(s.std(), rel=1e-9)
    assert m["w1"] < 0.05 and u["w1"] > 0.5  # the unweighted report sees the background
    assert m["std_real"] == pytest.approx(1.0, abs=0.05) and u["std_real"] > 1.8
    assert m["ks_pvalue"] > 0.01 and u["ks_pvalue"] < 1e-10
    assert m["n_eff_real"] == pytest.approx(3000.0)  # (sum w)^2 / sum w^2 = 6000^2 / 12000
    assert abs(rep["classifier_test"]["auc"] - 0.5) < 0.04
    assert plain["classifier_test"]["auc"] > 0.6
    assert abs(rep["classifier_breakdown"]["per_feature"][0]["auc"] - 0.5) < 0.04
    assert abs(rep["energy_distance"]["value"]) < 0.02 < plain["energy_distance"]["value"]
    assert "Kish" in rep["weighting"]["ks_pvalue"]
    assert rep["weighting"]["n_negative_real"] == 3000
    json.dumps(rep, allow_nan=False)


def test_weighted_metrics_agree_with_scipy_and_sklearn_for_positive_weights():
    from scipy import stats
    from sklearn.metrics import roc_auc_score

    from models.report import weighted_auc, weighted_corrcoef, weighted_ecdf_distances

    rng = np.random.default_rng(4)
    r, g = rng.normal(size=400), rng.normal(size=600) * 1.5 + 0.3
    r[:50], g[:50] = np.round(r[:50], 1), np.round(g[:50], 1)  # ties across the samples
    wr, wg = rng.uniform(0.1, 3, 400), rng.uniform(0.1, 3, 600)
    w1, ks = weighted_ecdf_distances(r, g, wr, wg)
    assert w1 == pytest.approx(stats.wasserstein_distance(r, g, wr, wg), rel=1e-9)
    w1, ks = weighted_ecdf_distances(r, g)
    assert w1 == pytest.approx(stats.wasserstein_distance(r, g), rel=1e-9)
    assert ks == pytest.approx(stats.ks_2samp(r, g).statistic, rel=1e-9)
    y = rng.integers(0, 2, 1000)
    score = np.round(rng.normal(size=1000) + y, 1)  # with ties
    w = rng.uniform(0, 2, 1000)
    assert weighted_auc(y, score, w) == pytest.approx(roc_auc_score(y, score, sample_weight=w))
    assert weighted_auc(y, score) == pytest.approx(roc_auc_score(y, score))
    x = rng.normal(size=(500, 3))
    x[:, 1] += x[:, 0]
    np.testing.assert_allclose(weighted_corrcoef(x, np.ones(500)), np.corrcoef(x, rowvar=False),
                               atol=1e-12)
    # a weight of 2 is the row counted twice
    dup = np.concatenate([x, x[:100]])
    wdup = np.r_[np.where(np.arange(500) < 100, 2.0, 1.0)]
    np.testing.assert_allclose(weighted_corrcoef(x, wdup), np.corrcoef(dup, rowvar=False),
                               atol=1e-12)
    a, b = rng.normal(size=(200, 2)), rng.normal(size=(300, 2)) + 0.3
    assert energy_distance(a, b, real_weights=np.ones(200), gen_weights=np.ones(300)) == (
        pytest.approx(energy_distance(a, b), rel=1e-9))


def test_conditional_weights_follow_the_generated_rows_row_for_row(monkeypatch):
    # Generated rows with weight 0 are garbage, the others right: weighted with the real rows'
    # weights, row for row (also through the report's subsampling), the report sees no error.
    import models.report as report

    monkeypatch.setattr(report, "MAX_ROWS", 3000)
    rng = np.random.default_rng(0)
    n = 6000
    cond = rng.uniform(0, 10, size=(n, 1)).astype(np.float32)
    real = (cond + rng.normal(size=(n, 1))).astype(np.float32)
    w = (rng.uniform(size=n) < 0.5).astype(np.float64) * 2.0
    gen = (cond + rng.normal(size=(n, 1)) + 10.0 * (w == 0)[:, None]).astype(np.float32)
    rep = report.build_report(real, gen, feature_names=["x"], condition_names=["p"],
                              real_cond=cond, gen_cond=cond, weights=w, seed=0, n_bins=2)
    assert rep["n_real"] == rep["n_generated"] == 3000
    assert rep["weighting"]["generated"].startswith("the real rows' weights")
    assert rep["per_feature"][0]["w1"] < 0.15
    for b in rep["binned"]["p"]:
        assert b["features"][0]["w1"] < 0.25
    assert rep["classifier_test"]["auc"] < 0.6
    unweighted = report.build_report(real, gen, feature_names=["x"], condition_names=["p"],
                                     real_cond=cond, gen_cond=cond, seed=0, n_bins=2)
    assert unweighted["per_feature"][0]["w1"] > 3


def test_classifier_breakdown_says_the_correlation_is_missing():
    # Right marginals, wrong joint law: real x2 = x1 + small noise; generated x1, x2
    # independent with the same marginals.
    rng = np.random.default_rng(0)
    n = 8000
    x1 = rng.normal(size=n)
    real = np.stack([x1, x1 + 0.1 * rng.normal(size=n)], 1)
    gen = np.stack([rng.normal(size=n), rng.normal(size=n) * np.sqrt(1.01)], 1)
    rep = build_report(real, gen, feature_names=["x1", "x2"], seed=0)
    out = rep["classifier_breakdown"]
    assert [m["feature"] for m in out["per_feature"]] == ["x1", "x2"]
    for m in out["per_feature"]:
        assert abs(m["auc"] - 0.5) < 0.06
    assert out["features_joint"] > 0.8
    assert out["features_joint"] == rep["classifier_test"]["auc"]  # unconditional: the same
    assert out["with_conditions"] is None
    cond = rng.uniform(size=(n, 1))
    rep = build_report(real, gen, feature_names=["x1", "x2"], condition_names=["c"],
                       real_cond=cond, gen_cond=cond, seed=0, binned=False)
    out = rep["classifier_breakdown"]
    assert out["features_joint"] > 0.8 and out["with_conditions"] > 0.8
    assert out["with_conditions"] == rep["classifier_test"]["auc"]
    assert max(m["auc"] for m in out["per_feature"]) < 0.56


# --- the referee, on generators whose answer is known ------------------------------------------


def test_referee_roc_auc_is_sklearns():
    from sklearn.metrics import roc_auc_score

    from models.referee import roc_auc

    rng = np.random.default_rng(0)
    pos, neg = rng.normal(0.5, 1, 300).round(1), rng.normal(0, 1, 200).round(1)  # with ties
    y = np.r_[np.ones(300), np.zeros(200)]
    assert roc_auc(pos, neg) == pytest.approx(roc_auc_score(y, np.r_[pos, neg]), abs=1e-12)
    assert roc_auc(np.ones(5), np.zeros(5)) == 1.0 and roc_auc(np.zeros(5), np.ones(5)) == 0.0


class ShiftedNoise:
    """A stand-in generator: z[:, :2] * scale + shift (+ the condition's column 0 times
    `follow`), whatever its mode."""

    training = False

    def __init__(self, shift: float = 0.0, scale: float = 1.0, follow: float = 0.0) -> None:
        self.shift, self.scale, self.follow = shift, scale, follow

    def __call__(self, z, a=None):  # type: ignore[no-untyped-def]
        out = z[:, :2] * self.scale + self.shift
        return out + self.follow * a[:, :1] if a is not None else out

    def eval(self):  # type: ignore[no-untyped-def]
        return self

    def train(self, mode: bool = True):  # type: ignore[no-untyped-def]
        return self


def referee_auc_after_training(generator: ShiftedNoise, conditional: bool = False,
                               steps: int = 300) -> float:
    """Real rows: N(0, 1) in 2-D; conditional: 2 a + N(0, 0.5^2) in each column, with the
    condition a ~ N(0, 1). The referee trains `steps` batches of 128 against `generator`, then
    is measured on 2,000 fresh rows of each."""
    import torch

    from models.referee import Referee

    g = torch.Generator().manual_seed(0)
    n = 20_000
    a_all = torch.randn(n, 1, generator=g) if conditional else None
    x_all = torch.randn(n, 2, generator=g)
    if a_all is not None:
        x_all = 2 * a_all + 0.5 * x_all
    referee = Referee(2, 1 if conditional else 0, seed=0, device=torch.device("cpu"))
    for _ in range(steps):
        idx = torch.randint(0, n, (128,), generator=g)
        cond = a_all[idx] if a_all is not None else None
        fake = generator(torch.randn(128, 2, generator=g), cond)
        referee.update(x_all[idx], fake, cond, None)
    return referee.auc(generator, x_all, a_all, 2000, latent_dim=2)  # type: ignore[arg-type]


def test_the_referee_cannot_tell_the_data_law_from_itself():
    assert referee_auc_after_training(ShiftedNoise()) == pytest.approx(0.5, abs=0.05)
    assert referee_auc_after_training(ShiftedNoise(scale=0.5, follow=2.0), conditional=True) \
        == pytest.approx(0.5, abs=0.05)


@pytest.mark.parametrize(("generator", "conditional"), [
    (ShiftedNoise(shift=3.0), False),  # off by 3 sigma
    (ShiftedNoise(scale=0.1), False),  # collapsed to the centre
    (ShiftedNoise(scale=4.25**0.5), True),  # the right marginal law, ignoring the condition
], ids=["shifted", "collapsed", "ignores-the-condition"])
def test_the_referee_tells_a_wrong_generator_apart(generator, conditional):
    # Real is label 1: a referee that can tell scores above 0.5 (swapped labels: near 0).
    assert referee_auc_after_training(generator, conditional) > 0.9


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
        seen["n_validation"] = kw["validation"].n_rows
        return real_train(spec, data, **kw)

    monkeypatch.setattr(pipeline, "train", spy)
    spec = _spec({"uri": "builtin://conditional-ring", "max_rows": 1000,
                  "holdout_fraction": 0.25}, referee_every=5)
    result = pipeline.run_job(spec, tmp_path, on_progress=lambda p: seen.setdefault("p", p))
    # 1000 rows: 250 held out for the report, 10% of the other 750 for model selection.
    assert (seen["n"], seen["n_validation"]) == (675, 75)
    rep = result.report
    assert rep["n_real"] == 250 and rep["reference"] == "held-out rows"
    assert set(rep["binned"]) == {"angle"}
    assert {"curves", "hist_x", "hist_y", "pair_x_y", "condition_angle"} <= set(result.plots)
    assert rep["plots"] == sorted(result.plots)
    assert json.loads((tmp_path / "report" / "report.json").read_text())["n_real"] == 250
    first = seen["p"]
    # After 5 steps the generator is far from the ring: the referee tells them apart
    # (measured 0.997); one whose labels were swapped would read near 0, one that does not
    # learn near 0.5. The report's classifier likewise (measured 1.0).
    assert first.metrics["referee_auc"] > 0.8, first.metrics
    assert rep["classifier_test"]["auc"] > 0.9, rep["classifier_test"]
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
    assert "referee_auc" not in a.history[-1].metrics
    # 20 steps do not make a generator the referee cannot tell: measured 0.67 at step 5
    # (the referee has barely trained), then 0.998 and 1.0
    assert len(aucs) == 4 and all(0.5 < v <= 1 for v in aucs) and min(aucs[1:]) > 0.9, aucs


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
