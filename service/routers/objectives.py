"""What a job can ask for: the objectives, their parameters and their recipes
(GET /v1/objectives). Read from the objectives' registry, so it cannot drift from what the
worker runs."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from models.objectives import PARAMS
from models.objectives.registry import describe
from models.spec import TRAINING_FALLBACKS

router = APIRouter(prefix="/v1/objectives", tags=["objectives"])


@router.get("")
def list_objectives() -> dict[str, Any]:
    """Every objective with its parameters and recipes. A job's `training.recipe` (default
    "default") fills each field the spec leaves out; fields no recipe names take
    `fallbacks`."""
    return {
        "objectives": {name: describe(params) for name, params in PARAMS.items()},
        "fallbacks": TRAINING_FALLBACKS,
    }
