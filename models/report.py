"""The quality report of a generator: real (held-out) rows against generated rows.

Torch-free (numpy, scipy, scikit-learn): every function takes arrays, so the report can be
checked on distributions whose answer is known, without training anything.

`build_report(real, gen, ...)`:
- per feature: 1-D Wasserstein distance (W1, physical units), two-sample Kolmogorov-Smirnov
  statistic and p-value, means and standard deviations of both;
- the difference of the Pearson correlation matrices (generated - real): max |diff|, Frobenius
  norm, and the matrix itself for up to 32 features;
- the multivariate energy distance of Szekely & Rizzo, D^2 = 2 E|X-Y| - E|X-X'| - E|Y-Y'|,
  on the features standardised with the real rows' mean and std (Euclidean norm; at most
  ENERGY_ROWS rows of each);
- a classifier two-sample test: scikit-learn's HistGradientBoostingClassifier separates real
  (conditions + features) from generated (the same conditions + generated features); ROC AUC
  on a stratified 30 % test split (0.5: indistinguishable, 1: fully separable);
- conditional models: per condition, the per-feature metrics (W1, KS, means) in
  `n_bins` quantile bins of that condition (bins of the real rows; generated rows are drawn at
  the same conditions, so they share the bin);
- optional extras given by the caller: toy mode coverage, image measures (see
  `image_measures`).

Sample sizes are capped (MAX_ROWS rows, ENERGY_ROWS for the O(n^2) energy distance) so that the
report takes seconds, not minutes. Per-event weights are not used (sWeights may be negative).
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import stats

MAX_ROWS = 20_000  # rows of each side used by the report
ENERGY_ROWS = 2_000  # rows of each side for the energy distance (pairwise distances)
C2ST_TEST_FRACTION = 0.3
PER_FEATURE_MATRIX_LIMIT = 32  # correlation matrices and per-feature lists above: summaries only
N_BINS = 5


def _f(x: float) -> float | None:
    """JSON-safe float: NaN and inf become None."""
    x = float(x)
    return x if math.isfinite(x) else None


def feature_metrics(real: np.ndarray, gen: np.ndarray, names: Sequence[str]) -> list[dict]:
    """Per-feature W1, KS statistic + p-value, means and stds. real [N, F], gen [M, F]."""
    out = []
    for j, name in enumerate(names):
        r, g = real[:, j].astype(np.float64), gen[:, j].astype(np.float64)
        ks = stats.ks_2samp(r, g)
        out.append({
            "feature": name,
            "w1": _f(stats.wasserstein_distance(r, g)),
            "ks": _f(ks.statistic),
            "ks_pvalue": _f(ks.pvalue),
            "mean_real": _f(r.mean()), "mean_generated": _f(g.mean()),
            "std_real": _f(r.std()), "std_generated": _f(g.std()),
        })
    return out


def correlation_difference(real: np.ndarray, gen: np.ndarray) -> dict[str, Any]:
    """Pearson correlation of generated minus real; constant columns count as uncorrelated."""
    if real.shape[1] < 2:
        return {"max_abs": 0.0, "frobenius": 0.0}

    def corr(x: np.ndarray) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            c = np.corrcoef(x.astype(np.float64), rowvar=False)
        return np.nan_to_num(c, nan=0.0)

    diff = corr(gen) - corr(real)
    out: dict[str, Any] = {"max_abs": _f(np.abs(diff).max()),
                           "frobenius": _f(np.linalg.norm(diff))}
    if real.shape[1] <= PER_FEATURE_MATRIX_LIMIT:
        out["matrix"] = np.round(diff, 6).tolist()
    return out


def energy_distance(real: np.ndarray, gen: np.ndarray, *, max_rows: int = ENERGY_ROWS,
                    seed: int = 0) -> float:
    """Szekely-Rizzo energy distance D^2 = 2E|X-Y| - E|X-X'| - E|Y-Y'| (V-statistic), on the
    columns standardised by the real rows; 0 for equal distributions."""
    rng = np.random.default_rng(seed)
    r = _subsample(real, max_rows, rng).astype(np.float64)
    g = _subsample(gen, max_rows, rng).astype(np.float64)
    mu, sd = r.mean(0), r.std(0)
    sd[sd == 0] = 1.0
    r, g = (r - mu) / sd, (g - mu) / sd

    def mean_dist(a: np.ndarray, b: np.ndarray) -> float:
        total = 0.0
        for start in range(0, len(a), 500):  # blocks: bounded memory
            block = a[start:start + 500]
            d2 = (block**2).sum(1)[:, None] + (b**2).sum(1)[None, :] - 2 * block @ b.T
            total += np.sqrt(np.clip(d2, 0, None)).sum()
        return total / (len(a) * len(b))

    return float(2 * mean_dist(r, g) - mean_dist(r, r) - mean_dist(g, g))


def classifier_auc(real: np.ndarray, gen: np.ndarray, *, seed: int = 0,
                   test_fraction: float = C2ST_TEST_FRACTION) -> dict[str, Any]:
    """Classifier two-sample test: HistGradientBoostingClassifier on real (label 1) vs
    generated (label 0) rows (conditions + features); ROC AUC on a held-out test split."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import train_test_split

    x = np.concatenate([real, gen]).astype(np.float32)
    y = np.concatenate([np.ones(len(real)), np.zeros(len(gen))])
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=test_fraction, random_state=seed,
                                              stratify=y)
    clf = HistGradientBoostingClassifier(max_iter=100, early_stopping=False, random_state=seed)
    clf.fit(x_tr, y_tr)
    auc = roc_auc_score(y_te, clf.predict_proba(x_te)[:, 1])
    return {"auc": _f(auc), "classifier": "HistGradientBoostingClassifier(max_iter=100)",
            "n_train": int(len(y_tr)), "n_test": int(len(y_te))}


