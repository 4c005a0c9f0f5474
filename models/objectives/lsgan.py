"""Least-squares GAN (Mao et al. 2017, arXiv:1611.04076), targets real 1, fake 0.

Critic: 1/2 E (V(x) - 1)^2 + 1/2 E V(G(z))^2; generator: 1/2 E (V(G(z)) - 1)^2. Weighted
expectations; not sound with negative weights.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from models.objectives.base import ScalarCritic, critic_out, logs, wmean
from models.objectives.params import ObjectiveParams, Recipe, default_recipe, paper_recipe
from models.objectives.registry import register


class LSGANParams(ObjectiveParams):
    """Least-squares GAN (Mao et al. 2017), targets a=0 (fake), b=1 (real), c=1."""

    name: Literal["lsgan"]
    recipes: ClassVar[dict[str, Recipe]] = {
        "default": default_recipe("ReLU critic, Adam 5e-4 (0.5, 0.999), batch 256, linear lr "
                                  "decay, EMA 0.99", batch_size=256),
        "paper": paper_recipe("Mao 2017: Adam 2e-4, beta1 0.5", optimizer="adam", lr_g=2e-4,
                              lr_d=2e-4, betas=(0.5, 0.999), n_critic=1),
    }


@register(LSGANParams)
class LSGAN(ScalarCritic):
    def __init__(self, params: LSGANParams) -> None:
        self.params = params

    def critic_loss(self, critic, real, fakes, cond, w):
        v_real = critic_out(critic, real, cond)
        v_fake = critic_out(critic, fakes[0].detach(), cond)
        loss = 0.5 * wmean((v_real - 1) ** 2, w) + 0.5 * wmean(v_fake**2, w)
        return loss, logs(d_real=v_real.mean(), d_fake=v_fake.mean())

    def generator_loss(self, critic, real, fakes, cond, w):
        return 0.5 * wmean((critic_out(critic, fakes[0], cond) - 1) ** 2, w), {}
