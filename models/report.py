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
- where the generator fails (`classifier_breakdown`): the same test on each feature alone
  (`per_feature`, first PER_FEATURE_AUC_LIMIT features, a cheaper budget), on all features
  jointly without the conditions (`features_joint`) and on conditions + features
  (`with_conditions`, the `classifier_test` value): right marginals with a wrong joint law show
  as per-feature AUCs near 0.5 and a joint AUC well above it;
- conditional models: per condition, the per-feature metrics (W1, KS, means) in
  `n_bins` quantile bins of that condition (bins of the real rows; generated rows are drawn at
  the same conditions, so they share the bin);
- optional extras given by the caller: toy mode coverage, image measures (see
  `image_measures`).

Sample sizes are capped (MAX_ROWS rows, ENERGY_ROWS for the O(n^2) energy distance) so that the
report takes seconds, not minutes.

Per-event weights (`weights=`, HEP sWeights, possibly negative; REFERENCE.md "Per-event
weights"): every expectation over the real rows becomes sum_i w_i f(x_i) / sum_i w_i. The
generated rows of a conditional model are drawn at the real rows' conditions, row for row, so
they carry the same weights (`gen_weights`, by default the real rows' weights when the model is
conditional and the lengths match). Weighted: W1 = integral of |F_r - F_g| and KS = max
|F_r - F_g| with weighted empirical CDFs (signed weights allowed, so scipy's non-negative
weights are not used); the KS p-value from the asymptotic Kolmogorov distribution with Kish's
effective sample sizes n_eff = (sum w)^2 / sum w^2; weighted means, stds, correlations; the
weighted energy-distance V-statistic; the classifier is fitted with |w| (signed weights make
its loss unbounded below) and its test-split AUC is the weighted Mann-Whitney statistic with
the signed weights (an unbiased estimate for any fixed score). The report says
`"weighted": true/false`.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Sequence
from typing import Any, SupportsFloat

import numpy as np
from scipy import stats

MAX_ROWS = 20_000  # rows of each side used by the report
ENERGY_ROWS = 2_000  # rows of each side for the energy distance (pairwise distances)
C2ST_TEST_FRACTION = 0.3
C2ST_MAX_ITER = 100  # boosting iterations of the classifier two-sample test
PER_FEATURE_AUC_LIMIT = 20  # classifier_breakdown: per-feature AUCs of the first features only
BREAKDOWN_ROWS = 10_000  # classifier_breakdown: rows of each side for the per-feature AUCs
BREAKDOWN_MAX_ITER = 50  # classifier_breakdown: boosting iterations for the per-feature AUCs
PER_FEATURE_MATRIX_LIMIT = 32  # correlation matrices and per-feature lists above: summaries only
N_BINS = 5


def _f(x: SupportsFloat) -> float | None:
    """JSON-safe float: NaN and inf become None."""
    x = float(x)
    return x if math.isfinite(x) else None


def _as_weights(w: np.ndarray | None, n: int, what: str = "weights") -> np.ndarray | None:
    """Per-row weights as float64 [n], or None."""
    if w is None:
        return None
    w = np.asarray(w, dtype=np.float64).reshape(-1)
    if len(w) != n:
        raise ValueError(f"{what} has {len(w)} entries for {n} rows")
    return w


def _sel(w: np.ndarray | None, rows: np.ndarray) -> np.ndarray | None:
    """The weights of the selected rows (a mask or indices), or None."""
    return None if w is None else w[rows]


def effective_sample_size(w: np.ndarray) -> float:
    """Kish's effective sample size (sum w)^2 / sum w^2 (n for equal weights)."""
    w = np.asarray(w, dtype=np.float64)
    s2 = float((w**2).sum())
    return float(w.sum()) ** 2 / s2 if s2 > 0 else math.nan


def weighted_mean_std(x: np.ndarray, w: np.ndarray) -> tuple[float, float]:
    """Weighted mean sum w x / sum w and std sqrt(sum w (x - mean)^2 / sum w); NaN where the
    weights sum to <= 0 or (signed weights) the variance estimate is negative."""
    x, w = np.asarray(x, dtype=np.float64), np.asarray(w, dtype=np.float64)
    total = w.sum()
    if not total > 0:
        return math.nan, math.nan
    mu = float((w * x).sum() / total)
    var = float((w * (x - mu) ** 2).sum() / total)
    return mu, math.sqrt(var) if var >= 0 else math.nan


def weighted_ecdf_distances(r: np.ndarray, g: np.ndarray, w_r: np.ndarray | None = None,
                            w_g: np.ndarray | None = None) -> tuple[float, float]:
    """(W1, KS) of two weighted 1-D samples: W1 = integral of |F_r - F_g| and KS = max
    |F_r - F_g|, with the weighted empirical CDFs F(t) = sum_{x_i <= t} w_i / sum w_i on the
    merged sorted support. Signed weights are allowed (F is then not monotone); NaN where a
    side's weights sum to <= 0."""
    r, g = np.asarray(r, dtype=np.float64), np.asarray(g, dtype=np.float64)
    w_r = np.ones(len(r)) if w_r is None else np.asarray(w_r, dtype=np.float64)
    w_g = np.ones(len(g)) if w_g is None else np.asarray(w_g, dtype=np.float64)
    s_r, s_g = w_r.sum(), w_g.sum()
    if not (s_r > 0 and s_g > 0) or len(r) == 0 or len(g) == 0:
        return math.nan, math.nan
    x = np.concatenate([r, g])
    order = np.argsort(x, kind="stable")
    xs = x[order]
    step = np.concatenate([w_r / s_r, -w_g / s_g])[order]
    diff = np.cumsum(step)  # F_r - F_g just right of each point
    last_of_ties = np.r_[xs[1:] != xs[:-1], True]
    ks = float(np.abs(diff[last_of_ties]).max())
    w1 = float((np.abs(diff[:-1]) * np.diff(xs)).sum())  # tied points: zero-width intervals
    return w1, ks


def feature_metrics(real: np.ndarray, gen: np.ndarray, names: Sequence[str],
                    real_weights: np.ndarray | None = None,
                    gen_weights: np.ndarray | None = None) -> list[dict]:
    """Per-feature W1, KS statistic + p-value, means and stds. real [N, F], gen [M, F].

    With weights (either side; the other counts as unweighted): weighted ECDFs for W1 and KS
    (`weighted_ecdf_distances`), the KS p-value from the asymptotic Kolmogorov distribution with
    Kish's effective sample sizes, weighted means and stds, and the effective sample sizes."""
    weighted = real_weights is not None or gen_weights is not None
    if weighted:
        w_r = (np.ones(len(real)) if real_weights is None
               else _as_weights(real_weights, len(real), "real_weights"))
        w_g = (np.ones(len(gen)) if gen_weights is None
               else _as_weights(gen_weights, len(gen), "gen_weights"))
        assert w_r is not None and w_g is not None
        n_r, n_g = effective_sample_size(w_r), effective_sample_size(w_g)
    out = []
    for j, name in enumerate(names):
        r, g = real[:, j].astype(np.float64), gen[:, j].astype(np.float64)
        if not weighted:
            ks = stats.ks_2samp(r, g)
            out.append({
                "feature": name,
                "w1": _f(stats.wasserstein_distance(r, g)),
                "ks": _f(ks.statistic),
                "ks_pvalue": _f(ks.pvalue),
                "mean_real": _f(r.mean()), "mean_generated": _f(g.mean()),
                "std_real": _f(r.std()), "std_generated": _f(g.std()),
            })
            continue
        assert w_r is not None and w_g is not None
        w1, ks_stat = weighted_ecdf_distances(r, g, w_r, w_g)
        p = math.nan
        if n_r > 0 and n_g > 0 and math.isfinite(ks_stat):
            en = n_r * n_g / (n_r + n_g)
            p = float(stats.kstwobign.sf(math.sqrt(en) * ks_stat))
        mean_r, std_r = weighted_mean_std(r, w_r)
        mean_g, std_g = weighted_mean_std(g, w_g)
        out.append({
            "feature": name, "w1": _f(w1), "ks": _f(ks_stat), "ks_pvalue": _f(p),
            "mean_real": _f(mean_r), "mean_generated": _f(mean_g),
            "std_real": _f(std_r), "std_generated": _f(std_g),
            "n_eff_real": _f(n_r), "n_eff_generated": _f(n_g),
        })
    return out


def weighted_corrcoef(x: np.ndarray, w: np.ndarray | None = None) -> np.ndarray:
    """Pearson correlation matrix of the columns of x [N, F] under weights w [N] (signed
    allowed); columns with no positive variance count as uncorrelated; clipped to [-1, 1]."""
    x = np.asarray(x, dtype=np.float64)
    if w is None:
        with np.errstate(invalid="ignore", divide="ignore"):
            c = np.corrcoef(x, rowvar=False)
        return np.nan_to_num(c, nan=0.0)
    w = np.asarray(w, dtype=np.float64)
    total = w.sum()
    if not total > 0:
        return np.zeros((x.shape[1], x.shape[1]))
    centred = x - (w @ x) / total
    cov = (centred * w[:, None]).T @ centred / total
    sd = np.sqrt(np.clip(np.diag(cov), 0, None))
    with np.errstate(invalid="ignore", divide="ignore"):
        c = cov / np.outer(sd, sd)
    c = np.clip(np.nan_to_num(c, nan=0.0, posinf=0.0, neginf=0.0), -1.0, 1.0)
    np.fill_diagonal(c, np.where(sd > 0, 1.0, 0.0))
    return c


def correlation_difference(real: np.ndarray, gen: np.ndarray,
                           real_weights: np.ndarray | None = None,
                           gen_weights: np.ndarray | None = None) -> dict[str, Any]:
    """Pearson correlation of generated minus real (weighted where weights are given);
    constant columns count as uncorrelated."""
    if real.shape[1] < 2:
        return {"max_abs": 0.0, "frobenius": 0.0}
    diff = weighted_corrcoef(gen, gen_weights) - weighted_corrcoef(real, real_weights)
    out: dict[str, Any] = {"max_abs": _f(np.abs(diff).max()),
                           "frobenius": _f(np.linalg.norm(diff))}
    if real.shape[1] <= PER_FEATURE_MATRIX_LIMIT:
        out["matrix"] = np.round(diff, 6).tolist()
    return out


def energy_distance(real: np.ndarray, gen: np.ndarray, *, max_rows: int = ENERGY_ROWS,
                    seed: int = 0, real_weights: np.ndarray | None = None,
                    gen_weights: np.ndarray | None = None) -> float:
    """Szekely-Rizzo energy distance D^2 = 2E|X-Y| - E|X-X'| - E|Y-Y'| (V-statistic), on the
    columns standardised by the real rows; 0 for equal distributions. Weighted: each E is the
    weighted V-statistic, e.g. E|X-Y| = sum_ij w_i v_j |x_i - y_j| / (sum_i w_i sum_j v_j), and
    the standardisation uses the real rows' weighted mean and std."""
    rng = np.random.default_rng(seed)
    w_r = _as_weights(real_weights, len(real), "real_weights")
    w_g = _as_weights(gen_weights, len(gen), "gen_weights")
    idx_r = _take(len(real), max_rows, rng)
    idx_g = _take(len(gen), max_rows, rng)
    r = (real if idx_r is None else real[idx_r]).astype(np.float64)
    g = (gen if idx_g is None else gen[idx_g]).astype(np.float64)
    weighted = w_r is not None or w_g is not None
    if weighted:
        w_r = np.ones(len(r)) if w_r is None else (w_r if idx_r is None else w_r[idx_r])
        w_g = np.ones(len(g)) if w_g is None else (w_g if idx_g is None else w_g[idx_g])
        if not (w_r.sum() > 0 and w_g.sum() > 0):
            return math.nan
        w_r, w_g = w_r / w_r.sum(), w_g / w_g.sum()
        stats_ = [weighted_mean_std(r[:, j], w_r) for j in range(r.shape[1])]
        mu = np.array([m for m, _ in stats_])
        sd = np.array([s for _, s in stats_])
        sd[~np.isfinite(sd) | (sd == 0)] = 1.0
    else:
        mu, sd = r.mean(0), r.std(0)
        sd[sd == 0] = 1.0
    r, g = (r - mu) / sd, (g - mu) / sd

    def mean_dist(a: np.ndarray, b: np.ndarray, wa: np.ndarray | None,
                  wb: np.ndarray | None) -> float:
        total = 0.0
        for start in range(0, len(a), 500):  # blocks: bounded memory
            block = a[start:start + 500]
            d2 = (block**2).sum(1)[:, None] + (b**2).sum(1)[None, :] - 2 * block @ b.T
            dist = np.sqrt(np.clip(d2, 0, None))
            if wa is None or wb is None:
                total += dist.sum()
            else:
                total += float(wa[start:start + 500] @ dist @ wb)
        return total if wa is not None else total / (len(a) * len(b))

    if weighted:
        return float(2 * mean_dist(r, g, w_r, w_g) - mean_dist(r, r, w_r, w_r)
                     - mean_dist(g, g, w_g, w_g))
    return float(2 * mean_dist(r, g, None, None) - mean_dist(r, r, None, None)
                 - mean_dist(g, g, None, None))


def weighted_auc(y_true: np.ndarray, score: np.ndarray,
                 sample_weight: np.ndarray | None = None) -> float:
    """ROC AUC as the weighted Mann-Whitney statistic
    sum_{i pos, j neg} w_i w_j ([s_i > s_j] + [s_i = s_j] / 2) / (sum_pos w sum_neg w).
    Signed weights are allowed (scikit-learn's roc_auc_score refuses them): it is then an
    unbiased estimate of the AUC between the weighted laws; NaN where a class's weights sum
    to 0."""
    y = np.asarray(y_true).astype(bool)
    s = np.asarray(score, dtype=np.float64)
    w = np.ones(len(s)) if sample_weight is None else np.asarray(sample_weight, np.float64)
    order = np.argsort(s, kind="stable")
    s, y, w = s[order], y[order], w[order]
    w_pos, w_neg = np.where(y, w, 0.0), np.where(y, 0.0, w)
    group = np.cumsum(np.r_[True, s[1:] != s[:-1]]) - 1  # tie groups of equal scores
    g_pos, g_neg = np.bincount(group, w_pos), np.bincount(group, w_neg)
    neg_below = np.cumsum(g_neg) - g_neg
    den = w_pos.sum() * w_neg.sum()
    if den == 0:
        return math.nan
    return float((g_pos * (neg_below + 0.5 * g_neg)).sum() / den)


def classifier_auc(real: np.ndarray, gen: np.ndarray, *, seed: int = 0,
                   test_fraction: float = C2ST_TEST_FRACTION,
                   real_weights: np.ndarray | None = None,
                   gen_weights: np.ndarray | None = None,
                   max_iter: int = C2ST_MAX_ITER) -> dict[str, Any]:
    """Classifier two-sample test: HistGradientBoostingClassifier on real (label 1) vs
    generated (label 0) rows (conditions + features); ROC AUC on a held-out test split.

    Weighted (either side): the classifier is fitted with |w|, normalised to mean 1 per class
    (signed weights make its loss unbounded below; any fixed score gives a valid test), and the
    test-split AUC is `weighted_auc` with the signed weights."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import train_test_split

    x = np.concatenate([real, gen]).astype(np.float32)
    y = np.concatenate([np.ones(len(real)), np.zeros(len(gen))])
    weighted = real_weights is not None or gen_weights is not None
    clf = HistGradientBoostingClassifier(max_iter=max_iter, early_stopping=False,
                                         random_state=seed)
    out: dict[str, Any] = {"classifier": f"HistGradientBoostingClassifier(max_iter={max_iter})"}
    if not weighted:
        x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=test_fraction,
                                                  random_state=seed, stratify=y)
        clf.fit(x_tr, y_tr)
        auc = roc_auc_score(y_te, clf.predict_proba(x_te)[:, 1])
    else:
        w_r = _as_weights(real_weights, len(real), "real_weights")
        w_g = _as_weights(gen_weights, len(gen), "gen_weights")
        w = np.concatenate([np.ones(len(real)) if w_r is None else w_r,
                            np.ones(len(gen)) if w_g is None else w_g])
        x_tr, x_te, y_tr, y_te, w_tr, w_te = train_test_split(
            x, y, w, test_size=test_fraction, random_state=seed, stratify=y)
        fit_w = np.abs(w_tr)
        for label in (0.0, 1.0):
            rows = y_tr == label
            mean = fit_w[rows].mean() if rows.any() else 0.0
            if mean > 0:
                fit_w[rows] /= mean
        clf.fit(x_tr, y_tr, sample_weight=fit_w)
        auc = weighted_auc(y_te, clf.predict_proba(x_te)[:, 1], w_te)
        out["weighted"] = True
        out["fit_weights"] = "|w|, mean 1 per class"
        out["auc_method"] = "weighted Mann-Whitney with the signed weights of the test split"
    return {"auc": _f(auc), **out, "n_train": int(len(y_tr)), "n_test": int(len(y_te))}


def classifier_breakdown(real: np.ndarray, gen: np.ndarray, feature_names: Sequence[str], *,
                         real_cond: np.ndarray | None = None,
                         gen_cond: np.ndarray | None = None,
                         real_weights: np.ndarray | None = None,
                         gen_weights: np.ndarray | None = None, seed: int = 0,
                         with_conditions: float | None = None,
                         features_joint: float | None = None) -> dict[str, Any]:
    """Where the generator fails: the classifier two-sample AUC on each feature alone
    (`per_feature`, the first PER_FEATURE_AUC_LIMIT features, at most BREAKDOWN_ROWS rows a
    side and BREAKDOWN_MAX_ITER boosting iterations), on all features jointly without the
    conditions (`features_joint`) and on conditions + features (`with_conditions`; None for
    unconditional models). AUCs already computed by the caller may be passed in. Weighted as
    `classifier_auc` when weights are given."""
    conditional = real_cond is not None and gen_cond is not None and real_cond.shape[1] > 0
    if features_joint is None:
        features_joint = classifier_auc(real, gen, seed=seed, real_weights=real_weights,
                                        gen_weights=gen_weights)["auc"]
    if with_conditions is None and conditional:
        assert real_cond is not None and gen_cond is not None
        with_conditions = classifier_auc(
            np.concatenate([real_cond, real], 1), np.concatenate([gen_cond, gen], 1),
            seed=seed, real_weights=real_weights, gen_weights=gen_weights)["auc"]
    rng = np.random.default_rng(seed)
    idx_r = _take(len(real), BREAKDOWN_ROWS, rng)
    idx_g = _take(len(gen), BREAKDOWN_ROWS, rng)
    r = real if idx_r is None else real[idx_r]
    g = gen if idx_g is None else gen[idx_g]
    w_r = real_weights if idx_r is None else _sel(real_weights, idx_r)
    w_g = gen_weights if idx_g is None else _sel(gen_weights, idx_g)
    per_feature = []
    for j, name in enumerate(list(feature_names)[:PER_FEATURE_AUC_LIMIT]):
        auc = classifier_auc(r[:, [j]], g[:, [j]], seed=seed, real_weights=w_r,
                             gen_weights=w_g, max_iter=BREAKDOWN_MAX_ITER)["auc"]
        per_feature.append({"feature": name, "auc": auc})
    ranked = [m for m in per_feature if m["auc"] is not None]
    return {
        "per_feature": per_feature,
        "features_joint": _f(features_joint) if features_joint is not None else None,
        "with_conditions": _f(with_conditions) if with_conditions is not None else None,
        "worst_feature": max(ranked, key=lambda m: m["auc"])["feature"] if ranked else None,
        "per_feature_budget": f"HistGradientBoostingClassifier(max_iter={BREAKDOWN_MAX_ITER}) "
                              f"on each feature alone, <= {BREAKDOWN_ROWS} rows a side, the "
                              f"first {PER_FEATURE_AUC_LIMIT} features",
        "reading": "per-feature AUCs near 0.5 with a joint AUC well above: the marginals are "
                   "right, the dependence between features is not; features_joint near 0.5 "
                   "with with_conditions above: the features do not follow the conditions",
    }


def binned_metrics(real: np.ndarray, gen: np.ndarray, real_cond: np.ndarray,
                   gen_cond: np.ndarray, feature_names: Sequence[str],
                   condition_names: Sequence[str], n_bins: int = N_BINS,
                   categories: dict[str, list] | None = None,
                   real_weights: np.ndarray | None = None,
                   gen_weights: np.ndarray | None = None) -> dict[str, list]:
    """For each condition: quantile bins of the real rows; in each bin the per-feature W1, KS
    and means of the real and generated rows whose condition falls in it (weighted by the
    rows' weights where given). A categorical
    condition (in `categories`: its values; its column holds codes 0..K-1) gets one bin per
    category instead, with `"category": value` (low = high = centre = the code)."""
    out: dict[str, list] = {}
    for c, cname in enumerate(condition_names):
        if categories and cname in categories:
            out[cname] = _category_bins(real, gen, real_cond[:, c], gen_cond[:, c],
                                        feature_names, categories[cname],
                                        real_weights, gen_weights)
            continue
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
                "features": feature_metrics(real[in_r], gen[in_g], feature_names,
                                            _sel(real_weights, in_r), _sel(gen_weights, in_g)),
            })
        out[cname] = bins
    return out


def _category_bins(real: np.ndarray, gen: np.ndarray, real_codes: np.ndarray,
                   gen_codes: np.ndarray, feature_names: Sequence[str],
                   values: Sequence[Any], real_weights: np.ndarray | None = None,
                   gen_weights: np.ndarray | None = None) -> list[dict]:
    """One bin per category (codes 0..K-1); categories with fewer than 2 rows are left out."""
    bins = []
    for code, value in enumerate(values):
        in_r, in_g = real_codes == code, gen_codes == code
        if in_r.sum() < 2 or in_g.sum() < 2:
            continue
        bins.append({
            "category": value, "low": float(code), "high": float(code), "centre": float(code),
            "n_real": int(in_r.sum()), "n_generated": int(in_g.sum()),
            "features": feature_metrics(real[in_r], gen[in_g], feature_names,
                                        _sel(real_weights, in_r), _sel(gen_weights, in_g)),
        })
    return bins


def _subsample(x: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    return x if len(x) <= n else x[rng.choice(len(x), n, replace=False)]


def _take(n_rows: int, n: int, rng: np.random.Generator) -> np.ndarray | None:
    """Indices of n of n_rows rows drawn without replacement, or None when n_rows <= n."""
    return None if n_rows <= n else rng.choice(n_rows, n, replace=False)


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
    categories: dict[str, list] | None = None,
    weights: np.ndarray | None = None,
    gen_weights: np.ndarray | None = None,
) -> dict[str, Any]:
    """The report as a JSON-able dict. `real`, `gen` [N, F] in physical units; for conditional
    models `real_cond`, `gen_cond` [N, C] (gen drawn at the real rows' conditions).

    `weights` [N]: per-event weights of the real rows (sWeights, signed allowed). `gen_weights`
    [M]: those of the generated rows; None means the real rows' weights, row for row, when the
    model is conditional and N == M (generated row i drawn at the conditions of real row i),
    else unweighted generated rows (an unconditional generator's rows do not belong to any
    event)."""
    tic = time.perf_counter()
    rng = np.random.default_rng(seed)
    conditional = bool(condition_names) and real_cond is not None and gen_cond is not None
    w_real = _as_weights(weights, len(real), "weights")
    if gen_weights is None and w_real is not None and conditional and len(gen) == len(real):
        w_gen: np.ndarray | None = w_real
        gen_weights_source = "the real rows' weights, row for row (drawn at their conditions)"
    else:
        w_gen = _as_weights(gen_weights, len(gen), "gen_weights")
        gen_weights_source = "unweighted" if w_gen is None else "given"
    weighted = w_real is not None or w_gen is not None
    # generated rows that carry the real rows' weights row for row: subsample the same rows
    paired = w_real is not None and w_gen is w_real
    idx_real = None
    if len(real) > MAX_ROWS:
        idx_real = idx = rng.choice(len(real), MAX_ROWS, replace=False)
        real = real[idx]
        real_cond = real_cond[idx] if real_cond is not None else None
        w_real = _sel(w_real, idx)
    if len(gen) > MAX_ROWS:
        idx = idx_real if paired and idx_real is not None else rng.choice(
            len(gen), MAX_ROWS, replace=False)
        gen = gen[idx]
        gen_cond = gen_cond[idx] if gen_cond is not None else None
        w_gen = _sel(w_gen, idx)
    per_feature = feature_metrics(real, gen, feature_names, w_real, w_gen)
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
        "weighted": weighted,
        "correlation_difference": correlation_difference(real, gen, w_real, w_gen),
        "energy_distance": {
            "value": _f(energy_distance(real, gen, seed=seed, real_weights=w_real,
                                        gen_weights=w_gen)),
            "definition": "Szekely-Rizzo D^2 = 2E|X-Y| - E|X-X'| - E|Y-Y'|, Euclidean, on "
                          f"features standardised by the real rows, <= {ENERGY_ROWS} rows each"
                          + ("; weighted V-statistics" if weighted else ""),
        },
    }
    if weighted:
        report["weighting"] = {
            "real": "given" if w_real is not None else "unweighted",
            "generated": gen_weights_source,
            "n_negative_real": int((w_real < 0).sum()) if w_real is not None else 0,
            "n_eff_real": _f(effective_sample_size(w_real)) if w_real is not None else None,
            "n_eff_generated": _f(effective_sample_size(w_gen)) if w_gen is not None
            else None,
            "expectations": "sum_i w_i f(x_i) / sum_i w_i; W1 and KS on weighted ECDFs",
            "ks_pvalue": "asymptotic Kolmogorov distribution with Kish's effective sample "
                         "sizes n_eff = (sum w)^2 / sum w^2",
            "classifier": "fitted with |w|; test-split AUC: weighted Mann-Whitney with the "
                          "signed weights",
        }
    if len(feature_names) <= PER_FEATURE_MATRIX_LIMIT:
        report["per_feature"] = per_feature
    x_real = np.concatenate([real_cond, real], 1) if conditional else real
    x_gen = np.concatenate([gen_cond, gen], 1) if conditional else gen
    report["classifier_test"] = classifier_auc(x_real, x_gen, seed=seed, real_weights=w_real,
                                               gen_weights=w_gen)
    auc = report["classifier_test"]["auc"]
    report["classifier_breakdown"] = classifier_breakdown(
        real, gen, feature_names, real_cond=real_cond if conditional else None,
        gen_cond=gen_cond if conditional else None, real_weights=w_real, gen_weights=w_gen,
        seed=seed, with_conditions=auc if conditional else None,
        features_joint=None if conditional else auc)
    if conditional and binned:
        assert real_cond is not None and gen_cond is not None
        report["binned"] = binned_metrics(real, gen, real_cond, gen_cond, feature_names,
                                          condition_names, n_bins, categories=categories,
                                          real_weights=w_real, gen_weights=w_gen)
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
