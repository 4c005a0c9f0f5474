"""Sample-quality measures that need no torch (the API and the report may use them)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ModeCoverage:
    modes_captured: int
    n_modes: int
    high_quality_fraction: float


def mode_coverage(samples: np.ndarray, modes: np.ndarray,
                  mode_std: float | np.ndarray) -> ModeCoverage:
    """The 3-sigma rule of VEEGAN (Srivastava 2017) and PacGAN (Lin 2018).

    samples [N, F], modes [K, F], mode_std a float (every mode's per-coordinate std) or one
    std per mode [K] (a mixture whose Gaussians differ in width, e.g. two-gaussians). A sample
    is high-quality when it lies within 3 standard deviations of its nearest mode centre; a
    mode is captured when it is the nearest mode of at least one high-quality sample. With
    per-mode stds "nearest" is in units of each mode's std (for one float: plain distance).
    """
    std = np.asarray(mode_std, dtype=np.float64)
    if std.ndim > 1 or (std.ndim == 1 and len(std) != len(modes)):
        raise ValueError(f"mode_std must be a float or one value per mode ({len(modes)}), "
                         f"not shape {std.shape}")
    dist = np.linalg.norm(samples[:, None, :] - modes[None, :, :], axis=-1)  # [N, K]
    std = np.broadcast_to(std, (len(modes),))
    nearest = (dist / std).argmin(axis=1)  # in sigmas; one float: the nearest centre
    high_quality = dist[np.arange(len(samples)), nearest] <= 3 * std[nearest]
    captured = np.unique(nearest[high_quality])
    return ModeCoverage(
        modes_captured=int(captured.size),
        n_modes=int(len(modes)),
        high_quality_fraction=float(high_quality.mean()) if len(samples) else 0.0,
    )
