"""The job spec: the contract between the API, the worker and the training code.

Pure pydantic (no torch), so the API can validate specs without loading PyTorch.
Each objective names recipes: "default" (settings validated on the toy sets within a CPU
budget, what a spec gets when it says nothing) and "paper" (the objective's published
settings). The fields a spec leaves out are filled from the chosen recipe when the spec is
validated, so a stored spec always says exactly what ran.
"""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeAlias, Union

from pydantic import Field, field_validator, model_validator

from models.objectives import PARAMS
from models.objectives.params import (
    MAX_LR,
    RECIPE_NAMES,
    Float,
    Int,
    ObjectiveParams,
    Recipe,
)
from models.objectives.params import StrictModel as _Strict

# ---------------------------------------------------------------------------------------------
# Objectives: each declared in its own file of models/objectives (its parameters and recipes);
# the union of their parameters, told apart by `name`, is read from the registry.
# ---------------------------------------------------------------------------------------------

OBJECTIVE_PARAMS: tuple[type[ObjectiveParams], ...] = tuple(PARAMS.values())
if TYPE_CHECKING:
    # The union is built at run time from the registry; type checkers see its common base.
    ObjectiveSpec: TypeAlias = ObjectiveParams
else:
    ObjectiveSpec = Annotated[Union[OBJECTIVE_PARAMS], Field(discriminator="name")]  # noqa: UP007
OBJECTIVE_NAMES: tuple[str, ...] = tuple(PARAMS)
OBJECTIVE_RECIPES: dict[str, dict[str, Recipe]] = {
    name: params.recipes for name, params in PARAMS.items()
}

# ---------------------------------------------------------------------------------------------
# Architecture
# ---------------------------------------------------------------------------------------------

Activation = Literal["relu", "leaky_relu", "elu", "gelu", "silu", "tanh"]
Norm = Literal["none", "layer", "batch"]


class NetSpec(_Strict):
    """One network. MLPs use `width` x `depth` hidden layers (resmlp: `depth` residual blocks);
    dcgan uses `channels` feature maps at the finest resolution."""

    width: Int = Field(
        128, ge=1, le=8192,
        description="Units of each hidden layer (mlp) or residual block (resmlp).")
    depth: Int = Field(
        3, ge=1, le=64,
        description="Hidden layers (mlp) or residual blocks (resmlp).")
    channels: Int = Field(
        64, ge=1, le=1024,
        description="dcgan: feature maps at the finest hidden level (side H/2), doubling each time "
                    "the side halves.")
    activation: Activation = Field("relu", description="Activation of the hidden layers.")
    norm: Norm | None = Field(
        None,
        description="Normalisation of the hidden layers. null: batch in the dcgan generator (as in "
                    "the DCGAN paper), none everywhere else.")
    dropout: Float = Field(
        0.0, ge=0.0, lt=1.0,
        description="Dropout probability after each hidden layer; 0: none.")


class CriticSpec(NetSpec):
    activation: Activation | None = Field(  # type: ignore[assignment]
        None,
        description="Activation of the hidden layers. null: the recipe's choice (the "
                    "classifier-type losses': leaky_relu), else relu.")
    spectral_norm: bool | None = Field(
        None,
        description="Spectral normalisation (Miyato 2018) of every linear and convolution layer of "
                    "the critic. null: the recipe's choice (hinge's recipes: on, as in SN-GAN), "
                    "else off.")


class ArchitectureSpec(_Strict):
    name: Literal["mlp", "resmlp", "dcgan"] = Field(
        "mlp",
        description="mlp: fully connected; resmlp: residual blocks; dcgan: convolutional, for "
                    "square images.")
    latent_dim: Int | None = Field(
        None, ge=1, le=4096,
        description="Noise dimensions. null: fixed when the data are loaded (unconditional data: "
                    "as many as the features, at least 2; conditional data: at least 32); the "
                    "model's metadata says which.")
    generator: NetSpec = Field(default_factory=NetSpec, description="The generator's network.")
    critic: CriticSpec = Field(
        default_factory=CriticSpec,
        description="The critic's (discriminator's) network.")

    @model_validator(mode="after")
    def _fill_norm_defaults(self) -> ArchitectureSpec:
        if self.generator.norm is None:
            self.generator.norm = "batch" if self.name == "dcgan" else "none"
        if self.critic.norm is None:
            self.critic.norm = "none"
        return self


# ---------------------------------------------------------------------------------------------
# Dataset
# ---------------------------------------------------------------------------------------------


