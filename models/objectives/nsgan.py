"""Non-saturating GAN (Goodfellow et al. 2014, section 3): the generator minimises
-E log D(G(z)) = E softplus(-V(G(z))) instead of E log(1 - D(G(z))). Weighted expectations;
not sound with negative weights."""

from __future__ import annotations

import torch.nn.functional as F

from models.objectives.base import ScalarCritic, critic_out, wmean
from models.objectives.minimax import discriminator_loss
from models.spec import NSGANParams


class NSGAN(ScalarCritic):
    def __init__(self, params: NSGANParams) -> None:
        self.params = params

    def critic_loss(self, critic, real, fakes, cond, w):
        return discriminator_loss(critic, real, fakes[0], cond, w)

    def generator_loss(self, critic, real, fakes, cond, w):
        return wmean(F.softplus(-critic_out(critic, fakes[0], cond)), w), {}
