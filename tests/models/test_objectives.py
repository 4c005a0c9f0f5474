"""Each objective's loss against its formula in ../shared/REFERENCE.md, on critics whose
outputs and gradients are known in closed form."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from models.objectives import REGISTRY, get_objective
from models.objectives.cramer import CramerParams
from models.objectives.fgan import ACTIVATIONS, FGANParams
from models.objectives.hinge import HingeParams
from models.objectives.lsgan import LSGANParams
from models.objectives.minimax import MinimaxParams
from models.objectives.nsgan import NSGANParams
from models.objectives.wgan import WGANParams
from models.objectives.wgan_gp import WGANGPParams


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
    assert float(logs["divergence_bound"]) == pytest.approx(f_at_1, abs=1e-5)


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
    assert float(logs["wasserstein"]) == pytest.approx(expected.item(), rel=1e-5)
    assert loss.item() == pytest.approx(-expected.item(), rel=1e-5)


@pytest.mark.parametrize(
    ("u_norm", "one_sided", "expected_penalty"),
    [(2.0, False, 1.0), (2.0, True, 1.0), (0.5, False, 0.25), (0.5, True, 0.0), (1.0, False, 0.0)],
)
def test_gradient_penalty_uses_per_sample_norms(u_norm, one_sided, expected_penalty):
    real, fake = batch(n=16)
    u = torch.tensor([0.6, 0.8]) * u_norm
    obj = get_objective(WGANGPParams(name="wgan-gp", gp_lambda=10.0, one_sided=one_sided))
    _, logs = obj.critic_loss(LinearCritic(u), real, [fake], None, None)
    assert float(logs["gradient_penalty"]) == pytest.approx(expected_penalty, abs=1e-5)


def test_gradient_penalty_is_not_taken_over_the_batch_norm():
    # Per-sample norms are ||x_hat_i||: a penalty on the whole batch's gradient norm differs.
    torch.manual_seed(0)
    real, fake = batch(n=64)
    _, logs = get_objective(WGANGPParams(name="wgan-gp", gp_lambda=10.0)).critic_loss(
        Quadratic(), real, [fake], None, None
    )
    torch.manual_seed(0)
    eps = torch.rand(64, 1)
    x_hat = eps * real + (1 - eps) * fake
    per_sample = ((x_hat.norm(dim=1) - 1) ** 2).mean().item()
    assert float(logs["gradient_penalty"]) == pytest.approx(per_sample, rel=1e-5)


class Quadratic(nn.Module):
    """V(x) = 0.5 ||x||^2: grad V(x) = x, so each sample's gradient norm is its own ||x||."""

    def forward(self, x, a=None):
        return 0.5 * (x**2).sum(1, keepdim=True)


# Signed per-event weights with mean 1 (sWeights): generated row i inherits w[i].
SIGNED_W = torch.tensor([2.0, -0.5, 1.5, 0.0, 1.0, 3.0, -1.0, 2.0])


def _weighted(values: torch.Tensor, w: torch.Tensor) -> float:
    return (values * w).mean().item()


def _softplus(v):
    return torch.nn.functional.softplus(v)