class DatasetSpec(_Strict):
    """Where the data lies and which columns play which role.

    `uri`: builtin://NAME, file:///abs/path (under a configured data root), dataset://ID
    (an upload), http(s)://, s3://. `table`: the TTree of a ROOT file, the dataset of an HDF5
    file or the array of an NPZ file. `features` left out: every column that is not a
    condition or the weight. NPY/NPZ arrays name their columns col0, col1, ...
    """

    uri: str = Field(
        min_length=1,
        description="Where the data lie: builtin://NAME, file:///abs/path (under DATA_ROOTS), "
                    "dataset://ID (an upload), http(s)://host/path or s3://bucket/key (hosts and "
                    "buckets in ALLOWED_HOSTS).")
    features: list[str] | None = Field(
        None,
        description="The generated columns. null: every column that is neither a condition nor the "
                    "weight.")
    conditions: list[str] = Field(
        default_factory=list,
        description="The columns the generator is conditioned on; empty: an unconditional model.")
    categorical: list[str] = Field(
        default_factory=list,
        description="Condition columns (integers or strings) one-hot encoded inside the exported "
                    "graph; sampling takes their values. Non-numeric condition columns are "
                    "categorical anyway.")
    weights: str | None = Field(
        None,
        description="The column of per-event weights (signed sWeights allowed). null: every row "
                    "counts once.")
    regress_weights: bool | None = Field(
        None,
        description="Train on E[w | conditions, features], regressed by a small cross-fitted "
                    "network with a bounded output, instead of the weights themselves (Borisyak & "
                    "Kazeev 2019): the same weighted law, far less variance, and no negative "
                    "weight. null: on when some weight is negative (signed sWeights), off "
                    "otherwise. The validation score uses the regression too; the report uses the "
                    "weights as given.")
    preprocessing: Literal["standard", "quantile", "minmax", "none"] | None = Field(
        None,
        description="Per-column transform to the model's scale, fitted on the training rows and "
                    "inverted inside the exported graph. null: minmax (to [-1, 1], the range of a "
                    "tanh output) for dcgan, standard otherwise.")
    table: str | None = Field(
        None,
        description="The TTree or RNTuple of a ROOT file, the dataset or group of an HDF5 file, or "
                    "the array of an NPZ file. null: the file's only one.")
    max_rows: Int | None = Field(
        None, ge=1, lt=2**63,
        description="Keep the first max_rows rows. null: all of them.")
    validation_fraction: Float = Field(
        0.1, ge=0.0, lt=0.5,
        description="Share of the training rows (after the holdout) kept out of the gradient steps "
                    "to choose the exported weights and to stop early (training.validate_every); "
                    "seeded by training.seed. 0: no validation split.")
    holdout_fraction: Float = Field(
        0.2, ge=0.0, lt=1.0,
        description="Share of the rows held out of training for the quality report (a permutation "
                    "by training.seed, the same every run). 0: none held out; the report then "
                    "compares with the training rows.")

    @field_validator("uri")
    @classmethod
    def _known_scheme(cls, uri: str) -> str:
        schemes = ("builtin://", "file://", "dataset://", "http://", "https://", "s3://")
        if not uri.startswith(schemes):
            raise ValueError(f"unsupported URI scheme in {uri!r}; use one of {', '.join(schemes)}")
        return uri

    @model_validator(mode="after")
    def _roles_disjoint(self) -> DatasetSpec:
        named = list(self.features or []) + self.conditions + ([self.weights] if self.weights else [])
        dupes = sorted({c for c in named if named.count(c) > 1})
        if dupes:
            raise ValueError(f"columns used in more than one role: {dupes}")
        return self

    @model_validator(mode="after")
    def _categorical_are_conditions(self) -> DatasetSpec:
        dupes = sorted({c for c in self.categorical if self.categorical.count(c) > 1})
        if dupes:
            raise ValueError(f"categorical names a column more than once: {dupes}")
        features = [c for c in self.categorical if c in (self.features or [])
                    or c == self.weights]
        if features:
            raise ValueError(f"only condition columns can be categorical, not the generated "
                             f"feature (or weights) column(s) {features}")
        # With no conditions named, the data set's default conditions apply: the loader checks.
        if self.conditions:
            stray = [c for c in self.categorical if c not in self.conditions]
            if stray:
                raise ValueError(f"categorical column(s) {stray} are not among the conditions "
                                 f"{self.conditions}; only condition columns can be categorical")
        return self


# ---------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------


