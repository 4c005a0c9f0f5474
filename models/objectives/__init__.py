"""Objectives by name. Each lives in one file that declares its parameters (with their
recipes) and its losses, and registers both (`models.objectives.registry.register`); the job
spec's union of parameters, the names and the recipes are read from the registry.

Adding an objective: one file here and one line in OBJECTIVE_MODULES below, or, without
touching this package, a module named in the environment variable GAN_OBJECTIVE_MODULES
(comma-separated import paths), imported by the API and the worker alike. Torch-free: the
losses reach torch only when they run (models.objectives.lazy).
"""

from __future__ import annotations

import importlib
import os

from models.objectives.base import Objective
from models.objectives.params import ObjectiveParams
from models.objectives.registry import ENTRIES, get

OBJECTIVE_MODULES = (
    "models.objectives.minimax",
    "models.objectives.nsgan",
    "models.objectives.lsgan",
    "models.objectives.fgan",
    "models.objectives.wgan",
    "models.objectives.wgan_gp",
    "models.objectives.cramer",
    "models.objectives.hinge",
)
EXTRA_MODULES_VARIABLE = "GAN_OBJECTIVE_MODULES"


def _load() -> None:
    extra = [m.strip() for m in os.environ.get(EXTRA_MODULES_VARIABLE, "").split(",")]
    for module in (*OBJECTIVE_MODULES, *(m for m in extra if m)):
        importlib.import_module(module)


_load()

# name -> the loss class; name -> the parameters' class (what a job spec's `objective` is).
REGISTRY: dict[str, type] = {name: entry.objective for name, entry in ENTRIES.items()}
PARAMS: dict[str, type[ObjectiveParams]] = {name: e.params for name, e in ENTRIES.items()}


def get_objective(params: ObjectiveParams) -> Objective:
    """The objective for a spec's `objective` params."""
    entry = get(params.objective_name())
    objective: Objective = entry.objective(params)
    return objective


def signed_weight_objectives() -> list[str]:
    """Names of the objectives that stay sound with negative per-event weights."""
    return [name for name, cls in REGISTRY.items() if getattr(cls, "signed_weights_ok", False)]


__all__ = ["PARAMS", "REGISTRY", "Objective", "get_objective", "signed_weight_objectives"]
