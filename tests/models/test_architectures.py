"""Generators and critics: shapes, conditioning, spectral norm, image shapes, gradients."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from models.architectures import ARCHITECTURES, build_critic, build_generator
from models.spec import ArchitectureSpec

N, LATENT = 6, 5
SMALL = {"width": 16, "depth": 2, "channels": 4}
# name -> (n_features, image_shape)
DATA = {"mlp": (3, None), "resmlp": (3, None), "dcgan": (64, (1, 8, 8))}


def arch(name: str, g: dict | None = None, d: dict | None = None) -> ArchitectureSpec:
    return ArchitectureSpec(
        name=name, latent_dim=LATENT, generator={**SMALL, **(g or {})},
        critic={**SMALL, **(d or {})},
    )


def nets(name: str, n_cond: int, out_dim: int = 1, **kw) -> tuple[nn.Module, nn.Module]:
    n_features, image_shape = DATA[name]
    spec = arch(name, **kw)
    return (
        build_generator(spec, n_features, n_cond, image_shape),
        build_critic(spec, n_features, n_cond, image_shape, out_dim),
    )


def cond(n_cond: int, n: int = N) -> torch.Tensor | None:
    return torch.randn(n, n_cond) if n_cond else None


def test_registry_covers_spec_names():
    assert set(ARCHITECTURES) == {"mlp", "resmlp", "dcgan"}


@pytest.mark.parametrize("name", sorted(DATA))
@pytest.mark.parametrize("n_cond", [0, 2])
@pytest.mark.parametrize("out_dim", [1, 4])
def test_shapes_and_attributes(name, n_cond, out_dim):
    torch.manual_seed(0)
    G, D = nets(name, n_cond, out_dim)
    n_features = DATA[name][0]
    assert (G.latent_dim, G.n_features, G.n_conditions) == (LATENT, n_features, n_cond)
    a = cond(n_cond)
    x = G(torch.randn(N, LATENT), a)
    assert x.shape == (N, n_features)
    assert D(x, a).shape == (N, out_dim)


@pytest.mark.parametrize("name", sorted(DATA))
@pytest.mark.parametrize("out_dim", [1, 4])
def test_conditional_outputs_depend_on_condition(name, out_dim):
    torch.manual_seed(0)
    G, D = nets(name, 2, out_dim)
    G.eval(), D.eval()
    z, x = torch.randn(N, LATENT), torch.randn(N, DATA[name][0])
    a1, a2 = torch.randn(N, 2), torch.randn(N, 2)
    assert (G(z, a1) - G(z, a2)).abs().max() > 1e-6
    assert (D(x, a1) - D(x, a2)).abs().max() > 1e-6


@pytest.mark.parametrize("name", sorted(DATA))
def test_conditional_model_needs_condition(name):
    G, D = nets(name, 2)
    with pytest.raises(ValueError, match="conditional"):
        G(torch.randn(N, LATENT), None)
    with pytest.raises(ValueError, match="conditional"):
        D(torch.randn(N, DATA[name][0]), None)


def weight_layers(module: nn.Module) -> list[nn.Module]:
    return [m for m in module.modules() if isinstance(m, nn.Linear | nn.Conv2d)]


@pytest.mark.parametrize("name", sorted(DATA))
@pytest.mark.parametrize("n_cond", [0, 2])
def test_spectral_norm_wraps_every_critic_weight(name, n_cond):
    torch.manual_seed(0)
    G, D = nets(name, n_cond, 4, d={"spectral_norm": True})
    layers = weight_layers(D)
    assert layers and all(nn.utils.parametrize.is_parametrized(m, "weight") for m in layers)
    assert not any(nn.utils.parametrize.is_parametrized(m) for m in G.modules())
    D.train()
    x, a = torch.randn(N, DATA[name][0]), cond(n_cond)
    with torch.no_grad():
        for _ in range(30):  # one power iteration per training forward pass
            D(x, a)
    D.eval()  # read W / sigma without a further iteration
    for m in layers:
        sigma = torch.linalg.matrix_norm(m.weight.detach().flatten(1), ord=2)
        assert sigma.item() == pytest.approx(1.0, abs=0.02), m


def test_no_spectral_norm_by_default():
    _, D = nets("mlp", 0)
    assert not any(nn.utils.parametrize.is_parametrized(m) for m in D.modules())


@pytest.mark.parametrize("image_shape", [(1, 8, 8), (3, 16, 16), (1, 32, 32), (3, 64, 64)])
@pytest.mark.parametrize("n_cond", [0, 3])
def test_dcgan_image_sizes(image_shape, n_cond):
    torch.manual_seed(0)
    c, h, w = image_shape
    spec = arch("dcgan", g={"norm": "batch"}, d={"norm": "layer"})
    G = build_generator(spec, c * h * w, n_cond, image_shape)
    D = build_critic(spec, c * h * w, n_cond, image_shape, 1)
    a = cond(n_cond, 2)
    x = G(torch.randn(2, LATENT), a)
    assert x.shape == (2, c * h * w)
    assert x.abs().max() <= 1.0  # tanh output, the [-1, 1] range of minmax-scaled images
    assert D(x, a).shape == (2, 1)
    # DCGAN: stride-2 transposed convs from 4x4 up; `channels` maps at the finest hidden level
    ups = [m for m in G.modules() if isinstance(m, nn.ConvTranspose2d)]
    downs = [m for m in D.modules() if isinstance(m, nn.Conv2d)]
    assert len(ups) == len(downs) == {8: 1, 16: 2, 32: 3, 64: 4}[h]
    assert ups[-1].in_channels == downs[0].out_channels == SMALL["channels"]
    assert any(isinstance(m, nn.BatchNorm2d) for m in G.modules())
    assert any(isinstance(m, nn.GroupNorm) for m in D.modules()) == (h > 8)


def test_dcgan_init_is_normal_002():
    torch.manual_seed(0)
    spec = ArchitectureSpec(name="dcgan", generator={"channels": 32}, critic={"channels": 32})
    G = build_generator(spec, 3 * 32 * 32, 0, (3, 32, 32))
    convs = [m for m in G.modules() if isinstance(m, nn.ConvTranspose2d)]
    assert all(abs(m.weight.std().item() - 0.02) < 0.002 for m in convs)


@pytest.mark.parametrize(
    "image_shape", [(1, 8, 16), (1, 12, 12), (3, 128, 128), (1, 4, 4), None]
)
def test_dcgan_rejects_bad_image_shapes(image_shape):
    n_features = 1 if image_shape is None else image_shape[0] * image_shape[1] * image_shape[2]
    spec = arch("dcgan")
    with pytest.raises(ValueError, match="image_shape") as err:
        build_generator(spec, n_features, 0, image_shape)
    if image_shape is not None:
        assert str(image_shape) in str(err.value)
    with pytest.raises(ValueError, match="image_shape"):
        build_critic(spec, n_features, 0, image_shape)


def test_dcgan_rejects_features_not_matching_image():
    with pytest.raises(ValueError, match="features"):
        build_generator(arch("dcgan"), 65, 0, (1, 8, 8))


def test_unknown_architecture():
    spec = arch("mlp").model_copy(update={"name": "transformer"})
    with pytest.raises(ValueError, match="transformer"):
        build_generator(spec, 3, 0, None)


NORMS = ["none", "layer", "batch"]


@pytest.mark.parametrize("name", sorted(DATA))
@pytest.mark.parametrize("n_cond", [0, 2])
@pytest.mark.parametrize("norm", NORMS)
def test_gradients_reach_every_parameter(name, n_cond, norm):
    torch.manual_seed(0)
    net = {"norm": norm, "dropout": 0.1, "activation": "silu"}
    G, D = nets(name, n_cond, 2, g=net, d={**net, "spectral_norm": norm == "layer"})
    G.train(), D.train()
    a = cond(n_cond)
    loss = D(G(torch.randn(N, LATENT), a), a).square().mean()
    loss.backward()
    for module in (G, D):
        for pname, p in module.named_parameters():
            assert p.grad is not None and p.grad.abs().sum() > 0, pname


@pytest.mark.parametrize("activation", ["relu", "leaky_relu", "elu", "gelu", "silu", "tanh"])
def test_every_activation_builds(activation):
    G, D = nets("resmlp", 1, g={"activation": activation}, d={"activation": activation})
    a = cond(1)
    assert torch.isfinite(D(G(torch.randn(N, LATENT), a), a)).all()