# The precisions of training.precision (models.acceleration runs them).
Precision = Literal["float32", "bfloat16"]


class TrainingSpec(_Strict):
    """`steps` counts generator updates (at most: early stopping may end sooner); each is
    preceded by `n_critic` critic updates. Fields left as null take the value of the recipe
    (`recipe`: "default", the settings validated on the toy sets, or "paper", the objective's
    published settings); a field the spec sets overrides the recipe."""

    recipe: Literal["default", "paper"] = Field(
        "default",
        description="The objective's set of settings that fills every field left null: default "
                    "(validated on the toy sets) or paper (the published settings).")
    steps: Int = Field(
        5000, ge=1, le=10_000_000,
        description="Generator updates, at most (early stopping may end sooner); the service caps "
                    "it at MAX_TRAINING_STEPS.")
    batch_size: Int | None = Field(
        None, ge=2, le=1_000_000,
        description="Real rows per batch (and as many generated ones). null: the recipe's.")
    n_critic: Int | None = Field(
        None, ge=1, le=100,
        description="Critic updates before each generator update. null: the recipe's.")
    lr_g: Float | None = Field(
        None, gt=0, le=MAX_LR,
        description="The generator's learning rate. null: the recipe's.")
    lr_d: Float | None = Field(
        None, gt=0, le=MAX_LR,
        description="The critic's learning rate. null: the recipe's.")
    betas: tuple[Float, Float] | None = Field(
        None,
        description="Adam's (beta1, beta2), each in [0, 1). null: the recipe's.")
    momentum: Float | None = Field(
        None, ge=0, lt=1,
        description="SGD's momentum. null: the recipe's, else 0.")
    optimizer: Literal["adam", "rmsprop", "sgd"] | None = Field(
        None,
        description="The optimiser of both networks. null: the recipe's.")
    lr_schedule: Literal["constant", "linear"] | None = Field(
        None,
        description="linear: both learning rates fall linearly to 0 at the last step (WGAN-GP's "
                    "CIFAR runs). null: the recipe's.")
    seed: Int = Field(
        0, ge=0, lt=2**63,
        description="Seeds the weights, the noise, the batches, the weight regression and the "
                    "holdout and validation splits.")
    ema: Float | None = Field(
        None, ge=0, lt=1,
        description="Decay of an exponential moving average of the generator's weights, exported "
                    "instead of the generator; 0: off. null: the recipe's.")
    instance_noise: Float | None = Field(
        None, ge=0, le=10,
        description="Instance noise (Sonderby et al. 2016; Arjovsky & Bottou 2017): the std of "
                    "Gaussian noise added to every row the critic sees, real and generated, on the "
                    "model's (standardised) scale, annealed linearly to 0 at the last step. 0: "
                    "off.")
    validate_every: Int = Field(
        250, ge=0, le=10_000_000,
        description="Steps between scores of the generator on the validation rows (sliced "
                    "Wasserstein distance); the best scoring weights are exported. 0: no "
                    "validation, the last weights are exported.")
    patience: Int = Field(
        8, ge=0, le=1_000_000,
        description="Validation scores without improvement before training stops early. 0: never "
                    "early.")
    checkpoint_every: Int = Field(
        500, ge=1, le=10_000_000,
        description="Steps between checkpoints; a resumed job goes on from the last one.")
    log_every: Int = Field(
        50, ge=1, le=10_000_000,
        description="Steps between progress reports (the event stream and the training curve).")
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto",
        description="auto and cuda: the GPU when one is present, else the CPU; cpu: the CPU.")
    compile: bool = Field(
        False,
        description="Run both networks of the training steps under torch.compile (inductor; on "
                    "the CPU it needs a C++ compiler). Compiling takes 10-60 s at the start of a "
                    "job. The gradient penalty (wgan-gp, cramer) differentiates the critic twice, "
                    "which torch.compile cannot: that one critic pass stays eager. The weights, "
                    "checkpoints and the exported generator are those of the eager networks.")
    precision: Precision = Field(
        "float32",
        description="bfloat16: both networks of the training steps run under torch.autocast "
                    "(matrix products and convolutions in bfloat16; weights, optimiser states, "
                    "losses and the exported generator stay float32). Faster where the hardware "
                    "has bfloat16 units (Ampere and later GPUs, CPUs with AMX or AVX-512 BF16), "
                    "slower elsewhere.")
    referee_every: Int | None = Field(
        None, ge=1, le=10_000_000,
        description="A referee (pidgan): a small classifier trained alongside on real vs generated "
                    "rows; its ROC AUC is measured every referee_every steps and reported in the "
                    "progress. null: off.")

    @field_validator("betas")
    @classmethod
    def _betas_in_range(cls, betas: tuple[float, float] | None) -> tuple[float, float] | None:
        if betas is not None and not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError("betas must lie in [0, 1)")
        return betas


