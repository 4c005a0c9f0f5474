"""What every objective's parameters share (torch-free: the API validates job specs with it).

Each objective's file declares a pydantic model of its own parameters, told apart by `name`,
with its recipes: named complete sets of settings. "default" holds settings validated on the
toy sets within a CPU budget (what a spec gets when it says nothing; docs/quality.md); "paper"
the objective's published settings. A recipe fills only the fields a spec leaves out (null).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, ClassVar, get_args

from pydantic import BaseModel, ConfigDict, Field, Strict

# Numbers in a spec are numbers: `"steps": true` or `"steps": 5.5` is refused, not read as 1 or
# 5, and every float is finite (JSON's Infinity and NaN are refused: StrictModel).
Int = Annotated[int, Strict()]
Float = Annotated[float, Strict()]
# Upper bounds: far above any sensible value, low enough that no float overflows in training.
MAX_LR = 10.0
MAX_PENALTY = 1e6


class StrictModel(BaseModel):
    """Unknown keys and non-finite floats are errors."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class Recipe(StrictModel):
    """A named set of settings for one objective. Each value fills a field that the spec left
    out (null); a field the spec sets is never overridden. `objective` holds the objective's own
    parameters, `training` fields of TrainingSpec, `critic` fields of the critic's NetSpec."""

    description: str
    objective: dict[str, Any] = Field(default_factory=dict)
    training: dict[str, Any] = Field(default_factory=dict)
    critic: dict[str, Any] = Field(default_factory=dict)


RECIPE_NAMES = ("default", "paper")

# What every objective's "default" recipe shares: the settings validated on the toy sets within
# a CPU budget (docs/quality.md); each objective's default recipe starts from these.
VALIDATED_TRAINING: dict[str, Any] = {
    "optimizer": "adam", "lr_g": 5e-4, "lr_d": 5e-4, "betas": (0.5, 0.999), "n_critic": 1,
    "batch_size": 1024, "lr_schedule": "linear", "ema": 0.99,
}
# What every "paper" recipe shares: the papers train without EMA or lr decay.
PAPER_TRAINING: dict[str, Any] = {
    "batch_size": 256, "lr_schedule": "constant", "ema": 0.0, "betas": (0.9, 0.999),
    "momentum": 0.0,
}


def default_recipe(description: str, objective: dict[str, Any] | None = None,
                   critic: dict[str, Any] | None = None, **training: Any) -> Recipe:
    return Recipe(description=description, objective=objective or {},
                  training=VALIDATED_TRAINING | training, critic=critic or {})


def paper_recipe(description: str, objective: dict[str, Any] | None = None,
                 critic: dict[str, Any] | None = None, **training: Any) -> Recipe:
    return Recipe(description=description, objective=objective or {},
                  training=PAPER_TRAINING | training, critic=critic or {})


class ObjectiveParams(StrictModel):
    """An objective's parameters. Subclasses add `name: Literal["..."]`, their own fields
    (null: the recipe's value) and `recipes`, one per RECIPE_NAMES."""

    recipes: ClassVar[dict[str, Recipe]]
    if TYPE_CHECKING:
        # For type checkers only: a field here would change what pydantic validates.
        name: str

    @classmethod
    def objective_name(cls) -> str:
        return str(get_args(cls.model_fields["name"].annotation)[0])
