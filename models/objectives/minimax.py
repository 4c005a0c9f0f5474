"""Minimax GAN (Goodfellow et al. 2014, arXiv:1406.2661), the original saturating game.

D = sigmoid(V). Critic minimises -E log D(x) - E log(1 - D(G(z))); the generator minimises
E log(1 - D(G(z))), which saturates when D rejects the fakes. Written in log-space:
-log D = softplus(-V), -log(1 - D) = softplus(V). Both expectations are weighted by the
per-event weights (generated row i inherits w[i]); not sound with negative weights.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, Literal

from models.objectives.base import Logs, ScalarCritic, critic_out, logs, wmean
from models.objectives.lazy import F
from models.objectives.params import ObjectiveParams, Recipe, default_recipe, paper_recipe
from models.objectives.registry import register

if TYPE_CHECKING:
    from torch import Tensor, nn


class MinimaxParams(ObjectiveParams):
    """Goodfellow et al. 2014, the saturating generator loss E log(1 - D(G(z)))."""

    name: Literal["minimax"]
    recipes: ClassVar[dict[str, Recipe]] = {
        "default": default_recipe("leaky-ReLU critic, Adam 5e-4 (0.5, 0.999), batch 256, "
                                  "linear lr decay, EMA 0.99",
                                  critic={"activation": "leaky_relu"}, batch_size=256),
        "paper": paper_recipe("Goodfellow 2014: k=1 discriminator step, SGD with momentum",
                              optimizer="sgd", lr_g=1e-2, lr_d=1e-2, momentum=0.5, n_critic=1),
    }


def discriminator_loss(
    critic: nn.Module, real: Tensor, fake: Tensor, cond: Tensor | None, w: Tensor | None
) -> tuple[Tensor, Logs]:
    """The cross-entropy discriminator loss shared by minimax and non-saturating GANs."""
    v_real, v_fake = critic_out(critic, real, cond), critic_out(critic, fake.detach(), cond)
    loss = wmean(F.softplus(-v_real), w) + wmean(F.softplus(v_fake), w)
    return loss, logs(d_real=v_real.mean(), d_fake=v_fake.mean())


@register(MinimaxParams)
class Minimax(ScalarCritic):
    def __init__(self, params: MinimaxParams) -> None:
        self.params = params

    def critic_loss(self, critic, real, fakes, cond, w):
        return discriminator_loss(critic, real, fakes[0], cond, w)

    def generator_loss(self, critic, real, fakes, cond, w):
        # log(1 - D) = -softplus(V)
        return -wmean(F.softplus(critic_out(critic, fakes[0], cond)), w), {}
