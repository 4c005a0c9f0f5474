"""WGAN with weight clipping (Arjovsky et al. 2017, arXiv:1701.07875, Algorithm 1).

Critic minimises E V(G(z)) - E V(x), then every critic parameter is clipped to [-c, c]; the
generator minimises -E V(G(z)). The critic loss tracks the Wasserstein-1 estimate (negated).
Both expectations are weighted (linear in the weights: sound with signed sWeights).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, Literal

from pydantic import Field

from models.objectives.base import ScalarCritic, critic_out, logs, wmean
from models.objectives.lazy import torch
from models.objectives.params import (
    Float,
    ObjectiveParams,
    Recipe,
    default_recipe,
    paper_recipe,
)
from models.objectives.registry import register

if TYPE_CHECKING:
    from torch import nn


class WGANParams(ObjectiveParams):
    """WGAN with weight clipping (Arjovsky et al. 2017): every critic weight in [-clip, clip]."""

    name: Literal["wgan"]
    clip: Float | None = Field(None, gt=0, le=1e3)
    recipes: ClassVar[dict[str, Recipe]] = {
        "default": default_recipe("validated on the toy sets: RMSProp 5e-4 (momentum-free, as "
                                  "the paper advises for clipping), n_critic 5, linear decay, "
                                  "EMA", objective={"clip": 0.01}, optimizer="rmsprop",
                                  n_critic=5, batch_size=256),
        "paper": paper_recipe("Arjovsky 2017: RMSProp 5e-5, c=0.01, m=64, n_critic 5",
                              objective={"clip": 0.01}, optimizer="rmsprop", lr_g=5e-5,
                              lr_d=5e-5, n_critic=5, batch_size=64),
    }


@register(WGANParams)
class WGAN(ScalarCritic):
    signed_weights_ok = True

    def __init__(self, params: WGANParams) -> None:
        self.params = params

    def critic_loss(self, critic, real, fakes, cond, w):
        v_real = critic_out(critic, real, cond)
        v_fake = critic_out(critic, fakes[0].detach(), cond)
        w1 = wmean(v_real, w) - wmean(v_fake, w)
        return -w1, logs(wasserstein=w1)

    def generator_loss(self, critic, real, fakes, cond, w):
        return -wmean(critic_out(critic, fakes[0], cond), w), {}

    def after_critic_step(self, critic: nn.Module) -> None:
        c = self.params.clip
        assert c is not None  # filled from the recipe when the spec is validated
        with torch.no_grad():
            for p in critic.parameters():
                p.clamp_(-c, c)