def binned_metrics(real: np.ndarray, gen: np.ndarray, real_cond: np.ndarray,
                   gen_cond: np.ndarray, feature_names: Sequence[str],
                   condition_names: Sequence[str], n_bins: int = N_BINS) -> dict[str, list]:
    """For each condition: quantile bins of the real rows; in each bin the per-feature W1, KS
    and means of the real and generated rows whose condition falls in it."""
    out: dict[str, list] = {}
    for c, cname in enumerate(condition_names):
        edges = np.unique(np.quantile(real_cond[:, c], np.linspace(0, 1, n_bins + 1)))
        bins = []
        for lo, hi in zip(edges[:-1], edges[1:], strict=True):
            last = hi == edges[-1]
            in_r = (real_cond[:, c] >= lo) & ((real_cond[:, c] <= hi) if last
                                              else (real_cond[:, c] < hi))
            in_g = (gen_cond[:, c] >= lo) & ((gen_cond[:, c] <= hi) if last
                                             else (gen_cond[:, c] < hi))
            if in_r.sum() < 2 or in_g.sum() < 2:
                continue
            bins.append({
                "low": _f(lo), "high": _f(hi), "centre": _f((lo + hi) / 2),
                "n_real": int(in_r.sum()), "n_generated": int(in_g.sum()),
                "features": feature_metrics(real[in_r], gen[in_g], feature_names),
            })
        out[cname] = bins
    return out


