"""Minimax GAN (Goodfellow et al. 2014, arXiv:1406.2661), the original saturating game.

D = sigmoid(V). Critic minimises -E log D(x) - E log(1 - D(G(z))); the generator minimises
E log(1 - D(G(z))), which saturates when D rejects the fakes. Written in log-space:
-log D = softplus(-V), -log(1 - D) = softplus(V). Both expectations are weighted by the
per-event weights (generated row i inherits w[i]); not sound with negative weights.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from models.objectives.base import Logs, ScalarCritic, critic_out, wmean
from models.spec import MinimaxParams


def discriminator_loss(
    critic: nn.Module, real: Tensor, fake: Tensor, cond: Tensor | None, w: Tensor | None
) -> tuple[Tensor, Logs]:
    """The cross-entropy discriminator loss shared by minimax and non-saturating GANs."""
    v_real, v_fake = critic_out(critic, real, cond), critic_out(critic, fake.detach(), cond)
    loss = wmean(F.softplus(-v_real), w) + wmean(F.softplus(v_fake), w)
    return loss, {"d_real": v_real.mean().item(), "d_fake": v_fake.mean().item()}


class Minimax(ScalarCritic):
    def __init__(self, params: MinimaxParams) -> None:
        self.params = params

    def critic_loss(self, critic, real, fakes, cond, w):
        return discriminator_loss(critic, real, fakes[0], cond, w)

    def generator_loss(self, critic, real, fakes, cond, w):
        # log(1 - D) = -softplus(V)
        return -wmean(F.softplus(critic_out(critic, fakes[0], cond)), w), {}
