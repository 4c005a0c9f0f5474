"""WGAN with weight clipping (Arjovsky et al. 2017, arXiv:1701.07875, Algorithm 1).

Critic minimises E V(G(z)) - E V(x), then every critic parameter is clipped to [-c, c]; the
generator minimises -E V(G(z)). The critic loss tracks the Wasserstein-1 estimate (negated).
"""

from __future__ import annotations

import torch
from torch import nn

from models.objectives.base import ScalarCritic, critic_out, wmean
from models.spec import WGANParams


class WGAN(ScalarCritic):
    def __init__(self, params: WGANParams) -> None:
        self.params = params

    def critic_loss(self, critic, real, fakes, cond, w):
        v_real = critic_out(critic, real, cond)
        v_fake = critic_out(critic, fakes[0].detach(), cond)
        w1 = wmean(v_real, w) - v_fake.mean()
        return -w1, {"wasserstein": w1.item()}

    def generator_loss(self, critic, real, fakes, cond, w):
        return -critic_out(critic, fakes[0], cond).mean(), {}

    @torch.no_grad()
    def after_critic_step(self, critic: nn.Module) -> None:
        c = self.params.clip
        for p in critic.parameters():
            p.clamp_(-c, c)
