"""The objectives by name: each objective's file registers its parameters and its losses with
`@register(ItsParams)` on the loss class. Torch-free."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from models.objectives.params import RECIPE_NAMES, ObjectiveParams


@dataclass(frozen=True)
class Entry:
    params: type[ObjectiveParams]
    objective: type  # built with the params: objective(params) has the Objective interface


ENTRIES: dict[str, Entry] = {}
T = TypeVar("T", bound=type)


def register(params: type[ObjectiveParams]) -> Callable[[T], T]:
    """Class decorator: the decorated loss class is objective `params`' name."""
    name = params.objective_name()
    missing = [r for r in RECIPE_NAMES if r not in getattr(params, "recipes", {})]
    if missing:
        raise TypeError(f"objective {name!r} declares no recipe {missing}")

    def add(objective: T) -> T:
        if name in ENTRIES and ENTRIES[name].objective.__qualname__ != objective.__qualname__:
            raise ValueError(f"objective {name!r} is registered twice")
        ENTRIES[name] = Entry(params=params, objective=objective)
        return objective

    return add


def get(name: str) -> Entry:
    try:
        return ENTRIES[name]
    except KeyError:
        raise ValueError(f"unknown objective {name!r}; known: {', '.join(ENTRIES)}") from None


def describe(params: type[ObjectiveParams]) -> dict[str, Any]:
    """One objective: its doc, its own parameters (JSON schema) and each recipe's values."""
    schema = params.model_json_schema()
    properties = {k: v for k, v in schema.get("properties", {}).items() if k != "name"}
    return {
        "description": " ".join((params.__doc__ or "").split()),
        "parameters": properties,
        "recipes": {name: recipe.model_dump(mode="json")
                    for name, recipe in params.recipes.items()},
    }
