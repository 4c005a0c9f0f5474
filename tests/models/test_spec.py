"""The job spec: minimal specs work, published defaults fill in, bad keys are named."""

from __future__ import annotations

import subprocess
import sys

import pytest
from pydantic import ValidationError

from models.spec import OBJECTIVE_NAMES, JobSpec

MINIMAL = {"objective": "wgan-gp", "architecture": "mlp", "dataset": {"uri": "builtin://8gaussians"}}


def test_minimal_spec_takes_the_validated_default_recipe():
    spec = JobSpec.model_validate(MINIMAL)
    t = spec.training
    assert t.recipe == "default"
    assert (t.optimizer, t.lr_g, t.lr_d, t.betas, t.n_critic) == ("adam", 1e-3, 1e-3, (0.0, 0.9), 5)
    assert (t.batch_size, t.lr_schedule, t.ema) == (1024, "linear", 0.99)
    assert spec.objective.gp_lambda == 1.0 and spec.objective.one_sided is False
    assert spec.dataset.preprocessing == "standard"
    assert (t.validate_every, t.patience, spec.dataset.validation_fraction) == (250, 8, 0.1)


def test_paper_recipe_takes_the_wgan_gp_papers_settings():
    spec = JobSpec.model_validate({**MINIMAL, "training": {"recipe": "paper"}})
    t = spec.training
    assert (t.optimizer, t.lr_g, t.lr_d, t.betas, t.n_critic) == ("adam", 1e-4, 1e-4, (0.0, 0.9), 5)
    assert spec.objective.gp_lambda == 10.0 and t.ema == 0.0 and t.lr_schedule == "constant"


def test_wgan_paper_recipe_takes_rmsprop_and_clipping():
    spec = JobSpec.model_validate({**MINIMAL, "objective": {"name": "wgan"},
                                   "training": {"recipe": "paper"}})
    assert spec.training.optimizer == "rmsprop" and spec.training.lr_d == 5e-5
    assert spec.training.n_critic == 5 and spec.objective.clip == 0.01
    assert spec.training.batch_size == 64


def test_explicit_values_win_over_the_recipe():
    spec = JobSpec.model_validate({**MINIMAL, "objective": {"name": "wgan-gp", "gp_lambda": 5},
                                   "training": {"recipe": "paper", "lr_g": 3e-4, "n_critic": 2,
                                                "ema": 0.5}})
    assert spec.training.lr_g == 3e-4 and spec.training.n_critic == 2
    assert spec.training.lr_d == 1e-4 and spec.training.ema == 0.5
    assert spec.objective.gp_lambda == 5


def test_every_objective_has_both_recipes_and_they_resolve_every_field():
    from models.spec import OBJECTIVE_RECIPES, RECIPE_NAMES

    assert set(OBJECTIVE_RECIPES) == set(OBJECTIVE_NAMES)
    for name in OBJECTIVE_NAMES:
        assert set(OBJECTIVE_RECIPES[name]) == set(RECIPE_NAMES)
        for recipe in RECIPE_NAMES:
            spec = JobSpec.model_validate({**MINIMAL, "objective": name,
                                           "training": {"recipe": recipe}})
            nulls = [k for k, v in spec.training.model_dump().items() if v is None]
            assert nulls == ["referee_every"], (name, recipe, nulls)
            assert all(v is not None for v in spec.objective.model_dump().values()), name
            assert spec.architecture.critic.spectral_norm is (name == "hinge")


def test_latent_dim_null_is_fixed_by_the_data():
    spec = JobSpec.model_validate(MINIMAL)
    assert spec.architecture.latent_dim is None
    assert spec.with_latent_dim(2, 0).architecture.latent_dim == 2
    assert spec.with_latent_dim(1, 0).architecture.latent_dim == 2
    assert spec.with_latent_dim(64, 0).architecture.latent_dim == 64
    assert spec.with_latent_dim(3, 4).architecture.latent_dim == 32
    assert spec.with_latent_dim(64, 1).architecture.latent_dim == 64
    assert spec.architecture.latent_dim is None  # a copy
    fixed = JobSpec.model_validate({**MINIMAL, "architecture": {"latent_dim": 16}})
    assert fixed.with_latent_dim(64, 0).architecture.latent_dim == 16


