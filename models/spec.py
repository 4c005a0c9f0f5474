"""The job spec: the contract between the API, the worker and the training code.

Pure pydantic (no torch), so the API can validate specs without loading PyTorch.
Every default that an objective's paper publishes is that objective's default; the
training fields left out of a spec are filled from ``OBJECTIVE_DEFAULTS`` when the spec is
validated, so a stored spec always says exactly what ran.
"""

from __future__ import annotations

import hashlib
import json
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ---------------------------------------------------------------------------------------------
# Objectives: one params class per objective, told apart by `name`.
# ---------------------------------------------------------------------------------------------


class MinimaxParams(_Strict):
    """Goodfellow et al. 2014, the saturating generator loss E log(1 - D(G(z)))."""

    name: Literal["minimax"]


class NSGANParams(_Strict):
    """Non-saturating GAN: the generator minimises -E log D(G(z))."""

    name: Literal["nsgan"]


class LSGANParams(_Strict):
    """Least-squares GAN (Mao et al. 2017), targets a=0 (fake), b=1 (real), c=1."""

    name: Literal["lsgan"]


Divergence = Literal["kl", "reverse_kl", "pearson", "neyman", "hellinger", "js", "gan"]


class FGANParams(_Strict):
    """f-GAN (Nowozin et al. 2016). `generator_loss`: the paper's practical step -E g_f(V)
    ("practical") or the saddle-point step E f*(g_f(V)) ("saddle")."""

    name: Literal["fgan"]
    divergence: Divergence = "js"
    generator_loss: Literal["practical", "saddle"] = "practical"


class WGANParams(_Strict):
    """WGAN with weight clipping (Arjovsky et al. 2017): every critic weight in [-clip, clip]."""

    name: Literal["wgan"]
    clip: float = Field(0.01, gt=0)


class WGANGPParams(_Strict):
    """WGAN-GP (Gulrajani et al. 2017); `one_sided` penalises only norms above 1."""

    name: Literal["wgan-gp"]
    gp_lambda: float = Field(10.0, ge=0)
    one_sided: bool = False


class CramerParams(_Strict):
    """Cramér GAN (Bellemare et al. 2017, Algorithm 1); the critic maps to R^feature_dim."""

    name: Literal["cramer"]
    gp_lambda: float = Field(10.0, ge=0)
    feature_dim: int = Field(256, ge=1, le=4096)


class HingeParams(_Strict):
    """Hinge loss (Lim & Ye 2017; Miyato et al. 2018): D min E relu(1-V(x)) + E relu(1+V(G(z)))."""

    name: Literal["hinge"]


ObjectiveSpec = Annotated[
    MinimaxParams
    | NSGANParams
    | LSGANParams
    | FGANParams
    | WGANParams
    | WGANGPParams
    | CramerParams
    | HingeParams,
    Field(discriminator="name"),
]

OBJECTIVE_NAMES = ("minimax", "nsgan", "lsgan", "fgan", "wgan", "wgan-gp", "cramer", "hinge")


class TrainingDefaults(_Strict):
    optimizer: Literal["adam", "rmsprop", "sgd"]
    lr_g: float
    lr_d: float
    betas: tuple[float, float] = (0.9, 0.999)
    momentum: float = 0.0
    n_critic: int


# The published settings of each objective's paper (../shared/REFERENCE.md).
OBJECTIVE_DEFAULTS: dict[str, TrainingDefaults] = {
    # Goodfellow 2014: k=1 discriminator step, SGD with momentum.
    "minimax": TrainingDefaults(optimizer="sgd", lr_g=1e-2, lr_d=1e-2, momentum=0.5, n_critic=1),
    # DCGAN (Radford 2015): Adam 2e-4, beta1 0.5.
    "nsgan": TrainingDefaults(optimizer="adam", lr_g=2e-4, lr_d=2e-4, betas=(0.5, 0.999), n_critic=1),
    "lsgan": TrainingDefaults(optimizer="adam", lr_g=2e-4, lr_d=2e-4, betas=(0.5, 0.999), n_critic=1),
    "fgan": TrainingDefaults(optimizer="adam", lr_g=2e-4, lr_d=2e-4, betas=(0.5, 0.999), n_critic=1),
    # Arjovsky 2017: RMSProp 5e-5, n_critic 5.
    "wgan": TrainingDefaults(optimizer="rmsprop", lr_g=5e-5, lr_d=5e-5, n_critic=5),
    # Gulrajani 2017: Adam 1e-4, betas (0, 0.9), n_critic 5.
    "wgan-gp": TrainingDefaults(optimizer="adam", lr_g=1e-4, lr_d=1e-4, betas=(0.0, 0.9), n_critic=5),
    "cramer": TrainingDefaults(optimizer="adam", lr_g=1e-4, lr_d=1e-4, betas=(0.0, 0.9), n_critic=5),
    # Miyato 2018 (SN-GAN, hinge): Adam 2e-4, betas (0, 0.9), n_dis 5.
    "hinge": TrainingDefaults(optimizer="adam", lr_g=2e-4, lr_d=2e-4, betas=(0.0, 0.9), n_critic=5),
}

