"""Each objective's loss against its formula in ../shared/REFERENCE.md, on critics whose
outputs and gradients are known in closed form."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from models.objectives import REGISTRY, get_objective
from models.objectives.fgan import ACTIVATIONS
from models.spec import (
    CramerParams,
    FGANParams,
    HingeParams,
    LSGANParams,
    MinimaxParams,
    NSGANParams,
    WGANGPParams,
    WGANParams,
)


class ConstantCritic(nn.Module):
    """V(x) = c for every sample; keeps a parameter so losses have a graph."""

    def __init__(self, c: float) -> None:
        super().__init__()
        self.c = nn.Parameter(torch.tensor(c))

    def forward(self, x, a=None):
        return self.c.expand(x.shape[0], 1)


class LinearCritic(nn.Module):
    """V(x) = x . u, so ||grad_x V|| = ||u|| for every sample."""

    def __init__(self, u: torch.Tensor) -> None:
        super().__init__()
        self.u = nn.Parameter(u.clone())

    def forward(self, x, a=None):
        return (x @ self.u)[:, None]


def test_registry_covers_every_objective_of_the_spec():
    from models.spec import OBJECTIVE_NAMES

    assert set(REGISTRY) == set(OBJECTIVE_NAMES)


def batch(n=8, f=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, f, generator=g), torch.randn(n, f, generator=g)


def test_gan_losses_at_an_undecided_discriminator():
    # D = sigmoid(0) = 1/2: critic loss 2 log 2; NS generator log 2; minimax generator -log 2.
    real, fake = batch()
    critic = ConstantCritic(0.0)
    for params in (MinimaxParams(name="minimax"), NSGANParams(name="nsgan")):
        d_loss, _ = get_objective(params).critic_loss(critic, real, [fake], None, None)
        assert d_loss.item() == pytest.approx(2 * math.log(2))
    g_ns, _ = get_objective(NSGANParams(name="nsgan")).generator_loss(critic, real, [fake], None, None)
    g_mm, _ = get_objective(MinimaxParams(name="minimax")).generator_loss(
        critic, real, [fake], None, None
    )
    assert g_ns.item() == pytest.approx(math.log(2))
    assert g_mm.item() == pytest.approx(-math.log(2))


def test_minimax_generator_saturates_where_nsgan_does_not():
    # A confident discriminator (V(G(z)) = -10): the minimax generator gradient vanishes.
    real, fake = batch()
    fake = fake.requires_grad_(True)
    critic = LinearCritic(torch.tensor([1.0, 0.0]))
    shifted = fake - 10 - fake.detach()[:, :1]  # first coordinate exactly -10
    grads = {}
    for params in (MinimaxParams(name="minimax"), NSGANParams(name="nsgan")):
        loss, _ = get_objective(params).generator_loss(critic, real, [shifted], None, None)
        (g,) = torch.autograd.grad(loss, fake, retain_graph=True)
        grads[params.name] = g.abs().max().item()
    assert grads["minimax"] < 1e-4 < grads["nsgan"]


def test_stable_at_extreme_logits():
    real, fake = batch()
    for c in (-200.0, 200.0):
        for params in (MinimaxParams(name="minimax"), NSGANParams(name="nsgan"),
                       FGANParams(name="fgan", divergence="gan"),
                       FGANParams(name="fgan", divergence="js")):
            obj = get_objective(params)
            d, _ = obj.critic_loss(ConstantCritic(c), real, [fake], None, None)
            g, _ = obj.generator_loss(ConstantCritic(c), real, [fake], None, None)
            assert torch.isfinite(d) and torch.isfinite(g), (params, c)


def test_lsgan_and_hinge_values():
    real, fake = batch()
    critic = ConstantCritic(0.5)
    d, _ = get_objective(LSGANParams(name="lsgan")).critic_loss(critic, real, [fake], None, None)
    assert d.item() == pytest.approx(0.5 * 0.25 + 0.5 * 0.25)
    g, _ = get_objective(LSGANParams(name="lsgan")).generator_loss(critic, real, [fake], None, None)
    assert g.item() == pytest.approx(0.5 * 0.25)
    d, _ = get_objective(HingeParams(name="hinge")).critic_loss(critic, real, [fake], None, None)
    assert d.item() == pytest.approx(0.5 + 1.5)


# The conjugates exactly as tabulated (seed 004), composed naively: the closed forms in
# models/objectives/fgan.py must agree with them wherever the naive form is finite.
NAIVE = {
    "kl": (lambda v: v, lambda t: math.exp(t - 1)),
    "reverse_kl": (lambda v: -math.exp(-v), lambda t: -1 - math.log(-t)),
    "pearson": (lambda v: v, lambda t: t * t / 4 + t),
    "neyman": (lambda v: 1 - math.exp(-v), lambda t: 2 - 2 * math.sqrt(1 - t)),
    "hellinger": (lambda v: 1 - math.exp(-v), lambda t: t / (1 - t)),
    "js": (lambda v: math.log(2) - math.log(1 + math.exp(-v)), lambda t: -math.log(2 - math.exp(t))),
    "gan": (lambda v: -math.log(1 + math.exp(-v)), lambda t: -math.log(1 - math.exp(t))),
}


@pytest.mark.parametrize("divergence", sorted(NAIVE))
def test_fgan_activation_and_conjugate_match_the_table(divergence):
    g_f, f_star_g = ACTIVATIONS[divergence]
    naive_g, naive_f_star = NAIVE[divergence]
    for v in (-2.0, -0.3, 0.0, 0.7, 2.5):
        t = torch.tensor(v, dtype=torch.float64)
        assert g_f(t).item() == pytest.approx(naive_g(v), rel=1e-9, abs=1e-12)
        assert f_star_g(t).item() == pytest.approx(naive_f_star(naive_g(v)), rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("divergence", sorted(NAIVE))
def test_fgan_bound_is_zero_when_distributions_agree_at_the_optimal_critic(divergence):
    # Same samples on both sides and T = f'(1) (u = 1): the bound equals f(1), which is 0 for
    # every divergence of the table but "gan", whose f(1) = -2 log 2 (GAN's -log 4 at P = Q).
    x, _ = batch()
    g_f, _ = ACTIVATIONS[divergence]
    # find v with g_f(v) = f'(1) by bisection on the monotone activation
    f_prime_1 = {"kl": 1.0, "reverse_kl": -1.0, "pearson": 0.0, "neyman": 0.0,
                 "hellinger": 0.0, "js": 0.0, "gan": -math.log(2)}[divergence]
    lo, hi = -20.0, 20.0
    for _ in range(200):
        mid = (lo + hi) / 2
        if g_f(torch.tensor(mid, dtype=torch.float64)).item() < f_prime_1:
            lo = mid
        else:
            hi = mid
    obj = get_objective(FGANParams(name="fgan", divergence=divergence))
    loss, logs = obj.critic_loss(ConstantCritic(lo), x, [x], None, None)
    f_at_1 = -2 * math.log(2) if divergence == "gan" else 0.0
    assert logs["divergence_bound"] == pytest.approx(f_at_1, abs=1e-5)


def test_wgan_clipping_really_clips_every_parameter():
    critic = nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, 1))
    with torch.no_grad():
        for p in critic.parameters():
            p.uniform_(-3, 3)
    obj = get_objective(WGANParams(name="wgan", clip=0.05))
    obj.after_critic_step(critic)
    values = torch.cat([p.flatten() for p in critic.parameters()])
    assert values.abs().max().item() == pytest.approx(0.05)
    assert (values.abs() == 0.05).float().mean() > 0.9  # most were outside and now sit on the edge


def test_wgan_critic_loss_is_minus_the_mean_difference():
    real, fake = batch()
    critic = LinearCritic(torch.tensor([1.0, 2.0]))
    loss, logs = get_objective(WGANParams(name="wgan")).critic_loss(critic, real, [fake], None, None)
    expected = (real @ critic.u).mean() - (fake @ critic.u).mean()
    assert logs["wasserstein"] == pytest.approx(expected.item(), rel=1e-5)
    assert loss.item() == pytest.approx(-expected.item(), rel=1e-5)


@pytest.mark.parametrize(
    ("u_norm", "one_sided", "expected_penalty"),
    [(2.0, False, 1.0), (2.0, True, 1.0), (0.5, False, 0.25), (0.5, True, 0.0), (1.0, False, 0.0)],
)
def test_gradient_penalty_uses_per_sample_norms(u_norm, one_sided, expected_penalty):
    real, fake = batch(n=16)
    u = torch.tensor([0.6, 0.8]) * u_norm
    obj = get_objective(WGANGPParams(name="wgan-gp", one_sided=one_sided))
    _, logs = obj.critic_loss(LinearCritic(u), real, [fake], None, None)
    assert logs["gradient_penalty"] == pytest.approx(expected_penalty, abs=1e-5)


def test_gradient_penalty_is_not_taken_over_the_batch_norm():
    # Per-sample norms are ||x_hat_i||: a penalty on the whole batch's gradient norm differs.
    torch.manual_seed(0)
    real, fake = batch(n=64)
    _, logs = get_objective(WGANGPParams(name="wgan-gp")).critic_loss(
        Quadratic(), real, [fake], None, None
    )
    torch.manual_seed(0)
    eps = torch.rand(64, 1)
    x_hat = eps * real + (1 - eps) * fake
    per_sample = ((x_hat.norm(dim=1) - 1) ** 2).mean().item()
    assert logs["gradient_penalty"] == pytest.approx(per_sample, rel=1e-5)


class Quadratic(nn.Module):
    """V(x) = 0.5 ||x||^2: grad V(x) = x, so each sample's gradient norm is its own ||x||."""

    def forward(self, x, a=None):
        return 0.5 * (x**2).sum(1, keepdim=True)