def test_hinge_critic_is_spectrally_normalised_unless_the_spec_says_no():
    spec = JobSpec.model_validate({**MINIMAL, "objective": "hinge",
                                   "architecture": {"critic": {"spectral_norm": False}}})
    assert spec.architecture.critic.spectral_norm is False


def test_dcgan_defaults_to_minmax_scaling_for_its_tanh_output():
    spec = JobSpec.model_validate({**MINIMAL, "architecture": "dcgan",
                                   "dataset": {"uri": "builtin://digits"}})
    assert spec.dataset.preprocessing == "minmax"


@pytest.mark.parametrize(
    ("patch", "location"),
    [
        ({"objective": {"name": "wgan", "clp": 0.1}}, ("objective", "wgan", "clp")),
        ({"training": {"stepz": 5}}, ("training", "stepz")),
        ({"dataset": {"uri": "builtin://8gaussians", "colour": 1}}, ("dataset", "colour")),
        ({"architecture": {"name": "mlp", "critic": {"wdth": 3}}}, ("architecture", "critic", "wdth")),
        ({"banana": 1}, ("banana",)),
    ],
)
def test_unknown_keys_are_rejected_with_their_location(patch, location):
    with pytest.raises(ValidationError) as err:
        JobSpec.model_validate({**MINIMAL, **patch})
    locs = [e["loc"] for e in err.value.errors()]
    assert location in locs


def test_compile_and_precision_are_off_unless_asked_and_checked():
    training = JobSpec.model_validate(MINIMAL).training
    assert training.compile is False and training.precision == "float32"
    fast = JobSpec.model_validate({**MINIMAL, "training": {"compile": True,
                                                           "precision": "bfloat16"}})
    assert fast.training.compile is True and fast.training.precision == "bfloat16"
    with pytest.raises(ValidationError) as err:
        # float16 would need loss scaling; it is not offered
        JobSpec.model_validate({**MINIMAL, "training": {"precision": "float16"}})
    assert ("training", "precision") in [e["loc"] for e in err.value.errors()]


def test_unknown_objective_lists_the_valid_names():
    with pytest.raises(ValidationError) as err:
        JobSpec.model_validate({**MINIMAL, "objective": "wgan-xx"})
    message = str(err.value)
    assert all(f"'{name}'" in message for name in OBJECTIVE_NAMES)


def test_fgan_divergences_are_checked():
    JobSpec.model_validate({**MINIMAL, "objective": {"name": "fgan", "divergence": "hellinger"}})
    with pytest.raises(ValidationError, match="divergence"):
        JobSpec.model_validate({**MINIMAL, "objective": {"name": "fgan", "divergence": "tv"}})


def test_batch_norm_critic_is_refused_with_a_gradient_penalty():
    bad = {**MINIMAL, "architecture": {"name": "mlp", "critic": {"norm": "batch"}}}
    with pytest.raises(ValidationError, match="per-sample gradient penalty"):
        JobSpec.model_validate(bad)
    JobSpec.model_validate({**bad, "objective": "nsgan"})


def test_bad_uri_scheme_and_roles():
    with pytest.raises(ValidationError, match="unsupported URI scheme"):
        JobSpec.model_validate({**MINIMAL, "dataset": {"uri": "ftp://host/x.csv"}})
    with pytest.raises(ValidationError, match="more than one role"):
        JobSpec.model_validate({**MINIMAL, "dataset": {"uri": "file:///d/x.csv",
                                                       "features": ["p"], "conditions": ["p"]}})


def test_spec_hash_is_stable_and_sensitive():
    a = JobSpec.model_validate(MINIMAL)
    b = JobSpec.model_validate(a.model_dump(mode="json"))  # a stored spec validates to itself
    c = JobSpec.model_validate({**MINIMAL, "training": {"seed": 1}})
    assert a.spec_hash() == b.spec_hash() != c.spec_hash()


def test_importing_the_spec_does_not_load_torch():
    code = "import sys, models.spec; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