def _subsample(x: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    return x if len(x) <= n else x[rng.choice(len(x), n, replace=False)]


def build_report(
    real: np.ndarray,
    gen: np.ndarray,
    *,
    feature_names: Sequence[str],
    condition_names: Sequence[str] = (),
    real_cond: np.ndarray | None = None,
    gen_cond: np.ndarray | None = None,
    seed: int = 0,
    n_bins: int = N_BINS,
    extra: dict[str, Any] | None = None,
    binned: bool = True,
) -> dict[str, Any]:
    """The report as a JSON-able dict. `real`, `gen` [N, F] in physical units; for conditional
    models `real_cond`, `gen_cond` [N, C] (gen drawn at the real rows' conditions)."""
    tic = time.perf_counter()
    rng = np.random.default_rng(seed)
    if len(real) > MAX_ROWS:
        idx = rng.choice(len(real), MAX_ROWS, replace=False)
        real = real[idx]
        real_cond = real_cond[idx] if real_cond is not None else None
    if len(gen) > MAX_ROWS:
        idx = rng.choice(len(gen), MAX_ROWS, replace=False)
        gen = gen[idx]
        gen_cond = gen_cond[idx] if gen_cond is not None else None
    conditional = bool(condition_names) and real_cond is not None and gen_cond is not None
    per_feature = feature_metrics(real, gen, feature_names)
    w1 = [m["w1"] for m in per_feature if m["w1"] is not None]
    ks = [m["ks"] for m in per_feature if m["ks"] is not None]
    report: dict[str, Any] = {
        "n_real": int(len(real)),
        "n_generated": int(len(gen)),
        "features": list(feature_names),
        "conditions": list(condition_names),
        "summary": {"w1_mean": _f(np.mean(w1)) if w1 else None,
                    "w1_max": _f(np.max(w1)) if w1 else None,
                    "ks_max": _f(np.max(ks)) if ks else None},
        "correlation_difference": correlation_difference(real, gen),
        "energy_distance": {
            "value": _f(energy_distance(real, gen, seed=seed)),
            "definition": "Szekely-Rizzo D^2 = 2E|X-Y| - E|X-X'| - E|Y-Y'|, Euclidean, on "
                          f"features standardised by the real rows, <= {ENERGY_ROWS} rows each",
        },
    }
    if len(feature_names) <= PER_FEATURE_MATRIX_LIMIT:
        report["per_feature"] = per_feature
    x_real = np.concatenate([real_cond, real], 1) if conditional else real
    x_gen = np.concatenate([gen_cond, gen], 1) if conditional else gen
    report["classifier_test"] = classifier_auc(x_real, x_gen, seed=seed)
    if conditional and binned:
        assert real_cond is not None and gen_cond is not None
        report["binned"] = binned_metrics(real, gen, real_cond, gen_cond, feature_names,
                                          condition_names, n_bins)
    if extra:
        report.update(extra)
    report["seconds"] = round(time.perf_counter() - tic, 3)
    return report


# --- images -------------------------------------------------------------------------------------


def frechet_distance(f_real: np.ndarray, f_gen: np.ndarray) -> float:
    """|mu_r - mu_g|^2 + Tr(S_r + S_g - 2 (S_r S_g)^1/2) (the FID formula on given features)."""
    from scipy import linalg

    mu1, mu2 = f_real.mean(0), f_gen.mean(0)
    s1 = np.atleast_2d(np.cov(f_real, rowvar=False))
    s2 = np.atleast_2d(np.cov(f_gen, rowvar=False))
    # Dead ReLU units make the covariances singular: a small ridge keeps sqrtm well defined.
    eps = 1e-6 * np.eye(len(s1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        covmean = linalg.sqrtm((s1 + eps) @ (s2 + eps))
    covmean = np.real(covmean)
    return max(0.0, float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean)))


def image_measures(real_train: np.ndarray, real_test: np.ndarray, gen: np.ndarray, *,
                   labels_train: np.ndarray | None = None, asked: np.ndarray | None = None,
                   seed: int = 0) -> dict[str, Any]:
    """Frechet distance of image sets on the features of a small classifier fitted on the real
    training images, and (labels given) the share of generated images it assigns to the class
    they were asked for.

    With labels (conditional image models, one-hot conditions): scikit-learn's MLPClassifier
    (one hidden layer of 64 ReLU units, 200 epochs at most) is fitted on the real training
    images; its hidden activations are the features. Without labels: the first 20 principal
    components of the real training images. No downloaded Inception weights are used, so the
    numbers compare models on one data set only."""
    out: dict[str, Any] = {}
    if labels_train is not None:
        from sklearn.neural_network import MLPClassifier

        clf = MLPClassifier(hidden_layer_sizes=(64,), max_iter=200, random_state=seed)
        clf.fit(real_train, labels_train)

        def features(x: np.ndarray) -> np.ndarray:
            return np.maximum(x @ clf.coefs_[0] + clf.intercepts_[0], 0)

        out["feature_extractor"] = "MLPClassifier(64 ReLU) hidden layer, fitted on the real set"
        if asked is not None:
            out["asked_class_share"] = _f((clf.predict(gen) == asked).mean())
    else:
        from sklearn.decomposition import PCA

        pca = PCA(n_components=min(20, real_train.shape[1]), random_state=seed).fit(real_train)
        features = pca.transform
        out["feature_extractor"] = "PCA(20) fitted on the real set"
    out["frechet_distance"] = _f(frechet_distance(features(real_test), features(gen)))
    return out
