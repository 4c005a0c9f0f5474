"""WGAN with weight clipping (Arjovsky et al. 2017, arXiv:1701.07875, Algorithm 1).

Critic minimises E V(G(z)) - E V(x), then every critic parameter is clipped to [-c, c]; the
generator minimises -E V(G(z)). The critic loss tracks the Wasserstein-1 estimate (negated).
Both expectations are weighted (linear in the weights: sound with signed sWeights).
"""

from __future__ import annotations

import torch
from torch import nn

from models.objectives.base import ScalarCritic, critic_out, wmean
from models.spec import WGANParams


class WGAN(ScalarCritic):
    signed_weights_ok = True

    def __init__(self, params: WGANParams) -> None:
        self.params = params

    def critic_loss(self, critic, real, fakes, cond, w):
        v_real = critic_out(critic, real, cond)
        v_fake = critic_out(critic, fakes[0].detach(), cond)
        w1 = wmean(v_real, w) - wmean(v_fake, w)
        return -w1, {"wasserstein": w1.item()}

    def generator_loss(self, critic, real, fakes, cond, w):
        return -wmean(critic_out(critic, fakes[0], cond), w), {}

    @torch.no_grad()
    def after_critic_step(self, critic: nn.Module) -> None:
        c = self.params.clip
        for p in critic.parameters():
            p.clamp_(-c, c)