# objective params -> (critic loss formula, generator loss formula) in terms of the critic's
# outputs on the real rows v_r, on the generated rows v_f, and the weights w; BOTH terms weighted.
WEIGHTED_FORMULAS = {
    "minimax": (MinimaxParams(name="minimax"),
                lambda v_r, v_f, w: _weighted(_softplus(-v_r), w) + _weighted(_softplus(v_f), w),
                lambda v_f, w: -_weighted(_softplus(v_f), w)),
    "nsgan": (NSGANParams(name="nsgan"),
              lambda v_r, v_f, w: _weighted(_softplus(-v_r), w) + _weighted(_softplus(v_f), w),
              lambda v_f, w: _weighted(_softplus(-v_f), w)),
    "lsgan": (LSGANParams(name="lsgan"),
              lambda v_r, v_f, w: 0.5 * _weighted((v_r - 1) ** 2, w) + 0.5 * _weighted(v_f**2, w),
              lambda v_f, w: 0.5 * _weighted((v_f - 1) ** 2, w)),
    "hinge": (HingeParams(name="hinge"),
              lambda v_r, v_f, w: _weighted(torch.relu(1 - v_r), w)
              + _weighted(torch.relu(1 + v_f), w),
              lambda v_f, w: -_weighted(v_f, w)),
    "fgan-kl": (FGANParams(name="fgan", divergence="kl"),
                lambda v_r, v_f, w: -(_weighted(v_r, w) - _weighted(torch.exp(v_f - 1), w)),
                lambda v_f, w: -_weighted(v_f, w)),  # "practical": -E g_f(V(G(z)))
    "fgan-gan-saddle": (FGANParams(name="fgan", divergence="gan", generator_loss="saddle"),
                         lambda v_r, v_f, w: -(_weighted(-_softplus(-v_r), w)
                                               - _weighted(_softplus(v_f), w)),
                         lambda v_f, w: -_weighted(_softplus(v_f), w)),
    "wgan": (WGANParams(name="wgan"),
             lambda v_r, v_f, w: -(_weighted(v_r, w) - _weighted(v_f, w)),
             lambda v_f, w: -_weighted(v_f, w)),
    # ||u|| = 2 below: every per-sample gradient norm is 2, so the penalty is exactly 1.
    "wgan-gp": (WGANGPParams(name="wgan-gp", gp_lambda=10.0),
                lambda v_r, v_f, w: -(_weighted(v_r, w) - _weighted(v_f, w)) + 10.0 * 1.0,
                lambda v_f, w: -_weighted(v_f, w)),
}


@pytest.mark.parametrize("key", sorted(WEIGHTED_FORMULAS))
def test_weights_enter_both_terms_of_the_critic_and_the_generator_loss(key):
    params, critic_formula, generator_formula = WEIGHTED_FORMULAS[key]
    real, fake = batch(n=8)
    u = torch.tensor([1.2, -1.6])  # ||u|| = 2
    critic = LinearCritic(u)
    v_r, v_f = real @ u, fake @ u
    obj = get_objective(params)
    loss, _ = obj.critic_loss(critic, real, [fake], None, SIGNED_W)
    assert loss.item() == pytest.approx(critic_formula(v_r, v_f, SIGNED_W), rel=1e-5, abs=1e-6)
    g_loss, _ = obj.generator_loss(critic, real, [fake], None, SIGNED_W)
    assert g_loss.item() == pytest.approx(generator_formula(v_f, SIGNED_W), rel=1e-5, abs=1e-6)
    # unit weights are no weights
    ones = torch.ones(8)
    for a, b in ((obj.critic_loss(critic, real, [fake], None, ones)[0],
                  obj.critic_loss(critic, real, [fake], None, None)[0]),
                 (obj.generator_loss(critic, real, [fake], None, ones)[0],
                  obj.generator_loss(critic, real, [fake], None, None)[0])):
        assert a.item() == pytest.approx(b.item(), rel=1e-6)


def test_weights_enter_both_terms_of_the_wasserstein_estimate():
    real, fake = batch(n=8)
    obj = get_objective(WGANGPParams(name="wgan-gp", gp_lambda=10.0))
    w = torch.tensor([2.0, 2.0, 2.0, 2.0, 0.0, 0.0, 0.0, 0.0])
    _, weighted = obj.critic_loss(Quadratic(), real, [fake], None, w)
    v = lambda x: 0.5 * (x**2).sum(1)  # noqa: E731
    expected_w1 = (w * v(real)).mean() - (w * v(fake)).mean()
    assert float(weighted["wasserstein"]) == pytest.approx(expected_w1.item(), rel=1e-5)
    # the rows with weight 0 do not count, real or generated
    _, half = obj.critic_loss(Quadratic(), real[:4], [fake[:4]], None, None)
    assert float(weighted["wasserstein"]) == pytest.approx(float(half["wasserstein"]), rel=1e-5)
    _, unweighted = obj.critic_loss(Quadratic(), real, [fake], None, None)
    assert float(unweighted["wasserstein"]) != pytest.approx(float(weighted["wasserstein"]), rel=1e-3)


