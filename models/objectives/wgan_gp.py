"""WGAN-GP (Gulrajani et al. 2017, arXiv:1704.00028, Algorithm 1).

Critic minimises E V(G(z)) - E V(x) + lambda E (||grad V(x_hat)||_2 - 1)^2, the norm taken per
sample; the one-sided variant penalises only norms above 1 (section 4 / appendix of the paper).
With per-event weights both expectations are weighted (generated row i inherits w[i]); the
penalty stays a plain mean over the interpolates (REFERENCE.md, "Per-event weights").
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from models.objectives.base import (
    ScalarCritic,
    critic_out,
    gradient_norms,
    interpolate,
    logs,
    penalty,
    uncompiled,
    wmean,
)
from models.objectives.params import (
    MAX_PENALTY,
    Float,
    ObjectiveParams,
    Recipe,
    default_recipe,
    paper_recipe,
)
from models.objectives.registry import register


class WGANGPParams(ObjectiveParams):
    """WGAN-GP (Gulrajani et al. 2017); `one_sided` penalises only norms above 1."""

    name: Literal["wgan-gp"]
    gp_lambda: Float | None = Field(None, ge=0, le=MAX_PENALTY)
    one_sided: bool = False
    recipes: ClassVar[dict[str, Recipe]] = {
        "default": default_recipe("validated on the toy sets: gp_lambda 1, n_critic 5, Adam "
                                  "1e-3 (0, 0.9), batch 1024, linear lr decay, EMA 0.99",
                                  objective={"gp_lambda": 1.0}, n_critic=5, betas=(0.0, 0.9),
                                  lr_g=1e-3, lr_d=1e-3),
        "paper": paper_recipe("Gulrajani 2017: lambda 10, n_critic 5, Adam 1e-4 (0, 0.9)",
                              objective={"gp_lambda": 10.0}, optimizer="adam", lr_g=1e-4,
                              lr_d=1e-4, betas=(0.0, 0.9), n_critic=5, batch_size=256),
    }


@register(WGANGPParams)
class WGANGP(ScalarCritic):
    signed_weights_ok = True

    def __init__(self, params: WGANGPParams) -> None:
        self.params = params

    def critic_loss(self, critic, real, fakes, cond, w):
        fake = fakes[0].detach()
        v_real, v_fake = critic_out(critic, real, cond), critic_out(critic, fake, cond)
        w1 = wmean(v_real, w) - wmean(v_fake, w)
        x_hat = interpolate(real, fake)
        norms = gradient_norms(critic_out(uncompiled(critic), x_hat, cond), x_hat)
        # A regulariser on the interpolates, not an expectation under the data: plain mean.
        gp = penalty(norms, self.params.one_sided).mean()
        loss = -w1 + self.params.gp_lambda * gp
        return loss, logs(wasserstein=w1, gradient_penalty=gp)

    def generator_loss(self, critic, real, fakes, cond, w):
        return -wmean(critic_out(critic, fakes[0], cond), w), {}
