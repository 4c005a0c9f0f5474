"""The report's plots: matplotlib (Agg backend, no display), PNG.

Every `*_figure` function returns the matplotlib Figure, so tests can read back what was drawn
(histogram counts, line data); `render_all` writes the PNGs a model ships with and returns
{name: path}. Torch-free.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

DPI = 100
MAX_HIST_FEATURES = 16  # histograms of the first features only (images have 64+)
MAX_PAIRS = 3
SCATTER_ROWS = 5_000


def _new(w: float, h: float) -> Figure:
    return Figure(figsize=(w, h), dpi=DPI)


def histogram_figure(real: np.ndarray, gen: np.ndarray, name: str, bins: int = 50, *,
                     real_weights: np.ndarray | None = None,
                     gen_weights: np.ndarray | None = None) -> Figure:
    """Real vs generated histograms (densities) of one feature, with a generated/real ratio
    panel below. The bars' heights are the densities in `axes[0]` patches; the ratio line is
    `axes[1].lines[0]`. With per-event weights (sWeights; the generated rows drawn at the real
    rows' conditions carry the same weights) each row counts with its weight: signed weights
    can make a bin negative; the ratio is shown where the real bin is positive."""
    fig = _new(6, 5)
    ax, rax = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    lo, hi = np.percentile(np.concatenate([real, gen]), [0.1, 99.9])
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    edges = np.linspace(lo, hi, bins + 1)
    h_real, _, _ = ax.hist(real, edges, weights=real_weights, density=True,
                           histtype="stepfilled", alpha=0.4, label="real (held out)", color="C0")
    h_gen, _, _ = ax.hist(gen, edges, weights=gen_weights, density=True, histtype="step",
                          lw=1.5, label="generated", color="C1")
    weighted = real_weights is not None or gen_weights is not None
    ax.set_ylabel("weighted density" if weighted else "density")
    ax.set_title(name)
    ax.legend()
    centres = (edges[:-1] + edges[1:]) / 2
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(h_real > 0, h_gen / h_real, np.nan)
    rax.plot(centres, ratio, drawstyle="steps-mid", color="C1", label="generated / real")
    rax.axhline(1.0, color="k", lw=0.8, ls="--")
    rax.set_ylim(0, 2)
    rax.set_ylabel("gen / real")
    rax.set_xlabel(name)
    fig.tight_layout()
    return fig


def pair_figure(real: np.ndarray, gen: np.ndarray, names: tuple[str, str], *,
                weighted: bool = False) -> Figure:
    """2-D scatter of two features, real beside generated, on the same axes limits. A scatter
    cannot show per-event weights: with `weighted` the titles say the rows are unweighted."""
    fig = _new(10, 4.8)
    axes = fig.subplots(1, 2, sharex=True, sharey=True)
    note = " (rows unweighted)" if weighted else ""
    for ax, data, title, colour in ((axes[0], real, "real (held out)" + note, "C0"),
                                    (axes[1], gen, "generated" + note, "C1")):
        ax.scatter(data[:, 0], data[:, 1], s=2, alpha=0.3, color=colour, rasterized=True)
        ax.set_title(title)
        ax.set_xlabel(names[0])
    axes[0].set_ylabel(names[1])
    fig.tight_layout()
    return fig


def curves_figure(steps: Sequence[int], curves: Mapping[str, Sequence[float]],
                  referee: Sequence[float | None] | None = None,
                  validation: Sequence[float | None] | None = None,
                  best_step: int | None = None) -> Figure:
    """Loss curves over steps (one line per name, in order); when given, the referee's ROC AUC
    on the next panel (its `lines[0]`), then the validation score (`lines[0]`, the kept step a
    vertical line)."""
    has_ref = referee is not None and any(v is not None for v in referee)
    has_val = validation is not None and any(v is not None for v in validation)
    n_panels = 1 + has_ref + has_val
    fig = _new(7, 2 + 2 * n_panels)
    axes = fig.subplots(n_panels, 1, sharex=True, squeeze=False)[:, 0]
    for name, values in curves.items():
        axes[0].plot(steps, values, label=name)
    axes[0].set_ylabel("loss")
    axes[0].legend(fontsize="small")
    if has_ref:
        assert referee is not None
        ys = [np.nan if v is None else v for v in referee]
        axes[1].plot(steps, ys, color="C3", label="referee AUC")
        axes[1].axhline(0.5, color="k", lw=0.8, ls="--")
        axes[1].set_ylim(0.4, 1.0)
        axes[1].set_ylabel("referee ROC AUC")
        axes[1].legend()
    if has_val:
        assert validation is not None
        pairs = [(s, v) for s, v in zip(steps, validation, strict=True) if v is not None]
        ax = axes[-1]
        ax.plot([s for s, _ in pairs], [v for _, v in pairs], color="C2", marker=".",
                label="validation sliced W1")
        if best_step is not None:
            ax.axvline(best_step, color="k", lw=0.8, ls="--", label=f"kept: step {best_step}")
        ax.set_yscale("log")
        ax.set_ylabel("validation score")
        ax.legend(fontsize="small")
    axes[-1].set_xlabel("generator step")
    fig.tight_layout()
    return fig


def condition_figure(condition: str, bins: list[dict], feature_names: Sequence[str]) -> Figure:
    """W1 of each feature against the condition's bin centre (one line per feature)."""
    fig = _new(7, 4)
    ax = fig.subplots()
    centres = [b["centre"] for b in bins]
    for j, name in enumerate(feature_names[:MAX_HIST_FEATURES]):
        ax.plot(centres, [b["features"][j]["w1"] for b in bins], marker="o", label=name)
    ax.set_xlabel(condition)
    ax.set_ylabel("W1 (generated vs real)")
    ax.set_title(f"per-feature W1 in quantile bins of {condition}")
    ax.legend(fontsize="small")
    fig.tight_layout()
    return fig


def image_grid_figure(images: np.ndarray, image_shape: Sequence[int], n: int = 64) -> Figure:
    """A grid of the first n images ([N, C*H*W] in physical units), scaled to [0, 1] jointly."""
    c, h, w = image_shape
    imgs = images[:n].reshape(-1, c, h, w)
    lo, hi = float(imgs.min()), float(imgs.max())
    imgs = (imgs - lo) / (hi - lo) if hi > lo else np.zeros_like(imgs)
    side = int(np.ceil(np.sqrt(len(imgs))))
    canvas = np.ones((side * (h + 1), side * (w + 1), c))
    for i, img in enumerate(imgs):
        r, q = divmod(i, side)
        canvas[r * (h + 1):r * (h + 1) + h, q * (w + 1):q * (w + 1) + w] = img.transpose(1, 2, 0)
    fig = _new(6, 6)
    ax = fig.subplots()
    ax.imshow(canvas[..., 0] if c == 1 else canvas, cmap="gray_r" if c == 1 else None)
    ax.set_axis_off()
    ax.set_title("generated")
    fig.tight_layout()
    return fig


def save(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=DPI)
    plt.close(fig)
    return path


def safe_name(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in text)


def render_all(
    out_dir: Path,
    *,
    real: np.ndarray,
    gen: np.ndarray,
    feature_names: Sequence[str],
    history: Sequence[Any] = (),
    report: dict | None = None,
    image_shape: Sequence[int] | None = None,
    real_weights: np.ndarray | None = None,
    gen_weights: np.ndarray | None = None,
) -> dict[str, Path]:
    """Every plot of a model: {name: PNG path}. `history`: objects with step, losses, metrics.
    `real_weights` [N], `gen_weights` [M]: per-event weights of the rows (histograms use
    them)."""
    paths: dict[str, Path] = {}
    if image_shape is not None:
        paths["images"] = save(image_grid_figure(gen, image_shape), out_dir / "images.png")
    else:
        for j, name in enumerate(feature_names[:MAX_HIST_FEATURES]):
            key = f"hist_{safe_name(name)}"
            paths[key] = save(histogram_figure(real[:, j], gen[:, j], name,
                                               real_weights=real_weights,
                                               gen_weights=gen_weights),
                              out_dir / f"{key}.png")
        rng = np.random.default_rng(0)
        r = real[rng.choice(len(real), min(len(real), SCATTER_ROWS), replace=False)]
        g = gen[rng.choice(len(gen), min(len(gen), SCATTER_ROWS), replace=False)]
        for a in range(min(len(feature_names) - 1, MAX_PAIRS)):  # (0, 1), (1, 2), ...
            b = a + 1
            key = f"pair_{safe_name(feature_names[a])}_{safe_name(feature_names[b])}"
            paths[key] = save(pair_figure(r[:, [a, b]], g[:, [a, b]],
                                          (feature_names[a], feature_names[b]),
                                          weighted=real_weights is not None
                                          or gen_weights is not None),
                              out_dir / f"{key}.png")
    if history:
        steps = [int(p.step) for p in history]
        names = [k for k in ("critic", "generator") if k in history[-1].losses]
        curves = {k: [float(p.losses.get(k, np.nan)) for p in history] for k in names}
        referee = [p.metrics.get("referee_auc") for p in history]
        validation = [p.metrics.get("validation_swd") for p in history]
        best = [p.metrics["best_step"] for p in history if "best_step" in p.metrics]
        paths["curves"] = save(curves_figure(steps, curves, referee, validation,
                                             int(best[-1]) if best else None),
                               out_dir / "curves.png")
    for cname, bins in ((report or {}).get("binned") or {}).items():
        if len(bins) >= 2:
            key = f"condition_{safe_name(cname)}"
            paths[key] = save(condition_figure(cname, bins, feature_names), out_dir / f"{key}.png")
    return paths
