"""Cramér GAN (Bellemare et al. 2017, arXiv:1705.10743, Algorithm 1).

The critic h maps x to R^k. With two independent generated batches x_g, x_g' and a real
batch x_r:  f(x) = ||h(x) - h(x_g')|| - ||h(x)||,
generator:  ||h(x_r) - h(x_g)|| + ||h(x_r) - h(x_g')|| - ||h(x_g) - h(x_g')||  (energy distance),
critic:     -(E f(x_r) - E f(x_g)) + lambda E (||grad f(x_hat)|| - 1)^2.
Its gradients are unbiased in the sample (the point of seed 002). The rows of x_r, x_g, x_g' are
aligned (drawn at the same conditions), so every term is weighted by the row's weight w; the
gradient penalty is a plain mean over the interpolates. Sound with signed weights.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, Literal

from pydantic import Field

from models.objectives.base import (
    gradient_norms,
    interpolate,
    logs,
    penalty,
    uncompiled,
    wmean,
)
from models.objectives.lazy import torch
from models.objectives.params import (
    MAX_PENALTY,
    Float,
    Int,
    ObjectiveParams,
    Recipe,
    default_recipe,
    paper_recipe,
)
from models.objectives.registry import register

if TYPE_CHECKING:
    from torch import Tensor


class CramerParams(ObjectiveParams):
    """Cramér GAN (Bellemare et al. 2017, Algorithm 1); the critic maps to R^feature_dim."""

    name: Literal["cramer"]
    gp_lambda: Float | None = Field(None, ge=0, le=MAX_PENALTY)
    feature_dim: Int = Field(256, ge=1, le=4096)
    recipes: ClassVar[dict[str, Recipe]] = {
        "default": default_recipe("validated on the toy sets: gp_lambda 0.01, one critic step "
                                  "at twice the generator's lr, linear lr decay, EMA",
                                  objective={"gp_lambda": 0.01}, lr_d=1e-3, batch_size=512,
                                  betas=(0.0, 0.9)),
        "paper": paper_recipe("Bellemare 2017: lambda 10, n_critic 5, Adam 1e-4 (0, 0.9)",
                              objective={"gp_lambda": 10.0}, optimizer="adam", lr_g=1e-4,
                              lr_d=1e-4, betas=(0.0, 0.9), n_critic=5),
    }


def _norm(v: Tensor) -> Tensor:
    # eps keeps the gradient finite where two features coincide.
    return torch.sqrt((v**2).sum(dim=-1) + 1e-12)


@register(CramerParams)
class Cramer:
    n_fakes = 2
    signed_weights_ok = True

    def __init__(self, params: CramerParams) -> None:
        self.params = params
        self.critic_dim = params.feature_dim

    def _f(self, h_x: Tensor, h_anchor: Tensor) -> Tensor:
        return _norm(h_x - h_anchor) - _norm(h_x)

    def critic_loss(self, critic, real, fakes, cond, w):
        fake, fake2 = fakes[0].detach(), fakes[1].detach()
        h_anchor = critic(fake2, cond)
        surrogate = wmean(self._f(critic(real, cond), h_anchor), w) - wmean(
            self._f(critic(fake, cond), h_anchor), w
        )
        x_hat = interpolate(real, fake)
        norms = gradient_norms(self._f(uncompiled(critic)(x_hat, cond), h_anchor), x_hat)
        # A regulariser on the interpolates, not an expectation under the data: plain mean.
        gp = penalty(norms, one_sided=False).mean()
        loss = -surrogate + self.params.gp_lambda * gp
        return loss, logs(cramer_surrogate=surrogate, gradient_penalty=gp)

    def generator_loss(self, critic, real, fakes, cond, w):
        h_r, h_g, h_g2 = critic(real, cond), critic(fakes[0], cond), critic(fakes[1], cond)
        energy = wmean(_norm(h_r - h_g) + _norm(h_r - h_g2) - _norm(h_g - h_g2), w)
        return energy, logs(energy_distance=energy)

    def after_critic_step(self, critic) -> None:
        return None
