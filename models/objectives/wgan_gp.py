"""WGAN-GP (Gulrajani et al. 2017, arXiv:1704.00028, Algorithm 1).

Critic minimises E V(G(z)) - E V(x) + lambda E (||grad V(x_hat)||_2 - 1)^2, the norm taken per
sample; the one-sided variant penalises only norms above 1 (section 4 / appendix of the paper).
With per-event weights both expectations are weighted (generated row i inherits w[i]); the
penalty stays a plain mean over the interpolates (REFERENCE.md, "Per-event weights").
"""

from __future__ import annotations

from models.objectives.base import (
    ScalarCritic,
    critic_out,
    gradient_norms,
    interpolate,
    penalty,
    wmean,
)
from models.spec import WGANGPParams


class WGANGP(ScalarCritic):
    signed_weights_ok = True

    def __init__(self, params: WGANGPParams) -> None:
        self.params = params

    def critic_loss(self, critic, real, fakes, cond, w):
        fake = fakes[0].detach()
        v_real, v_fake = critic_out(critic, real, cond), critic_out(critic, fake, cond)
        w1 = wmean(v_real, w) - wmean(v_fake, w)
        x_hat = interpolate(real, fake)
        norms = gradient_norms(critic_out(critic, x_hat, cond), x_hat)
        # A regulariser on the interpolates, not an expectation under the data: plain mean.
        gp = penalty(norms, self.params.one_sided).mean()
        loss = -w1 + self.params.gp_lambda * gp
        return loss, {"wasserstein": w1.item(), "gradient_penalty": gp.item()}

    def generator_loss(self, critic, real, fakes, cond, w):
        return -wmean(critic_out(critic, fakes[0], cond), w), {}
