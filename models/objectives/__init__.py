"""Objectives by name. Adding one: a params class in models/spec.py, a file here, a line below."""

from __future__ import annotations

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


__all__ = ["REGISTRY", "Objective", "get_objective"]
