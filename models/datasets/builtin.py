"""The builtin data sets: the WGAN-GP toy sets, our conditional ring and scikit-learn's digits.

The toy sets follow gan_toy.py of Gulrajani et al. 2017 (igul222/improved_wgan_training),
scaling included, so results compare with the paper's figures:

- 8gaussians: centres 2 * {(+-1, 0), (0, +-1), (+-1/sqrt2, +-1/sqrt2)}, point = centre +
  0.02 N(0, 1), then everything divided by 1.414.
- 25gaussians: centres 2 * {-2..2}^2, 4000 points per centre, + 0.05 N(0, 1), shuffled, then
  divided by 2.828.
- swissroll: make_swiss_roll(noise=0.25), columns 0 and 2, divided by 7.5.

The physics toys (each with its true law as a function, for tests and benchmarks):

- two-gaussians: the mode-collapse example of the lecture notes, 0.7 N(5, 0.8) + 0.3 N(-4, 1),
  one feature `x`; two_gaussian_weights() / two_gaussian_responsibilities() for mode shares.
- lamarr-toy: a Lamarr-like conditional set (LHCb fast simulation of particle-identification
  responses), 50 000 rows: conditions p, eta, nTracks, charge; targets dll_k, dll_p, dll_mu
  drawn by lamarr_toy_sample (a latent heavy/light type shared by the targets).
- splot-toy: signal + background, 50 000 rows, with the sWeights of an sPlot fit on `mass`
  (models/datasets/splot.py, shapes fixed to the true ones); splot_toy_signal draws the
  signal alone.

Every set is drawn once from a fixed seed, so `builtin://NAME` means the same rows every time;
`max_rows` keeps the first rows.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Literal, overload

import numpy as np

from models.datasets.base import DataError, Table

# New sets go at the end: a set's index seeds its stream (_rng).
BUILTINS = ("8gaussians", "25gaussians", "swissroll", "conditional-ring", "digits",
            "two-gaussians", "lamarr-toy", "splot-toy")
DEFAULT_ROWS = 100_000
SEED = 20170331  # the WGAN-GP preprint's date: any fixed value would do

# The paper's divisors (its comment: "stdev") and per-Gaussian noise.
EIGHT_SCALE, EIGHT_NOISE, EIGHT_DIVISOR = 2.0, 0.02, 1.414
GRID_SPACING, GRID_NOISE, GRID_DIVISOR = 2.0, 0.05, 2.828
ROLL_NOISE, ROLL_DIVISOR = 0.25, 7.5

CONDITIONAL_RING_RADIUS = 2.0
CONDITIONAL_RING_STD = 0.1  # per coordinate, around conditional_ring_centre(angle)

# two-gaussians: the mode-collapse example of the lecture notes, 0.7 N(5, 0.8) + 0.3 N(-4, 1).
TWO_GAUSSIANS_MEANS = (5.0, -4.0)
TWO_GAUSSIANS_STDS = (0.8, 1.0)
TWO_GAUSSIANS_WEIGHTS = (0.7, 0.3)

# lamarr-toy: conditions and targets, in the order of lamarr_toy_sample's arrays.
LAMARR_ROWS = 50_000
LAMARR_CONDITIONS = ["p", "eta", "nTracks", "charge"]
LAMARR_TARGETS = ["dll_k", "dll_p", "dll_mu"]
LAMARR_P_MEDIAN, LAMARR_P_LOG_STD, LAMARR_P_RANGE = 20.0, 0.8, (2.0, 500.0)  # GeV
LAMARR_ETA_RANGE = (1.8, 5.5)
LAMARR_NTRACKS_MEAN, LAMARR_NTRACKS_SHAPE = 150.0, 5.0  # negative binomial: var = m + m^2/5
_EULER_GAMMA = 0.5772156649015329  # the mean of a standard Gumbel

# splot-toy: B-meson-like peak over an exponential background in a mass window (GeV).
SPLOT_ROWS = 50_000
SPLOT_MASS_RANGE = (5.1, 5.5)
SPLOT_SIGNAL_MASS, SPLOT_SIGNAL_WIDTH = 5.28, 0.03
SPLOT_BACKGROUND_SLOPE = 2.0  # background density ~ exp(-slope * (mass - 5.1))
SPLOT_SIGNAL_FRACTION = 0.45
SPLOT_COLUMNS = ["pt", "x1", "x2", "mass", "sweight", "is_signal"]
SPLOT_SIGNAL_PT_SHAPE, SPLOT_SIGNAL_PT_SCALE = 3.0, 2.5  # Gamma: mean 7.5 GeV
SPLOT_BACKGROUND_PT_SHAPE, SPLOT_BACKGROUND_PT_SCALE = 1.5, 3.0  # Gamma: mean 4.5 GeV
# The true signal means of x1 and x2 (pt enters their means through pt - E[pt]).
SPLOT_SIGNAL_X1_MEAN, SPLOT_SIGNAL_X2_MEAN = 1.0, 0.5

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


def two_gaussian_modes() -> np.ndarray:
    """two-gaussians' mode centres [2, 1]: [[5], [-4]]."""
    return np.array(TWO_GAUSSIANS_MEANS, dtype=np.float64).reshape(-1, 1)


