"""Hinge loss (Lim & Ye 2017; Miyato et al. 2018, SN-GAN): critic minimises
E relu(1 - V(x)) + E relu(1 + V(G(z))); the generator minimises -E V(G(z)). Weighted
expectations; the relu terms make the critic loss unbounded below with negative weights."""

from __future__ import annotations

import torch.nn.functional as F

from models.objectives.base import ScalarCritic, critic_out, wmean
from models.spec import HingeParams


class Hinge(ScalarCritic):
    def __init__(self, params: HingeParams) -> None:
        self.params = params

    def critic_loss(self, critic, real, fakes, cond, w):
        v_real = critic_out(critic, real, cond)
        v_fake = critic_out(critic, fakes[0].detach(), cond)
        loss = wmean(F.relu(1 - v_real), w) + wmean(F.relu(1 + v_fake), w)
        return loss, {"d_real": v_real.mean().item(), "d_fake": v_fake.mean().item()}

    def generator_loss(self, critic, real, fakes, cond, w):
        return -wmean(critic_out(critic, fakes[0], cond), w), {}
