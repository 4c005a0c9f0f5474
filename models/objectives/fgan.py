"""f-GAN (Nowozin et al. 2016, arXiv:1606.00709), seed 004's table.

F = E_P g_f(V(x)) - E_Q f*(g_f(V(G(z)))); the critic maximises F. Each divergence gives the
output activation g_f and the composition f*(g_f(v)), both written in closed, overflow-safe
form (softplus instead of log(1 + exp)). Both expectations are weighted by the per-event
weights; not sound with negative weights (f* is not linear).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, ClassVar, Literal

from models.objectives.base import ScalarCritic, critic_out, logs, wmean
from models.objectives.lazy import F, torch
from models.objectives.params import ObjectiveParams, Recipe, default_recipe, paper_recipe
from models.objectives.registry import register

if TYPE_CHECKING:
    from torch import Tensor

Fn = Callable[["Tensor"], "Tensor"]
Divergence = Literal["kl", "reverse_kl", "pearson", "neyman", "hellinger", "js", "gan"]


class FGANParams(ObjectiveParams):
    """f-GAN (Nowozin et al. 2016). `generator_loss`: the paper's practical step -E g_f(V)
    ("practical") or the saddle-point step E f*(g_f(V)) ("saddle")."""

    name: Literal["fgan"]
    divergence: Divergence = "js"
    generator_loss: Literal["practical", "saddle"] = "practical"
    recipes: ClassVar[dict[str, Recipe]] = {
        "default": default_recipe("leaky-ReLU critic, Adam 5e-4 (0.5, 0.999), batch 256, "
                                  "linear lr decay, EMA 0.99",
                                  critic={"activation": "leaky_relu"}, batch_size=256),
        "paper": paper_recipe("Nowozin 2016: Adam 2e-4, beta1 0.5", optimizer="adam",
                              lr_g=2e-4, lr_d=2e-4, betas=(0.5, 0.999), n_critic=1),
    }


# divergence -> (g_f(v), f*(g_f(v))), simplified by hand from the table in REFERENCE.md.
ACTIVATIONS: dict[str, tuple[Fn, Fn]] = {
    # g = v, f*(t) = exp(t - 1)
    "kl": (lambda v: v, lambda v: torch.exp(v - 1)),
    # g = -exp(-v), f*(t) = -1 - log(-t) = v - 1
    "reverse_kl": (lambda v: -torch.exp(-v), lambda v: v - 1),
    # g = v, f*(t) = t^2/4 + t
    "pearson": (lambda v: v, lambda v: v**2 / 4 + v),
    # g = 1 - exp(-v), f*(t) = 2 - 2 sqrt(1 - t) = 2 - 2 exp(-v/2)
    "neyman": (lambda v: 1 - torch.exp(-v), lambda v: 2 - 2 * torch.exp(-v / 2)),
    # g = 1 - exp(-v), f*(t) = t / (1 - t) = exp(v) - 1
    "hellinger": (lambda v: 1 - torch.exp(-v), lambda v: torch.exp(v) - 1),
    # g = log 2 - softplus(-v), f*(t) = -log(2 - e^t) = softplus(v) - log 2
    "js": (lambda v: math.log(2) - F.softplus(-v), lambda v: F.softplus(v) - math.log(2)),
    # g = -softplus(-v), f*(t) = -log(1 - e^t) = softplus(v)
    "gan": (lambda v: -F.softplus(-v), lambda v: F.softplus(v)),
}


@register(FGANParams)
class FGAN(ScalarCritic):
    def __init__(self, params: FGANParams) -> None:
        self.params = params
        self.g_f, self.f_star_g = ACTIVATIONS[params.divergence]

    def critic_loss(self, critic, real, fakes, cond, w):
        v_real = critic_out(critic, real, cond)
        v_fake = critic_out(critic, fakes[0].detach(), cond)
        bound = wmean(self.g_f(v_real), w) - wmean(self.f_star_g(v_fake), w)
        # -F estimates minus the variational lower bound of the divergence.
        return -bound, logs(divergence_bound=bound)

    def generator_loss(self, critic, real, fakes, cond, w):
        v_fake = critic_out(critic, fakes[0], cond)
        if self.params.generator_loss == "practical":
            return -wmean(self.g_f(v_fake), w), {}
        return -wmean(self.f_star_g(v_fake), w), {}