def two_gaussian_stds() -> np.ndarray:
    """two-gaussians' per-mode std [2]: [0.8, 1] (its `mode_std`, one value per mode)."""
    return np.array(TWO_GAUSSIANS_STDS, dtype=np.float64)


def two_gaussian_weights() -> np.ndarray:
    """two-gaussians' true mixture weights [2]: [0.7, 0.3], in the order of the modes."""
    return np.array(TWO_GAUSSIANS_WEIGHTS, dtype=np.float64)


def two_gaussian_responsibilities(x: np.ndarray) -> np.ndarray:
    """P(component k | x) [N, 2] under the true mixture; its column means estimate the shares
    of the two modes in samples x ([N] or [N, 1]), to compare with two_gaussian_weights()."""
    x = np.asarray(x, dtype=np.float64).reshape(-1, 1)
    mean, std, weight = two_gaussian_modes()[:, 0], two_gaussian_stds(), two_gaussian_weights()
    log_p = np.log(weight) - np.log(std) - 0.5 * ((x - mean) / std) ** 2  # [N, 2]
    log_p -= log_p.max(axis=1, keepdims=True)
    p = np.exp(log_p)
    return p / p.sum(axis=1, keepdims=True)


def lamarr_toy_heavy_probability(p: np.ndarray, eta: np.ndarray) -> np.ndarray:
    """P(latent type = heavy, 'kaon-like' | p, eta) of lamarr-toy: sigmoid(-0.4 + 1.5 log(p/20)
    - 0.8 t), t = (eta - 3.65) / 1.85 in [-1, 1]; 0.02 at 2 GeV, 0.99 at 500 GeV."""
    u = np.log(np.asarray(p, dtype=np.float64) / LAMARR_P_MEDIAN)
    t = (np.asarray(eta, dtype=np.float64) - 3.65) / 1.85
    return 1.0 / (1.0 + np.exp(-(-0.4 + 1.5 * u - 0.8 * t)))


def lamarr_toy_conditions(n: int, rng: np.random.Generator) -> np.ndarray:
    """n fresh condition rows [n, 4] (p, eta, nTracks, charge) from lamarr-toy's law."""
    p = np.exp(rng.normal(np.log(LAMARR_P_MEDIAN), LAMARR_P_LOG_STD, n))
    p = np.clip(p, *LAMARR_P_RANGE)
    eta = rng.uniform(*LAMARR_ETA_RANGE, n)
    m, r = LAMARR_NTRACKS_MEAN, LAMARR_NTRACKS_SHAPE
    n_tracks = rng.negative_binomial(r, r / (r + m), n).astype(np.float64)
    charge = np.where(rng.random(n) < 0.5, -1.0, 1.0)
    return np.stack([p, eta, n_tracks, charge], axis=1)