@pytest.mark.parametrize("one_sided", [False, True])
def test_gradient_penalty_is_a_plain_mean_even_with_signed_weights(one_sided):
    # Large negative weights on the rows with the largest penalty: a weighted mean of the
    # per-sample penalties would be negative; the penalty is a plain mean, >= 0.
    real, fake = batch(n=8)
    real, fake = real * 2, fake * 2
    torch.manual_seed(3)
    eps = torch.rand(8, 1)
    norms = (eps * real + (1 - eps) * fake).norm(dim=1)
    per_sample = ((norms - 1).clamp(min=0) if one_sided else (norms - 1)) ** 2
    w = torch.where(per_sample > per_sample.median(), -3.0, 5.0)
    assert (w * per_sample).mean() < 0  # what a weighted penalty would give
    obj = get_objective(WGANGPParams(name="wgan-gp", gp_lambda=10.0, one_sided=one_sided))
    torch.manual_seed(3)
    _, logs = obj.critic_loss(Quadratic(), real, [fake], None, w)
    assert logs["gradient_penalty"] >= 0
    assert float(logs["gradient_penalty"]) == pytest.approx(per_sample.mean().item(), rel=1e-5)


class Identity(nn.Module):
    def forward(self, x, a=None):
        return x


def test_cramer_weights_every_term_and_not_the_penalty():
    g = torch.Generator().manual_seed(1)
    real, f1, f2 = (torch.randn(8, 3, generator=g) for _ in range(3))
    obj = get_objective(CramerParams(name="cramer", gp_lambda=10.0, feature_dim=3))
    w = SIGNED_W

    def f(x):  # f(x) = ||h(x) - h(x_g')|| - ||h(x)|| with h the identity
        return (x - f2).norm(dim=1) - x.norm(dim=1)

    torch.manual_seed(5)
    loss, logs = obj.critic_loss(Identity(), real, [f1, f2], None, w)
    expected_surrogate = (w * f(real)).mean() - (w * f(f1)).mean()
    assert float(logs["cramer_surrogate"]) == pytest.approx(expected_surrogate.item(), rel=1e-5)
    torch.manual_seed(5)
    _, plain = obj.critic_loss(Identity(), real, [f1, f2], None, None)
    assert float(logs["gradient_penalty"]) == pytest.approx(float(plain["gradient_penalty"]), rel=1e-6)
    assert logs["gradient_penalty"] >= 0
    g_loss, _ = obj.generator_loss(Identity(), real, [f1, f2], None, w)
    energy = (real - f1).norm(dim=1) + (real - f2).norm(dim=1) - (f1 - f2).norm(dim=1)
    assert g_loss.item() == pytest.approx((w * energy).mean().item(), rel=1e-5)


def test_signed_weights_ok_marks_the_integral_probability_metric_losses():
    flags = {name: cls.signed_weights_ok for name, cls in REGISTRY.items()}
    assert {name for name, ok in flags.items() if ok} == {"wgan", "wgan-gp", "cramer"}


def test_check_weights_refuses_negative_weights_for_classifier_losses():
    import numpy as np

    from models.datasets.base import DataError
    from models.weights import check_weights

    w = np.array([1.0, -0.5, 2.0, 0.7, -0.1])
    with pytest.raises(DataError) as err:
        check_weights("nsgan", w)
    message = str(err.value)
    assert "2 of 5 weights are negative" in message
    assert "nsgan" in message and "unbounded below" in message
    for name in ("wgan", "wgan-gp", "cramer"):
        assert name in message
    for name in ("wgan", "wgan-gp", "cramer"):
        check_weights(name, w)  # sound with signed weights: no error
    for name in REGISTRY:
        check_weights(name, None)
        check_weights(name, np.abs(w))
    for bad in (np.array([1.0, np.nan]), np.array([1.0, np.inf]), np.array([-1.0, 0.5]),
                np.zeros(3)):
        with pytest.raises(DataError):
            check_weights("wgan-gp", bad)


def test_cramer_generator_loss_is_the_energy_distance_with_identity_features():
    g = torch.Generator().manual_seed(1)
    real, f1, f2 = (torch.randn(32, 3, generator=g) for _ in range(3))
    obj = get_objective(CramerParams(name="cramer", gp_lambda=10.0, feature_dim=3))
    assert obj.n_fakes == 2 and obj.critic_dim == 3
    loss, _ = obj.generator_loss(Identity(), real, [f1, f2], None, None)
    expected = ((real - f1).norm(dim=1) + (real - f2).norm(dim=1) - (f1 - f2).norm(dim=1)).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-4)
    c_loss, logs = obj.critic_loss(Identity(), real, [f1, f2], None, None)
    assert torch.isfinite(c_loss) and "gradient_penalty" in logs
