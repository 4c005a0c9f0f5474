"""Per-event weights: signed sWeights replaced by their regression on the observables.

An sPlot fit gives each event a signed weight whose expectation given the observables is the
signal probability, E[w | x, a] = P(signal | x, a) in [0, 1] (Borisyak & Kazeev, "Machine
learning on data with sPlot background subtraction", JINST 14 (2019) P08020). Training on
E[w | x, a] instead of w leaves every weighted expectation unchanged, E[w f] = E[E[w|x,a] f],
but the weights are no longer negative: far less variance per batch, and the classifier-type
losses become bounded again.

The regression is cross-fitted: the events are split in `folds` parts, and each part's
weights are predicted by gradient-boosted trees fitted on the others, so no event's own
(noisy) weight is memorised into its prediction. Predictions below 0 are set to 0.
"""

from __future__ import annotations

import numpy as np

FOLDS = 5
MAX_ROWS_PER_FIT = 200_000  # rows each fold's regressor is fitted on, at most


class WeightRegression:
    """E[w | observables], cross-fitted on the training events: `fitted` [N] are the training
    events' own predictions (each from the folds that did not see it); `predict` gives other
    events' (the validation rows') the mean prediction of every fold's regressor."""

    def __init__(self, observables: np.ndarray, weights: np.ndarray, *, seed: int = 0,
                 folds: int = FOLDS) -> None:
        from sklearn.ensemble import HistGradientBoostingRegressor

        x = np.asarray(observables, dtype=np.float64)
        w = np.asarray(weights, dtype=np.float64)
        rng = np.random.default_rng(seed)
        fold_of = rng.permutation(len(w)) % folds
        fitted = np.empty(len(w))
        self.models = []
        for k in range(folds):
            fit = np.flatnonzero(fold_of != k)
            if len(fit) > MAX_ROWS_PER_FIT:
                fit = rng.choice(fit, MAX_ROWS_PER_FIT, replace=False)
            # Few, large leaves: the target is a smooth probability under heavy noise.
            model = HistGradientBoostingRegressor(max_iter=100, learning_rate=0.05,
                                                  max_leaf_nodes=15, min_samples_leaf=200,
                                                  random_state=seed + k)
            model.fit(x[fit], w[fit])
            held = fold_of == k
            fitted[held] = model.predict(x[held])
            self.models.append(model)
        self.fitted = np.clip(fitted, 0.0, None)

    def predict(self, observables: np.ndarray) -> np.ndarray:
        x = np.asarray(observables, dtype=np.float64)
        mean = np.mean([m.predict(x) for m in self.models], axis=0)
        return np.clip(mean, 0.0, None)


def has_negative(weights: np.ndarray | None) -> bool:
    return weights is not None and bool((np.asarray(weights) < 0).any())