@overload
def lamarr_toy_sample(conditions: np.ndarray | Mapping[str, np.ndarray],
                      rng: np.random.Generator, *,
                      return_heavy: Literal[False] = False) -> np.ndarray: ...


@overload
def lamarr_toy_sample(conditions: np.ndarray | Mapping[str, np.ndarray],
                      rng: np.random.Generator, *,
                      return_heavy: Literal[True]) -> tuple[np.ndarray, np.ndarray]: ...


def lamarr_toy_sample(conditions: np.ndarray | Mapping[str, np.ndarray],
                      rng: np.random.Generator, *,
                      return_heavy: bool = False) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Fresh targets [N, 3] (dll_k, dll_p, dll_mu) drawn from lamarr-toy's true conditional law
    at the given conditions: an [N, 4] array in LAMARR_CONDITIONS order (p, eta, nTracks,
    charge), e.g. a Dataset's `conditions`, or a mapping of those names to [N] arrays.
    return_heavy=True also returns the latent type [N] (1 heavy, 0 light) behind each row.

    The law (t = (eta - 3.65) / 1.85, s = 2 h - 1, c, z1, z2 ~ N(0, 1), g1, g2 ~ Gumbel(0, 1)):
      h ~ Bernoulli(lamarr_toy_heavy_probability(p, eta))      shared by the three targets
      sep = (2 + 14 / (1 + (p / 40)^2)) (1 - 0.25 t^2)         separation, falls with p
      k = sqrt(1 + nTracks / 150)                              spread grows with occupancy
      dll_k  = 0.5 sep s + k (1.5 c + g1 - gamma)              right (Gumbel) tail
      dll_p  = 0.35 sep s + 0.5 charge + k (c + 1.2 z1 - 0.8 (g2 - gamma))   left tail
      dll_mu = -2 + 3 exp(-p / 8) + 0.3 t - 1.2 h + 0.7 k (exp(0.6 z2) - exp(0.18))  log-normal
    """
    if isinstance(conditions, Mapping):
        cond = np.stack([np.asarray(conditions[n], dtype=np.float64).reshape(-1)
                         for n in LAMARR_CONDITIONS], axis=1)
    else:
        cond = np.asarray(conditions, dtype=np.float64)
        if cond.ndim != 2 or cond.shape[1] != len(LAMARR_CONDITIONS):
            raise ValueError(f"conditions must be [N, 4] ({', '.join(LAMARR_CONDITIONS)}), "
                             f"not {cond.shape}")
    p, eta, n_tracks, charge = cond.T
    n = len(cond)
    heavy = (rng.random(n) < lamarr_toy_heavy_probability(p, eta)).astype(np.float64)
    s = 2.0 * heavy - 1.0
    t = (eta - 3.65) / 1.85
    sep = (2.0 + 14.0 / (1.0 + (p / 40.0) ** 2)) * (1.0 - 0.25 * t**2)
    k = np.sqrt(1.0 + n_tracks / 150.0)
    c, z1, z2 = rng.standard_normal((3, n))
    g1, g2 = rng.gumbel(size=(2, n)) - _EULER_GAMMA
    dll_k = 0.5 * sep * s + k * (1.5 * c + g1)
    dll_p = 0.35 * sep * s + 0.5 * charge + k * (c + 1.2 * z1 - 0.8 * g2)
    dll_mu = (-2.0 + 3.0 * np.exp(-p / 8.0) + 0.3 * t - 1.2 * heavy
              + 0.7 * k * (np.exp(0.6 * z2) - np.exp(0.18)))
    targets = np.stack([dll_k, dll_p, dll_mu], axis=1)
    return (targets, heavy) if return_heavy else targets


def _truncated_normal(rng: np.random.Generator, n: int, mean: float, std: float,
                      lo: float, hi: float) -> np.ndarray:
    from scipy.stats import truncnorm

    a, b = (lo - mean) / std, (hi - mean) / std
    return truncnorm.ppf(rng.uniform(truncnorm.cdf(a, a, b), truncnorm.cdf(b, a, b), n), a, b,
                         loc=mean, scale=std) if n else np.zeros(0)


def splot_toy_mass_pdfs() -> tuple[Callable[[np.ndarray], np.ndarray],
                                   Callable[[np.ndarray], np.ndarray]]:
    """splot-toy's true mass densities (signal, background), each normalised on the window
    SPLOT_MASS_RANGE: a Gaussian N(5.28, 0.03) and an exponential of slope 2 per GeV."""
    from scipy.stats import norm

    lo, hi = SPLOT_MASS_RANGE
    mu, sigma, slope = SPLOT_SIGNAL_MASS, SPLOT_SIGNAL_WIDTH, SPLOT_BACKGROUND_SLOPE
    signal_norm = norm.cdf(hi, mu, sigma) - norm.cdf(lo, mu, sigma)
    background_norm = (1.0 - np.exp(-slope * (hi - lo))) / slope

    def signal(m: np.ndarray) -> np.ndarray:
        m = np.asarray(m, dtype=np.float64)
        inside = (m >= lo) & (m <= hi)
        return np.where(inside, norm.pdf(m, mu, sigma) / signal_norm, 0.0)

    def background(m: np.ndarray) -> np.ndarray:
        m = np.asarray(m, dtype=np.float64)
        inside = (m >= lo) & (m <= hi)
        return np.where(inside, np.exp(-slope * (m - lo)) / background_norm, 0.0)

    return signal, background


def splot_toy_signal_features(pt: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(x1, x2) [N, 2] of signal events at the given pt [N], from splot-toy's signal law:
    x1 = 1 + 0.1 (pt - 7.5) + 0.5 z1, x2 = 0.5 - 0.02 (pt - 7.5) + 0.3 z1 + 0.4 z2."""
    pt = np.asarray(pt, dtype=np.float64).reshape(-1)
    z1, z2 = rng.standard_normal((2, len(pt)))
    dpt = pt - SPLOT_SIGNAL_PT_SHAPE * SPLOT_SIGNAL_PT_SCALE
    x1 = SPLOT_SIGNAL_X1_MEAN + 0.1 * dpt + 0.5 * z1
    x2 = SPLOT_SIGNAL_X2_MEAN - 0.02 * dpt + 0.3 * z1 + 0.4 * z2
    return np.stack([x1, x2], axis=1)