def auto_latent_dim(n_features: int, n_conditions: int) -> int:
    """architecture.latent_dim null: unconditional data get as many noise dimensions as they
    have features (at least 2), conditional data at least 32.

    Measured with the wgan-gp default recipe at 5000 steps (docs/quality.md): on the 8
    Gaussians every extra noise dimension costs sharpness (97.1% high-quality with 2, 94.6%
    with 8, 94.9% with 32); on the Lamarr-like toy, whose targets switch between two modes
    with the conditions, few dimensions cannot follow (classifier AUC 0.605 with 3, 0.548 with
    8, 0.542 with 32)."""
    if n_conditions == 0:
        return max(2, n_features)
    return max(32, n_features)


# A field that no recipe names takes this value.
TRAINING_FALLBACKS: dict[str, Any] = {"momentum": 0.0, "instance_noise": 0.0}

# ---------------------------------------------------------------------------------------------
# The job
# ---------------------------------------------------------------------------------------------


class JobSpec(_Strict):
    objective: ObjectiveSpec = Field(
        description="The objective and its own parameters, told apart by name; a name alone is "
                    "short for {'name': NAME}.")
    architecture: ArchitectureSpec = Field(
        default_factory=ArchitectureSpec,
        description="The generator and the critic; a name alone is short for {'name': NAME}.")
    dataset: DatasetSpec = Field(description="The data and the roles of their columns.")
    training: TrainingSpec = Field(default_factory=TrainingSpec, description="The training loop.")

    @field_validator("objective", mode="before")
    @classmethod
    def _name_alone(cls, value: object) -> object:
        # "objective": "wgan-gp" is shorthand for {"name": "wgan-gp"}.
        return {"name": value} if isinstance(value, str) else value

    @field_validator("architecture", mode="before")
    @classmethod
    def _arch_name_alone(cls, value: object) -> object:
        return {"name": value} if isinstance(value, str) else value

    @model_validator(mode="after")
    def _fill_from_recipe(self) -> JobSpec:
        recipe = OBJECTIVE_RECIPES[self.objective.name][self.training.recipe]
        for target, values in ((self.objective, recipe.objective),
                               (self.training, recipe.training),
                               (self.architecture.critic, recipe.critic)):
            for field, value in values.items():
                if getattr(target, field) is None:
                    setattr(target, field, value)
        for field, fallback in TRAINING_FALLBACKS.items():
            if getattr(self.training, field) is None:
                setattr(self.training, field, fallback)
        if self.architecture.critic.spectral_norm is None:
            self.architecture.critic.spectral_norm = False
        if self.architecture.critic.activation is None:
            self.architecture.critic.activation = "relu"
        images = self.architecture.name == "dcgan"
        if self.dataset.preprocessing is None:
            self.dataset.preprocessing = "minmax" if images else "standard"
        return self

    @model_validator(mode="after")
    def _penalty_needs_per_sample_critic(self) -> JobSpec:
        penalised = self.objective.name in ("wgan-gp", "cramer")
        if penalised and self.architecture.critic.norm == "batch":
            raise ValueError(
                "architecture.critic.norm='batch' mixes samples, so the per-sample gradient "
                f"penalty of {self.objective.name} is wrong; use 'layer' or 'none'"
            )
        return self

    def with_latent_dim(self, n_features: int, n_conditions: int) -> JobSpec:
        """This spec with `architecture.latent_dim` fixed for the data (auto_latent_dim)."""
        if self.architecture.latent_dim is not None:
            return self
        resolved = self.model_copy(deep=True)
        resolved.architecture.latent_dim = auto_latent_dim(n_features, n_conditions)
        return resolved

    def spec_hash(self) -> str:
        """sha256 of the canonical JSON of the fully resolved spec."""
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()


__all__ = ["OBJECTIVE_NAMES", "OBJECTIVE_PARAMS", "OBJECTIVE_RECIPES", "RECIPE_NAMES",
           "ArchitectureSpec", "DatasetSpec", "JobSpec", "NetSpec", "ObjectiveSpec", "Recipe",
           "Precision", "TrainingSpec", "auto_latent_dim"]
