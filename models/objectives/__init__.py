"""Objectives by name. Adding one: a params class in models/spec.py, a file here, a line below."""

from __future__ import annotations

import numpy as np

from models.objectives.base import Objective
from models.objectives.cramer import Cramer
from models.objectives.fgan import FGAN
from models.objectives.hinge import Hinge
from models.objectives.lsgan import LSGAN
from models.objectives.minimax import Minimax
from models.objectives.nsgan import NSGAN
from models.objectives.wgan import WGAN
from models.objectives.wgan_gp import WGANGP

REGISTRY: dict[str, type] = {
    "minimax": Minimax,
    "nsgan": NSGAN,
    "lsgan": LSGAN,
    "fgan": FGAN,
    "wgan": WGAN,
    "wgan-gp": WGANGP,
    "cramer": Cramer,
    "hinge": Hinge,
}


def get_objective(params) -> Objective:
    """The objective for a spec's `objective` params (a models.spec *Params instance)."""
    return REGISTRY[params.name](params)


def signed_weight_objectives() -> list[str]:
    """Names of the objectives that stay sound with negative per-event weights."""
    return [name for name, cls in REGISTRY.items() if getattr(cls, "signed_weights_ok", False)]


def check_weights(objective_name: str, weights: np.ndarray | None) -> None:
    """Raise models.datasets.base.DataError unless `weights` (raw per-event weights, or None)
    can train `objective_name`: they must be finite and sum to > 0, and may be negative only
    for objectives that are sound with signed weights (WGAN, WGAN-GP, Cramér; losses built on
    log D or (D - t)^2 are unbounded below for the discriminator where a weight is negative)."""
    from models.datasets.base import DataError

    if weights is None:
        return
    if objective_name not in REGISTRY:
        raise ValueError(f"unknown objective {objective_name!r}; known: {', '.join(REGISTRY)}")
    w = np.asarray(weights, dtype=np.float64).reshape(-1)
    n = int(w.size)
    bad = ~np.isfinite(w)
    if bad.any():
        raise DataError(f"{int(bad.sum())} of {n} weights are not finite (NaN or infinite)")
    total = float(w.sum())
    if not total > 0:
        raise DataError(f"the {n} weights sum to {total:g}: their sum must be positive")
    n_neg = int((w < 0).sum())
    if n_neg and not getattr(REGISTRY[objective_name], "signed_weights_ok", False):
        sound = ", ".join(signed_weight_objectives())
        raise DataError(
            f"{n_neg} of {n} weights are negative: objective {objective_name}'s loss is "
            f"unbounded below for the discriminator with negative weights; the objectives "
            f"sound with signed weights are {sound}; or train on their regression E[w | a, x], "
            f"which is never negative (dataset.regress_weights: true, the default for signed "
            f"weights)"
        )


__all__ = ["REGISTRY", "Objective", "check_weights", "get_objective", "signed_weight_objectives"]
