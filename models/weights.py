"""Per-event weights: signed sWeights replaced by their regression on the observables.

An sPlot fit gives each event a signed weight whose expectation given the observables is the
signal probability, E[w | x, a] = P(signal | x, a) in [0, 1] (Borisyak & Kazeev, "Machine
learning on data with sPlot background subtraction", JINST 14 (2019) P08020). Training on
E[w | x, a] instead of w leaves every weighted expectation unchanged, E[w f] = E[E[w|x,a] f],
but the weights are no longer negative: far less variance per batch, and the classifier-type
losses become bounded again.

The regressor is a small MLP fitted by least squares (whose minimiser is E[w | x]) with a
bounded output, s * sigmoid(net(x)), s > 0 learnt with it: the prediction never leaves
[0, s], so no clipping at 0 biases it where the signal probability is small. Measured on
splot-toy (docs/quality.md): its mean absolute error to the true P(signal | x) is 0.013,
against 0.036 for gradient-boosted trees clipped at 0, whose leaks into the background-rich
tails widened the weighted law by 5-10%.

The regression is cross-fitted: the events are split in `folds` parts, and each part's
weights are predicted by a net fitted on the others, so no event's own (noisy) weight is
memorised into its prediction.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from models.datasets.base import DataError
from models.objectives import signed_weight_objectives
from models.objectives.registry import get as get_entry

FOLDS = 5
WIDTH = 64
BATCH = 1024
EPOCHS = 30  # passes over a fold's rows, within the step bounds below
MIN_STEPS, MAX_STEPS = 300, 3000
LEARNING_RATE = 3e-3


class _BoundedNet(nn.Module):
    """x [N, D] (standardised) -> s * sigmoid(mlp(x)) [N], s = softplus(theta) starting at 1."""

    def __init__(self, n_inputs: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(n_inputs, WIDTH), nn.SiLU(), nn.Linear(WIDTH, WIDTH),
                                 nn.SiLU(), nn.Linear(WIDTH, 1))
        self.theta = nn.Parameter(torch.tensor(float(np.log(np.e - 1))))  # softplus = 1

    def forward(self, x: Tensor) -> Tensor:
        return nn.functional.softplus(self.theta) * torch.sigmoid(self.mlp(x).squeeze(-1))


class _FoldModel:
    def __init__(self, x: np.ndarray, w: np.ndarray, seed: int) -> None:
        self.mean = x.mean(0)
        self.scale = np.where(x.std(0) > 0, x.std(0), 1.0)
        gen = torch.Generator().manual_seed(seed)
        torch_state = torch.get_rng_state()
        torch.manual_seed(seed)  # the net's initial weights
        self.net = _BoundedNet(x.shape[1])
        torch.set_rng_state(torch_state)  # the caller's random stream is left as it was
        inputs = self._inputs(x)
        target = torch.as_tensor(w, dtype=torch.float32)
        n = len(inputs)
        batch = min(BATCH, n)
        steps = int(np.clip(EPOCHS * n // batch, MIN_STEPS, MAX_STEPS))
        opt = torch.optim.Adam(self.net.parameters(), lr=LEARNING_RATE)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: 1 - i / steps)
        for _ in range(steps):
            idx = torch.randint(0, n, (batch,), generator=gen)
            loss = ((self.net(inputs[idx]) - target[idx]) ** 2).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        self.net.eval()

    def _inputs(self, x: np.ndarray) -> Tensor:
        return torch.as_tensor((x - self.mean) / self.scale, dtype=torch.float32)

    @torch.no_grad()
    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.net(self._inputs(x)).double().numpy()


class WeightRegression:
    """E[w | observables], cross-fitted on the training events: `fitted` [N] are the training
    events' own predictions (each from the fold that did not see it); `predict` gives other
    events (the validation rows) the mean prediction of every fold's net."""

    def __init__(self, observables: np.ndarray, weights: np.ndarray, *, seed: int = 0,
                 folds: int = FOLDS) -> None:
        x = np.asarray(observables, dtype=np.float64).reshape(len(weights), -1)
        w = np.asarray(weights, dtype=np.float64)
        fold_of = np.random.default_rng(seed).permutation(len(w)) % folds
        fitted = np.empty(len(w))
        self.models: list[_FoldModel] = []
        for k in range(folds):
            held = fold_of == k
            model = _FoldModel(x[~held], w[~held], seed=seed * folds + k)
            fitted[held] = model.predict(x[held])
            self.models.append(model)
        self.fitted = fitted

    def predict(self, observables: np.ndarray) -> np.ndarray:
        x = np.asarray(observables, dtype=np.float64)
        return np.mean([m.predict(x) for m in self.models], axis=0)


def check_weights(objective_name: str, weights: np.ndarray | None) -> None:
    """Raise models.datasets.base.DataError unless `weights` (raw per-event weights, or None)
    can train `objective_name`: they must be finite and sum to > 0, and may be negative only
    for objectives that are sound with signed weights (WGAN, WGAN-GP, Cramér; losses built on
    log D or (D - t)^2 are unbounded below for the discriminator where a weight is negative)."""
    if weights is None:
        return
    objective = get_entry(objective_name).objective
    w = np.asarray(weights, dtype=np.float64).reshape(-1)
    n = int(w.size)
    bad = ~np.isfinite(w)
    if bad.any():
        raise DataError(f"{int(bad.sum())} of {n} weights are not finite (NaN or infinite)")
    total = float(w.sum())
    if not total > 0:
        raise DataError(f"the {n} weights sum to {total:g}: their sum must be positive")
    n_neg = int((w < 0).sum())
    if n_neg and not getattr(objective, "signed_weights_ok", False):
        sound = ", ".join(signed_weight_objectives())
        raise DataError(
            f"{n_neg} of {n} weights are negative: objective {objective_name}'s loss is "
            f"unbounded below for the discriminator with negative weights; the objectives "
            f"sound with signed weights are {sound}; or train on their regression E[w | a, x], "
            f"which is never negative (dataset.regress_weights: true, the default for signed "
            f"weights)"
        )


def has_negative(weights: np.ndarray | None) -> bool:
    return weights is not None and bool((np.asarray(weights) < 0).any())