# ---------------------------------------------------------------------------------------------
# Architecture
# ---------------------------------------------------------------------------------------------

Activation = Literal["relu", "leaky_relu", "elu", "gelu", "silu", "tanh"]
Norm = Literal["none", "layer", "batch"]


class NetSpec(_Strict):
    """One network. MLPs use `width` x `depth` hidden layers (resmlp: `depth` residual blocks);
    dcgan uses `channels` feature maps at the finest resolution."""

    width: int = Field(256, ge=1, le=8192)
    depth: int = Field(3, ge=1, le=64)
    channels: int = Field(64, ge=1, le=1024)
    activation: Activation = "relu"
    # null: "batch" in the dcgan generator (as in the DCGAN paper), "none" everywhere else.
    norm: Norm | None = None
    dropout: float = Field(0.0, ge=0.0, lt=1.0)


class CriticSpec(NetSpec):
    activation: Activation = "leaky_relu"
    spectral_norm: bool = False


class ArchitectureSpec(_Strict):
    name: Literal["mlp", "resmlp", "dcgan"] = "mlp"
    latent_dim: int = Field(32, ge=1, le=4096)
    generator: NetSpec = Field(default_factory=NetSpec)
    critic: CriticSpec = Field(default_factory=CriticSpec)

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

    uri: str = Field(min_length=1)
    features: list[str] | None = None
    conditions: list[str] = Field(default_factory=list)
    weights: str | None = None
    # null: "minmax" (to [-1, 1], the range of a tanh output) for dcgan, "standard" otherwise.
    preprocessing: Literal["standard", "quantile", "minmax", "none"] | None = None
    table: str | None = None
    max_rows: int | None = Field(None, ge=1)
    # Share of the rows held out of training for the quality report (deterministic by
    # training.seed); 0: none held out, the report then compares with the training rows.
    holdout_fraction: float = Field(0.2, ge=0.0, lt=1.0)

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


# ---------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------


class TrainingSpec(_Strict):
    """`steps` counts generator updates; each is preceded by `n_critic` critic updates.
    Fields left as null take the objective's published default."""

    steps: int = Field(2000, ge=1, le=10_000_000)
    batch_size: int = Field(256, ge=2, le=1_000_000)
    n_critic: int | None = Field(None, ge=1, le=100)
    lr_g: float | None = Field(None, gt=0)
    lr_d: float | None = Field(None, gt=0)
    betas: tuple[float, float] | None = None
    momentum: float | None = Field(None, ge=0, lt=1)
    optimizer: Literal["adam", "rmsprop", "sgd"] | None = None
    # "linear": both learning rates fall linearly to 0 at the last step (WGAN-GP's CIFAR runs).
    lr_schedule: Literal["constant", "linear"] = "constant"
    seed: int = Field(0, ge=0, lt=2**63)
    # Decay of an exponential moving average of G's weights, exported instead of G; null: off.
    ema: float | None = Field(None, ge=0, lt=1)
    checkpoint_every: int = Field(500, ge=1)
    log_every: int = Field(50, ge=1)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # A referee (pidgan): a small classifier trained alongside on real vs generated; its ROC
    # AUC is measured every `referee_every` steps and reported in the progress. null: off.
    referee_every: int | None = Field(None, ge=1)

    @field_validator("betas")
    @classmethod
    def _betas_in_range(cls, betas: tuple[float, float] | None) -> tuple[float, float] | None:
        if betas is not None and not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError("betas must lie in [0, 1)")
        return betas


# ---------------------------------------------------------------------------------------------
# The job
# ---------------------------------------------------------------------------------------------


class JobSpec(_Strict):
    objective: ObjectiveSpec
    architecture: ArchitectureSpec = Field(default_factory=ArchitectureSpec)
    dataset: DatasetSpec
    training: TrainingSpec = Field(default_factory=TrainingSpec)

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
    def _fill_published_defaults(self) -> JobSpec:
        defaults = OBJECTIVE_DEFAULTS[self.objective.name]
        t = self.training
        for field in ("optimizer", "lr_g", "lr_d", "betas", "momentum", "n_critic"):
            if getattr(t, field) is None:
                setattr(t, field, getattr(defaults, field))
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

    def spec_hash(self) -> str:
        """sha256 of the canonical JSON of the fully resolved spec."""
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()
