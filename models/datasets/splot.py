"""sPlot (Pivk & Le Diberder 2005, NIM A 555, 356): per-event weights from a yields fit.

Torch-free (numpy and scipy). The species' shapes are given, normalised on the fit window, and
stay fixed: only the yields are fitted, by an extended maximum likelihood on the discriminating
variable (e.g. a mass). With fixed shapes the negative log-likelihood

    NLL(N) = sum_k N_k - sum_e log(sum_k N_k f_k(m_e))

is convex in the yields N, so Newton's method (scipy's trust-exact, with the exact gradient and
Hessian) finds its minimum to machine precision. The Hessian at the minimum is the inverse
covariance of the yields,

    V^-1_nj = sum_e f_n(m_e) f_j(m_e) / (sum_k N_k f_k(m_e))^2,

and the sWeight of species n for event e is

    w_n(m_e) = sum_j V_nj f_j(m_e) / sum_k N_k f_k(m_e).

At the ML yields sum_e w_n(e) = N_n exactly, and a weighted sum over the sample of any variable
that is independent of m within each species estimates its sum over species n alone. Fitting
the shapes too would need the yields-only covariance all the same (Pivk's prescription): with
the shapes fixed to the truth, as for the builtin `splot-toy`, the weights are the ideal ones.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

Pdf = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class SPlot:
    """weights [N, K] (column k: species k's sWeights), yields [K] (fitted), covariance [K, K]
    (of the yields: the inverse Hessian of the extended NLL at its minimum)."""

    weights: np.ndarray
    yields: np.ndarray
    covariance: np.ndarray


def _densities(mass: np.ndarray, pdfs: Sequence[Pdf]) -> np.ndarray:
    f = np.stack([np.asarray(pdf(mass), dtype=np.float64).reshape(-1) for pdf in pdfs], axis=1)
    if f.shape[0] != len(mass):
        raise ValueError("every pdf must return one density per event")
    if not np.all(np.isfinite(f)) or np.any(f < 0):
        raise ValueError("pdf values must be finite and non-negative")
    if np.any(f.sum(axis=1) <= 0):
        raise ValueError("some events have zero density under every species")
    return f


def fit_yields(f: np.ndarray, start: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Extended ML yields [K] and their covariance [K, K] from the densities f [N, K]."""
    from scipy.optimize import minimize

    n_events, k = f.shape
    x0 = np.full(k, n_events / k) if start is None else np.asarray(start, dtype=np.float64)

    def nll(yields: np.ndarray) -> float:
        den = f @ yields
        if np.any(den <= 0):  # outside the physical region: trust-exact shrinks its step
            return np.inf
        return float(yields.sum() - np.log(den).sum())

    def grad(yields: np.ndarray) -> np.ndarray:
        return 1.0 - (f / (f @ yields)[:, None]).sum(axis=0)

    def hess(yields: np.ndarray) -> np.ndarray:
        g = f / (f @ yields)[:, None]
        return g.T @ g

    result = minimize(nll, x0, jac=grad, hess=hess, method="trust-exact",
                      options={"gtol": 1e-9, "maxiter": 200})
    yields = result.x
    if not np.all(np.isfinite(yields)) or not np.all(np.isfinite(grad(yields))):
        raise RuntimeError(f"the yields fit failed: {result.message}")
    covariance = np.linalg.inv(hess(yields))
    return yields, covariance


def splot(mass: np.ndarray, pdfs: Sequence[Pdf], start: np.ndarray | None = None) -> SPlot:
    """sWeights of every species: pdfs[k](mass) is species k's density, normalised on the fit
    window that holds every event of `mass` [N]."""
    mass = np.asarray(mass, dtype=np.float64).reshape(-1)
    if len(pdfs) < 2:
        raise ValueError("sPlot needs at least two species")
    f = _densities(mass, pdfs)
    yields, covariance = fit_yields(f, start)
    den = f @ yields
    weights = (f @ covariance) / den[:, None]  # covariance is symmetric: f V = (V f^T)^T
    return SPlot(weights=weights, yields=yields, covariance=covariance)


def sweights(mass: np.ndarray, signal_pdf: Pdf, background_pdf: Pdf) -> tuple[np.ndarray, np.ndarray]:
    """(signal sWeights [N], fitted yields [N_signal, N_background]) of a signal + background
    sample; both pdfs normalised on the window that holds `mass`."""
    result = splot(mass, [signal_pdf, background_pdf])
    return result.weights[:, 0], result.yields
