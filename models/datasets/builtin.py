"""The builtin data sets: the WGAN-GP toy sets, our conditional ring and scikit-learn's digits.

The toy sets follow gan_toy.py of Gulrajani et al. 2017 (igul222/improved_wgan_training),
scaling included, so results compare with the paper's figures:

- 8gaussians: centres 2 * {(+-1, 0), (0, +-1), (+-1/sqrt2, +-1/sqrt2)}, point = centre +
  0.02 N(0, 1), then everything divided by 1.414.
- 25gaussians: centres 2 * {-2..2}^2, 4000 points per centre, + 0.05 N(0, 1), shuffled, then
  divided by 2.828.
- swissroll: make_swiss_roll(noise=0.25), columns 0 and 2, divided by 7.5.

Every set is drawn once from a fixed seed, so `builtin://NAME` means the same rows every time;
`max_rows` keeps the first rows.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence

import numpy as np

from models.datasets.base import DataError, Table

BUILTINS = ("8gaussians", "25gaussians", "swissroll", "conditional-ring", "digits")
DEFAULT_ROWS = 100_000
SEED = 20170331  # the WGAN-GP preprint's date: any fixed value would do

# The paper's divisors (its comment: "stdev") and per-Gaussian noise.
EIGHT_SCALE, EIGHT_NOISE, EIGHT_DIVISOR = 2.0, 0.02, 1.414
GRID_SPACING, GRID_NOISE, GRID_DIVISOR = 2.0, 0.05, 2.828
ROLL_NOISE, ROLL_DIVISOR = 0.25, 7.5

CONDITIONAL_RING_RADIUS = 2.0
CONDITIONAL_RING_STD = 0.1  # per coordinate, around conditional_ring_centre(angle)

DIGIT_CLASSES = [f"digit_{k}" for k in range(10)]
DIGIT_PIXELS = [f"pixel_{i}" for i in range(64)]


def _eight_centres() -> np.ndarray:
    s = 1.0 / np.sqrt(2.0)
    unit = np.array([(1, 0), (-1, 0), (0, 1), (0, -1), (s, s), (s, -s), (-s, s), (-s, -s)])
    return EIGHT_SCALE * unit


def _grid_centres() -> np.ndarray:
    # x outer, y inner: the order of the paper's loops.
    grid = np.array([(x, y) for x in range(-2, 3) for y in range(-2, 3)], dtype=np.float64)
    return GRID_SPACING * grid


def eight_gaussian_modes() -> np.ndarray:
    """The 8 mode centres [8, 2] after the paper's scaling."""
    return _eight_centres() / EIGHT_DIVISOR


def twenty_five_gaussian_modes() -> np.ndarray:
    """The 25 mode centres [25, 2] after the paper's scaling."""
    return _grid_centres() / GRID_DIVISOR


def conditional_ring_centre(angle: np.ndarray) -> np.ndarray:
    """The mean [N, 2] of conditional-ring's (x, y) given its condition `angle` [N]."""
    angle = np.asarray(angle, dtype=np.float64).reshape(-1)
    return CONDITIONAL_RING_RADIUS * np.stack([np.cos(angle), np.sin(angle)], axis=1)


def _rng(name: str) -> np.random.Generator:
    # One stream per set, so adding a set never changes the rows of another.
    return np.random.default_rng([SEED, BUILTINS.index(name)])


def _eight_gaussians(rng: np.random.Generator) -> dict[str, np.ndarray]:
    centres = _eight_centres()
    picks = rng.integers(0, len(centres), size=DEFAULT_ROWS)  # the paper's random.choice
    points = centres[picks] + EIGHT_NOISE * rng.standard_normal((DEFAULT_ROWS, 2))
    points /= EIGHT_DIVISOR
    return {"x": points[:, 0], "y": points[:, 1]}


def _twenty_five_gaussians(rng: np.random.Generator) -> dict[str, np.ndarray]:
    centres = _grid_centres()
    points = np.tile(centres, (DEFAULT_ROWS // len(centres), 1))
    points += GRID_NOISE * rng.standard_normal(points.shape)
    points = points[rng.permutation(len(points))] / GRID_DIVISOR
    return {"x": points[:, 0], "y": points[:, 1]}


def _swissroll(rng: np.random.Generator) -> dict[str, np.ndarray]:
    from sklearn.datasets import make_swiss_roll

    seed = int(rng.integers(0, 2**31 - 1))
    roll = make_swiss_roll(n_samples=DEFAULT_ROWS, noise=ROLL_NOISE, random_state=seed)[0]
    points = roll[:, [0, 2]] / ROLL_DIVISOR
    return {"x": points[:, 0], "y": points[:, 1]}


def _conditional_ring(rng: np.random.Generator) -> dict[str, np.ndarray]:
    angle = rng.uniform(0.0, 2.0 * np.pi, size=DEFAULT_ROWS)
    points = conditional_ring_centre(angle)
    points += CONDITIONAL_RING_STD * rng.standard_normal(points.shape)
    return {"x": points[:, 0], "y": points[:, 1], "angle": angle}


def _digits(rng: np.random.Generator) -> dict[str, np.ndarray]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    columns = {name: bunch.data[:, i] for i, name in enumerate(DIGIT_PIXELS)}
    onehot = np.eye(10)[bunch.target]
    columns.update({name: onehot[:, k] for k, name in enumerate(DIGIT_CLASSES)})
    return columns


_GENERATORS = {
    "8gaussians": _eight_gaussians,
    "25gaussians": _twenty_five_gaussians,
    "swissroll": _swissroll,
    "conditional-ring": _conditional_ring,
    "digits": _digits,
}


@functools.lru_cache(maxsize=len(BUILTINS))
def _columns(name: str) -> Mapping[str, np.ndarray]:
    columns = _GENERATORS[name](_rng(name))
    for array in columns.values():
        array.setflags(write=False)  # cached and shared between loads: nobody may edit it
    return columns


def builtin_table(name: str) -> Table:
    """The Table of `builtin://name`.

    Roles beyond the generic rules of `load_dataset`:

    - conditional-ring is the conditional toy: its condition `angle` is used even when the
      spec names no conditions.
    - digits is unconditional unless the spec asks for conditions: `conditions: ["digit"]`
      stands for the ten one-hot columns digit_0..digit_9 (naming those columns works too).
      Its features default to the 64 pixels (values 0..16), image_shape (1, 8, 8).
    """
    if name not in _GENERATORS:
        raise DataError(f"unknown builtin data set {name!r}; builtins: {', '.join(BUILTINS)}")
    columns = _columns(name)

    def read(names: Sequence[str], max_rows: int | None) -> dict[str, np.ndarray]:
        return {n: columns[n][:max_rows] for n in names}

    table = Table(label=f"builtin://{name}", columns=list(columns), read=read,
                  default_features=["x", "y"])
    if name == "8gaussians":
        table.modes = eight_gaussian_modes()
        table.mode_std = EIGHT_NOISE / EIGHT_DIVISOR
    elif name == "25gaussians":
        table.modes = twenty_five_gaussian_modes()
        table.mode_std = GRID_NOISE / GRID_DIVISOR
    elif name == "conditional-ring":
        table.default_conditions = ["angle"]
    elif name == "digits":
        table.default_features = list(DIGIT_PIXELS)
        table.aliases = {"digit": list(DIGIT_CLASSES)}
        table.image_shape = (1, 8, 8)
    return table
