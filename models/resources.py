"""How much memory a job needs, from its spec: pure arithmetic, torch-free (the API calls it
at submit time; the worker again once the data are loaded, with their real shape).

Everything is counted in float32 tensors (4 bytes):

- **state**: the weights of both networks, their gradients, the optimiser's state (Adam: two
  per weight; RMSprop: one; SGD: one with momentum), the EMA copy of G, the best validated
  copy of G, and the checkpoint read back on resume (weights, EMA and optimiser state once
  more: train() keeps it while it trains). A spectrally normalised critic keeps W / sigma
  beside W;
- **activations**: what one training step keeps for its backward pass, per row of the batch,
  at the larger of the critic step (the critic on the real batch and each generated batch,
  and on the interpolates three times over for a gradient penalty: its forward pass, the
  gradient graph `create_graph` keeps, and the double backward) and the generator step
  (G and the critic on each generated batch, the critic on the real batch when the loss
  reads it, the referee);
- **data**: rows x columns in the copies the pipeline holds at once (read, split, scaled,
  as a tensor). Unknown at submit time unless the data set is a builtin or `max_rows` is set;
- **runtime**: the interpreter, torch and the libraries (RUNTIME_BYTES).

At submit time the feature count of a file or an upload is unknown: it is taken small
(ASSUMED_FEATURES), so the submit check is a lower bound that the worker tightens.
Calibration against the measured peak resident memory: docs/security.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from urllib.parse import urlparse

from models.spec import JobSpec, NetSpec, auto_latent_dim

FLOAT_BYTES = 4
GB = 1e9
RUNTIME_BYTES = 512 * 1024**2  # python + torch + numpy/sklearn/onnx, resident (measured ~350 MB)
ASSUMED_FEATURES = 16  # a file's or an upload's feature count before it is read: "small"
ASSUMED_CATEGORIES = 2  # one-hot columns of a categorical condition whose values are unknown
DATA_COPIES = 6  # read (float64 on the way), split, scaled, tensor: float32 columns each
PENALTY_PASSES = 3  # forward on the interpolates + its create_graph gradient + double backward
REFEREE_WIDTH = 64  # models.referee.WIDTH (not imported: torch)
REFEREE_LAYERS = 2
# Tensors of `width` one hidden layer keeps for backward. ReLU and tanh keep their output,
# which is also the next Linear's input: one. Leaky ReLU, ELU, GELU, SiLU keep their input
# (the Linear's output) as well: two. A norm and a dropout mask add one each.
OUTPUT_SAVING = ("relu", "tanh")
# Convolutions keep about as much again in workspace (measured: dcgan on digits).
CONV_WORKSPACE = 2
# Cramér's critic maps to R^feature_dim and its loss keeps two such differences per pass.
CRAMER_SAVED_OUTPUTS = 2

# builtin://NAME: (features, conditions, rows, image shape), as models.datasets.builtin makes
# them (tests/worker/test_resources.py checks this table against the real sets).
BUILTIN_SHAPES: dict[str, tuple[int, int, int, tuple[int, int, int] | None]] = {
    "8gaussians": (2, 0, 100_000, None),
    "25gaussians": (2, 0, 100_000, None),
    "swissroll": (2, 0, 100_000, None),
    "conditional-ring": (2, 1, 100_000, None),
    "digits": (64, 0, 1797, (1, 8, 8)),
    "two-gaussians": (1, 0, 100_000, None),
    "lamarr-toy": (3, 4, 50_000, None),
    "splot-toy": (2, 1, 50_000, None),
}
DIGIT_CLASSES = 10  # digits: the condition "digit" is ten one-hot columns


class MemoryBudgetExceeded(ValueError):
    """The estimate is above the configured budget; the message says both, in GB."""


@dataclass(frozen=True)
class DataShape:
    """What the estimate needs to know about the data. `rows` 0: unknown (not counted)."""

    features: int
    conditions: int  # columns the networks see (categorical conditions one-hot)
    rows: int = 0
    image_shape: tuple[int, int, int] | None = None
    known: bool = True  # False: assumed at submit time (ASSUMED_FEATURES)


@dataclass(frozen=True)
class Net:
    params: int  # trainable weights
    matrix_params: int  # of which in Linear / Conv weights (spectral norm copies these)
    units: int  # floats per row kept for backward by one forward pass


@dataclass(frozen=True)
class MemoryEstimate:
    parameters: int  # weights of G and D together
    state_bytes: int
    activation_bytes: int
    data_bytes: int
    runtime_bytes: int
    shape: DataShape

    @property
    def total_bytes(self) -> int:
        return self.state_bytes + self.activation_bytes + self.data_bytes + self.runtime_bytes

    def describe(self) -> str:
        data = (f"data {self.data_bytes / GB:,.2f} GB" if self.shape.rows
                else "data not counted (rows unknown until loaded)")
        assumed = "" if self.shape.known else (
            f"; assuming {self.shape.features} features until the data are read")
        return (f"about {self.total_bytes / GB:,.1f} GB: {self.parameters:,} parameters, "
                f"weights + gradients + optimiser state {self.state_bytes / GB:,.2f} GB, "
                f"activations of a batch {self.activation_bytes / GB:,.2f} GB, {data}, "
                f"runtime {self.runtime_bytes / GB:,.2f} GB{assumed}")

    def dominant_field(self) -> list[str | int]:
        """Where to point a 422: the batch when activations dominate, else the networks."""
        if self.activation_bytes >= self.state_bytes:
            return ["body", "training", "batch_size"]
        return ["body", "architecture"]


# --- the networks ----------------------------------------------------------------------------


def _linear(n_in: int, n_out: int, bias: bool = True) -> int:
    return n_in * n_out + (n_out if bias else 0)


def _saved_per_layer(net: NetSpec) -> int:
    activation = 1 if (net.activation or "relu") in OUTPUT_SAVING else 2
    return activation + (net.norm not in (None, "none")) + (net.dropout > 0)


def _layer_units(net: NetSpec, width: int) -> int:
    return _saved_per_layer(net) * width


def _norm_params(net: NetSpec, width: int) -> int:
    return 2 * width if net.norm in ("layer", "batch") else 0


def mlp(net: NetSpec, n_in: int, n_out: int) -> Net:
    """models.architectures.mlp: depth x (Linear -> norm -> act -> dropout), linear head."""
    bias = net.norm != "batch"
    matrices = n_in * net.width + (net.depth - 1) * net.width**2 + net.width * n_out
    params = (_linear(n_in, net.width, bias) + (net.depth - 1) * _linear(net.width, net.width, bias)
              + net.depth * _norm_params(net, net.width) + _linear(net.width, n_out))
    units = n_in + net.depth * _layer_units(net, net.width) + n_out
    return Net(params, matrices, units)


def resmlp(net: NetSpec, n_in: int, n_out: int) -> Net:
    """models.architectures.resmlp: projection, depth x pre-activation residual block of two
    Linears, final norm -> act -> Linear."""
    w, bias = net.width, net.norm != "batch"
    block = _linear(w, w, bias) + _linear(w, w) + 2 * _norm_params(net, w)
    params = (_linear(n_in, w) + net.depth * block + _norm_params(net, w) + _linear(w, n_out))
    matrices = n_in * w + 2 * net.depth * w * w + w * n_out
    units = n_in + w + net.depth * (2 * _layer_units(net, w) + w) + _layer_units(net, w) + n_out
    return Net(params, matrices, units)


def _levels(channels: int, side: int) -> list[int]:
    """models.architectures.dcgan.level_channels: maps at sides 4, 8, ..., side / 2."""
    n = int(math.log2(side)) - 2
    return [channels * 2 ** (n - 1 - i) for i in range(n)]


def dcgan_generator(net: NetSpec, n_in: int, image: tuple[int, int, int]) -> Net:
    c_img, side, _ = image
    chs = _levels(net.channels, side)
    bias = net.norm != "batch"
    params = _linear(n_in, chs[0] * 16, bias) + _norm_params(net, chs[0])
    matrices = n_in * chs[0] * 16
    units = n_in + _layer_units(net, chs[0] * 16)
    s = 4
    for c_in, c_out in zip(chs[:-1], chs[1:], strict=True):
        s *= 2
        params += c_in * c_out * 16 + (c_out if bias else 0) + _norm_params(net, c_out)
        matrices += c_in * c_out * 16
        units += _layer_units(net, c_out * s * s)
    params += chs[-1] * c_img * 16 + c_img
    matrices += chs[-1] * c_img * 16
    units += 2 * c_img * side * side  # the last ConvTranspose and its tanh
    return Net(params, matrices, CONV_WORKSPACE * units)


def dcgan_critic(net: NetSpec, n_conditions: int, image: tuple[int, int, int],
                 out_dim: int) -> Net:
    c_img, side, _ = image
    chs = _levels(net.channels, side)[::-1]
    bias = net.norm != "batch"
    s = side // 2
    params = c_img * chs[0] * 16 + chs[0]
    matrices = c_img * chs[0] * 16
    units = c_img * side * side + 2 * chs[0] * s * s  # no norm on the input layer
    for c_in, c_out in zip(chs[:-1], chs[1:], strict=True):
        s //= 2
        params += c_in * c_out * 16 + (c_out if bias else 0) + _norm_params(net, c_out)
        matrices += c_in * c_out * 16
        units += _layer_units(net, c_out * s * s)
    d = chs[-1] * 16
    params += _linear(d, out_dim)
    matrices += d * out_dim
    if n_conditions:  # projection discriminator: embed [C, d], mix [d, out_dim]
        params += n_conditions * d + d * out_dim
        matrices += n_conditions * d + d * out_dim
        units += 2 * d
    return Net(params, matrices, CONV_WORKSPACE * units + out_dim)


def critic_dim(spec: JobSpec) -> int:
    """The critic's outputs: Cramér's feature_dim, else one."""
    return int(getattr(spec.objective, "feature_dim", 1)) if spec.objective.name == "cramer" else 1


def networks(spec: JobSpec, shape: DataShape) -> tuple[Net, Net]:
    """(generator, critic) of the spec for data of this shape."""
    arch = spec.architecture
    latent = arch.latent_dim or auto_latent_dim(shape.features, shape.conditions)
    out_dim = critic_dim(spec)
    f, c = shape.features, shape.conditions
    if arch.name == "dcgan":
        image = shape.image_shape or (1, 8, 8)
        return (dcgan_generator(arch.generator, latent + c, image),
                dcgan_critic(arch.critic, c, image, out_dim))
    build = resmlp if arch.name == "resmlp" else mlp
    return build(arch.generator, latent + c, f), build(arch.critic, f + c, out_dim)


# --- the estimate ------------------------------------------------------------------------------


def _optimizer_slots(spec: JobSpec) -> int:
    t = spec.training
    if t.optimizer == "adam":
        return 2
    if t.optimizer == "rmsprop":
        return 1
    return 1 if (t.momentum or 0) > 0 else 0


def _state_floats(spec: JobSpec, g: Net, d: Net) -> int:
    t = spec.training
    slots = _optimizer_slots(spec)
    ema = g.params if t.ema else 0
    best = g.params if t.validate_every else 0
    spectral = d.matrix_params if spec.architecture.critic.spectral_norm else 0
    live = (g.params + d.params) * (2 + slots) + ema + best + spectral
    resumed = (g.params + d.params) * (1 + slots) + ema  # the checkpoint dict held by train()
    return live + resumed


def _activation_floats(spec: JobSpec, g: Net, d: Net) -> int:
    """Per row of the batch: the larger of the critic step and the generator step."""
    name = spec.objective.name
    cramer = name == "cramer"
    n_fakes = 2 if cramer else 1
    pass_units = d.units + (CRAMER_SAVED_OUTPUTS * critic_dim(spec) if cramer else 0)
    penalised = name in ("wgan-gp", "cramer")
    critic_step = (1 + n_fakes) * pass_units + (PENALTY_PASSES * pass_units if penalised else 0)
    critic_step += g.units // 2  # the generated batches, made without a graph
    generator_step = n_fakes * (g.units + pass_units) + (pass_units if cramer else 0)
    if spec.training.referee_every:
        generator_step += 2 * REFEREE_LAYERS * 2 * REFEREE_WIDTH  # leaky ReLU, real + fake
    return max(critic_step, generator_step)


def estimate_job_memory(spec: JobSpec, shape: DataShape | None = None) -> MemoryEstimate:
    """The memory the job of `spec` needs; `shape` None: assumed from the spec (submit time)."""
    shape = shape or shape_from_spec(spec)
    g, d = networks(spec, shape)
    batch = spec.training.batch_size or 1
    columns = shape.features + shape.conditions + 1
    return MemoryEstimate(
        parameters=g.params + d.params,
        state_bytes=_state_floats(spec, g, d) * FLOAT_BYTES,
        activation_bytes=batch * _activation_floats(spec, g, d) * FLOAT_BYTES,
        data_bytes=shape.rows * columns * DATA_COPIES * FLOAT_BYTES,
        runtime_bytes=RUNTIME_BYTES,
        shape=shape,
    )


def check_budget(estimate: MemoryEstimate, budget: int, setting: str) -> None:
    """MemoryBudgetExceeded when the estimate is above `budget` bytes (0: no check)."""
    if budget and estimate.total_bytes > budget:
        raise MemoryBudgetExceeded(
            f"this job would need {estimate.describe()}; that is above {setting}={budget} "
            f"({budget / GB:,.1f} GB): use narrower or shallower networks or a smaller "
            "training.batch_size")


# --- the data's shape at submit time -----------------------------------------------------------


def _builtin_name(uri: str) -> str | None:
    parsed = urlparse(uri)
    if parsed.scheme != "builtin":
        return None
    return parsed.netloc or parsed.path.lstrip("/")


def _condition_columns(spec: JobSpec, builtin: str | None) -> int:
    ds = spec.dataset
    digits = builtin == "digits"
    columns = 0
    for name in ds.conditions:
        one_hot = name == "digit" and digits
        columns += DIGIT_CLASSES if one_hot else 1
        if name in ds.categorical and not one_hot:
            columns += ASSUMED_CATEGORIES - 1
    return columns


def shape_from_spec(spec: JobSpec) -> DataShape:
    """The data's shape as far as the spec tells: exact for builtins, else ASSUMED_FEATURES
    (unless `features` names them) and the named conditions."""
    ds = spec.dataset
    builtin = _builtin_name(ds.uri)
    known = BUILTIN_SHAPES.get(builtin or "")
    if known is not None:
        features, conditions, rows, image = known
        if ds.features is not None:
            features = len(ds.features)
            image = None if features != known[0] else image
        if ds.conditions:
            conditions = _condition_columns(spec, builtin)
        rows = min(rows, ds.max_rows) if ds.max_rows else rows
        return DataShape(features, conditions, rows, image)
    features = len(ds.features) if ds.features is not None else ASSUMED_FEATURES
    return DataShape(features, _condition_columns(spec, None), ds.max_rows or 0,
                     known=ds.features is not None)
