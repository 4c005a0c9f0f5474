"""Non-saturating GAN (Goodfellow et al. 2014, section 3): the generator minimises
-E log D(G(z)) = E softplus(-V(G(z))) instead of E log(1 - D(G(z))). Weighted expectations;
not sound with negative weights."""

from __future__ import annotations

from typing import ClassVar, Literal

from models.objectives.base import ScalarCritic, critic_out, wmean
from models.objectives.lazy import F
from models.objectives.minimax import discriminator_loss
from models.objectives.params import ObjectiveParams, Recipe, default_recipe, paper_recipe
from models.objectives.registry import register


class NSGANParams(ObjectiveParams):
    """Non-saturating GAN: the generator minimises -E log D(G(z))."""

    name: Literal["nsgan"]
    recipes: ClassVar[dict[str, Recipe]] = {
        "default": default_recipe("leaky-ReLU critic, Adam 5e-4 (0.5, 0.999), batch 256, "
                                  "linear lr decay, EMA 0.99",
                                  critic={"activation": "leaky_relu"}, batch_size=256),
        "paper": paper_recipe("DCGAN (Radford 2015): Adam 2e-4, beta1 0.5", optimizer="adam",
                              lr_g=2e-4, lr_d=2e-4, betas=(0.5, 0.999), n_critic=1),
    }


@register(NSGANParams)
class NSGAN(ScalarCritic):
    def __init__(self, params: NSGANParams) -> None:
        self.params = params

    def critic_loss(self, critic, real, fakes, cond, w):
        return discriminator_loss(critic, real, fakes[0], cond, w)

    def generator_loss(self, critic, real, fakes, cond, w):
        return wmean(F.softplus(-critic_out(critic, fakes[0], cond)), w), {}