def test_sample_weights_enter_the_loss_and_the_penalty():
    real, fake = batch(n=8)
    obj = get_objective(WGANGPParams(name="wgan-gp"))
    w = torch.tensor([2.0, 2.0, 2.0, 2.0, 0.0, 0.0, 0.0, 0.0])
    torch.manual_seed(3)
    _, weighted = obj.critic_loss(Quadratic(), real, [fake], None, w)
    torch.manual_seed(3)
    eps = torch.rand(8, 1)
    norms = (eps * real + (1 - eps) * fake).norm(dim=1)
    expected_gp = (w * (norms - 1) ** 2).mean()
    v = lambda x: 0.5 * (x**2).sum(1)  # noqa: E731
    expected_w1 = (w * v(real)).mean() - v(fake).mean()
    assert weighted["wasserstein"] == pytest.approx(expected_w1.item(), rel=1e-5)
    assert weighted["gradient_penalty"] == pytest.approx(expected_gp.item(), rel=1e-5)
    _, unweighted = obj.critic_loss(Quadratic(), real, [fake], None, None)
    assert unweighted["wasserstein"] != pytest.approx(weighted["wasserstein"], rel=1e-3)


def test_cramer_generator_loss_is_the_energy_distance_with_identity_features():
    class Identity(nn.Module):
        def forward(self, x, a=None):
            return x

    g = torch.Generator().manual_seed(1)
    real, f1, f2 = (torch.randn(32, 3, generator=g) for _ in range(3))
    obj = get_objective(CramerParams(name="cramer", feature_dim=3))
    assert obj.n_fakes == 2 and obj.critic_dim == 3
    loss, _ = obj.generator_loss(Identity(), real, [f1, f2], None, None)
    expected = ((real - f1).norm(dim=1) + (real - f2).norm(dim=1) - (f1 - f2).norm(dim=1)).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-4)
    c_loss, logs = obj.critic_loss(Identity(), real, [f1, f2], None, None)
    assert torch.isfinite(c_loss) and "gradient_penalty" in logs
