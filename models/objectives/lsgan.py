"""Least-squares GAN (Mao et al. 2017, arXiv:1611.04076), targets real 1, fake 0.

Critic: 1/2 E (V(x) - 1)^2 + 1/2 E V(G(z))^2; generator: 1/2 E (V(G(z)) - 1)^2. Weighted
expectations; not sound with negative weights.
"""

from __future__ import annotations

from models.objectives.base import ScalarCritic, critic_out, wmean
from models.spec import LSGANParams


class LSGAN(ScalarCritic):
    def __init__(self, params: LSGANParams) -> None:
        self.params = params

    def critic_loss(self, critic, real, fakes, cond, w):
        v_real = critic_out(critic, real, cond)
        v_fake = critic_out(critic, fakes[0].detach(), cond)
        loss = 0.5 * wmean((v_real - 1) ** 2, w) + 0.5 * wmean(v_fake**2, w)
        return loss, {"d_real": v_real.mean().item(), "d_fake": v_fake.mean().item()}

    def generator_loss(self, critic, real, fakes, cond, w):
        return 0.5 * wmean((critic_out(critic, fakes[0], cond) - 1) ** 2, w), {}
