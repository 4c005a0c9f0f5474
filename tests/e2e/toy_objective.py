"""A toy objective declared in one file, outside models/objectives: the test of "adding an
objective takes one file" (tests/e2e/test_toy_objective.py loads it with
GAN_OBJECTIVE_MODULES=tests.e2e.toy_objective in the API and the worker).

A linear critic game with a quadratic penalty on the critic's outputs (a Fisher-GAN-like
regulariser): the critic minimises E V(G(z)) - E V(x) + lam E [V(x)^2 + V(G(z))^2] / 2."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from models.objectives.base import ScalarCritic, critic_out, logs, wmean
from models.objectives.params import Float, ObjectiveParams, Recipe, default_recipe
from models.objectives.registry import register


class ToyParams(ObjectiveParams):
    """The toy: a linear critic game with a quadratic penalty on the critic's outputs."""

    name: Literal["toy-quadratic"]
    lam: Float | None = Field(None, gt=0, le=100)
    recipes: ClassVar[dict[str, Recipe]] = {
        "default": default_recipe("the toy's settings", objective={"lam": 1.0}),
        "paper": default_recipe("no paper: the same", objective={"lam": 1.0}),
    }


@register(ToyParams)
class Toy(ScalarCritic):
    signed_weights_ok = True

    def __init__(self, params: ToyParams) -> None:
        self.params = params

    def critic_loss(self, critic, real, fakes, cond, w):
        v_real = critic_out(critic, real, cond)
        v_fake = critic_out(critic, fakes[0].detach(), cond)
        gap = wmean(v_real, w) - wmean(v_fake, w)
        square = 0.5 * (wmean(v_real**2, w) + wmean(v_fake**2, w))
        return -gap + self.params.lam * square, logs(gap=gap)

    def generator_loss(self, critic, real, fakes, cond, w):
        return -wmean(critic_out(critic, fakes[0], cond), w), {}
