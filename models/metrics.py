"""Sample-quality measures that need no torch (the API and the report may use them)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ModeCoverage:
    modes_captured: int
    n_modes: int
    high_quality_fraction: float


def mode_coverage(samples: np.ndarray, modes: np.ndarray, mode_std: float) -> ModeCoverage:
    """The 3-sigma rule of VEEGAN (Srivastava 2017) and PacGAN (Lin 2018).

    samples [N, F], modes [K, F]. A sample is high-quality when it lies within 3 standard
    deviations of its nearest mode centre; a mode is captured when it is the nearest mode of at
    least one high-quality sample.
    """
    dist = np.linalg.norm(samples[:, None, :] - modes[None, :, :], axis=-1)  # [N, K]
    nearest = dist.argmin(axis=1)
    high_quality = dist[np.arange(len(samples)), nearest] <= 3 * mode_std
    captured = np.unique(nearest[high_quality])
    return ModeCoverage(
        modes_captured=int(captured.size),
        n_modes=int(len(modes)),
        high_quality_fraction=float(high_quality.mean()) if len(samples) else 0.0,
    )