def splot_toy_signal(n: int, rng: np.random.Generator) -> np.ndarray:
    """n pure-signal rows [n, 3] (pt, x1, x2) from splot-toy's signal law: pt ~ Gamma(3, 2.5)
    (mean 7.5 GeV), then splot_toy_signal_features(pt). E[x1] = 1, E[x2] = 0.5."""
    pt = rng.gamma(SPLOT_SIGNAL_PT_SHAPE, SPLOT_SIGNAL_PT_SCALE, n)
    return np.concatenate([pt[:, None], splot_toy_signal_features(pt, rng)], axis=1)


def _splot_toy_background(n: int, rng: np.random.Generator) -> np.ndarray:
    # pt ~ Gamma(1.5, 3) (softer); x1 wider and lower, x2 anti-correlated with x1.
    pt = rng.gamma(SPLOT_BACKGROUND_PT_SHAPE, SPLOT_BACKGROUND_PT_SCALE, n)
    z1, z2 = rng.standard_normal((2, n))
    dpt = pt - SPLOT_BACKGROUND_PT_SHAPE * SPLOT_BACKGROUND_PT_SCALE
    x1 = -0.5 + 0.05 * dpt + 0.8 * z1
    x2 = 0.2 - 0.4 * z1 + 0.6 * z2
    return np.stack([pt, x1, x2], axis=1)


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
    columns["digit"] = bunch.target.astype(np.int64)  # the label 0..9, for categorical use
    return columns


