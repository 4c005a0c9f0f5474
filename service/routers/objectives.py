"""What a job can ask for: the objectives, their parameters and their recipes
(GET /v1/objectives). Read from models.spec, so it cannot drift from what the worker runs."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from models.spec import OBJECTIVE_NAMES, OBJECTIVE_PARAMS, TRAINING_FALLBACKS

router = APIRouter(prefix="/v1/objectives", tags=["objectives"])


def describe(params: type) -> dict[str, Any]:
    """One objective: its doc, its own parameters (JSON schema) and each recipe's values."""
    schema = params.model_json_schema()
    properties = {k: v for k, v in schema.get("properties", {}).items() if k != "name"}
    return {
        "description": (params.__doc__ or "").strip(),
        "parameters": properties,
        "recipes": {name: recipe.model_dump(mode="json")
                    for name, recipe in params.recipes.items()},  # type: ignore[attr-defined]
    }


@router.get("")
def list_objectives() -> dict[str, Any]:
    """Every objective with its parameters and recipes. A job's `training.recipe` (default
    "default") fills each field the spec leaves out; fields no recipe names take
    `fallbacks`."""
    return {
        "objectives": {name: describe(params)
                       for name, params in zip(OBJECTIVE_NAMES, OBJECTIVE_PARAMS, strict=True)},
        "fallbacks": TRAINING_FALLBACKS,
    }
