"""Hinge loss (Lim & Ye 2017; Miyato et al. 2018, SN-GAN): critic minimises
E relu(1 - V(x)) + E relu(1 + V(G(z))); the generator minimises -E V(G(z)). Weighted
expectations; the relu terms make the critic loss unbounded below with negative weights."""

from __future__ import annotations

from typing import ClassVar, Literal

from models.objectives.base import ScalarCritic, critic_out, logs, wmean
from models.objectives.lazy import F
from models.objectives.params import ObjectiveParams, Recipe, default_recipe, paper_recipe
from models.objectives.registry import register


class HingeParams(ObjectiveParams):
    """Hinge loss (Lim & Ye 2017; Miyato et al. 2018): D min E relu(1-V(x)) + E relu(1+V(G(z)));
    its critic is spectrally normalised unless the spec says otherwise (SN-GAN)."""

    name: Literal["hinge"]
    recipes: ClassVar[dict[str, Recipe]] = {
        "default": default_recipe("spectral-norm leaky-ReLU critic, Adam 5e-4 (0.5, 0.999), "
                                  "batch 256, linear lr decay, EMA 0.99",
                                  critic={"spectral_norm": True, "activation": "leaky_relu"},
                                  batch_size=256),
        "paper": paper_recipe("Miyato 2018 (SN-GAN): spectral norm, Adam 2e-4 (0, 0.9), n_dis 5",
                              critic={"spectral_norm": True}, optimizer="adam", lr_g=2e-4,
                              lr_d=2e-4, betas=(0.0, 0.9), n_critic=5, batch_size=64),
    }


@register(HingeParams)
class Hinge(ScalarCritic):
    def __init__(self, params: HingeParams) -> None:
        self.params = params

    def critic_loss(self, critic, real, fakes, cond, w):
        v_real = critic_out(critic, real, cond)
        v_fake = critic_out(critic, fakes[0].detach(), cond)
        loss = wmean(F.relu(1 - v_real), w) + wmean(F.relu(1 + v_fake), w)
        return loss, logs(d_real=v_real.mean(), d_fake=v_fake.mean())

    def generator_loss(self, critic, real, fakes, cond, w):
        return -wmean(critic_out(critic, fakes[0], cond), w), {}