def _two_gaussians(rng: np.random.Generator) -> dict[str, np.ndarray]:
    which = (rng.random(DEFAULT_ROWS) >= TWO_GAUSSIANS_WEIGHTS[0]).astype(np.int64)
    x = two_gaussian_modes()[which, 0] + two_gaussian_stds()[which] * rng.standard_normal(
        DEFAULT_ROWS)
    return {"x": x}


def _lamarr_toy(rng: np.random.Generator) -> dict[str, np.ndarray]:
    cond = lamarr_toy_conditions(LAMARR_ROWS, rng)
    targets = lamarr_toy_sample(cond, rng)
    columns = {name: cond[:, i] for i, name in enumerate(LAMARR_CONDITIONS)}
    columns["nTracks"] = columns["nTracks"].astype(np.int64)
    columns["charge"] = columns["charge"].astype(np.int64)
    columns.update({name: targets[:, i] for i, name in enumerate(LAMARR_TARGETS)})
    return columns


def _splot_toy(rng: np.random.Generator) -> dict[str, np.ndarray]:
    from models.datasets.splot import sweights

    is_signal = rng.random(SPLOT_ROWS) < SPLOT_SIGNAL_FRACTION
    n_signal = int(is_signal.sum())
    n_background = SPLOT_ROWS - n_signal
    lo, hi = SPLOT_MASS_RANGE
    slope = SPLOT_BACKGROUND_SLOPE
    rows = np.empty((SPLOT_ROWS, 3))
    rows[is_signal] = splot_toy_signal(n_signal, rng)
    rows[~is_signal] = _splot_toy_background(n_background, rng)
    mass = np.empty(SPLOT_ROWS)
    mass[is_signal] = _truncated_normal(rng, n_signal, SPLOT_SIGNAL_MASS, SPLOT_SIGNAL_WIDTH,
                                        lo, hi)
    u = rng.random(n_background)  # the inverse CDF of the exponential truncated to the window
    mass[~is_signal] = lo - np.log1p(-u * (1.0 - np.exp(-slope * (hi - lo)))) / slope
    weights, _ = sweights(mass, *splot_toy_mass_pdfs())
    return {"pt": rows[:, 0], "x1": rows[:, 1], "x2": rows[:, 2], "mass": mass,
            "sweight": weights, "is_signal": is_signal.astype(np.int64)}


_GENERATORS = {
    "8gaussians": _eight_gaussians,
    "25gaussians": _twenty_five_gaussians,
    "swissroll": _swissroll,
    "conditional-ring": _conditional_ring,
    "digits": _digits,
    "two-gaussians": _two_gaussians,
    "lamarr-toy": _lamarr_toy,
    "splot-toy": _splot_toy,
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
      stands for the ten one-hot columns digit_0..digit_9 (naming those columns works too);
      with `categorical: ["digit"]` it is the integer label column `digit` (0..9) instead,
      one-hot encoded inside the exported graph and sampled with `?digit=3`.
      Its features default to the 64 pixels (values 0..16), image_shape (1, 8, 8).
    - two-gaussians: feature `x`, modes [[5], [-4]] with one std per mode (mode_std [0.8, 1]).
    - lamarr-toy: conditions default to p, eta, nTracks, charge; features to dll_k, dll_p,
      dll_mu (lamarr_toy_sample is their true conditional law).
    - splot-toy: condition pt, features x1, x2 by default; `weights: "sweight"` picks the
      sWeights; `mass` and the truth `is_signal` are columns but never defaults.
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
    elif name == "two-gaussians":
        table.default_features = ["x"]
        table.modes = two_gaussian_modes()
        table.mode_std = two_gaussian_stds()  # one std per mode: mode_coverage accepts [K]
    elif name == "lamarr-toy":
        table.default_features = list(LAMARR_TARGETS)
        table.default_conditions = list(LAMARR_CONDITIONS)
    elif name == "splot-toy":
        table.default_features = ["x1", "x2"]
        table.default_conditions = ["pt"]
    return table
