"""The report's PNGs: valid images of the expected size that show the data they were given."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from models.plots import (
    DPI,
    condition_figure,
    curves_figure,
    histogram_figure,
    image_grid_figure,
    pair_figure,
    render_all,
    save,
)


def _png(fig, path):
    w, h = fig.get_size_inches() * DPI
    save(fig, path)
    with Image.open(path) as img:
        img.verify()
    with Image.open(path) as img:
        assert img.format == "PNG"
        assert img.size == (round(w), round(h))
        return np.asarray(img.convert("RGB"))


def test_histogram_shows_both_densities_and_their_ratio(tmp_path):
    rng = np.random.default_rng(0)
    real, gen = rng.normal(size=5000), rng.normal(size=5000) + 0.5
    fig = histogram_figure(real, gen, "dll_k", bins=40)
    ax, rax = fig.axes
    bars_real, bars_gen = ax.patches[0], ax.patches[1]  # stepfilled / step: one polygon each
    edges = np.linspace(*np.percentile(np.concatenate([real, gen]), [0.1, 99.9]), 41)
    want_real, _ = np.histogram(real, edges, density=True)
    want_gen, _ = np.histogram(gen, edges, density=True)
    # a step polygon's y values are each bin's height, twice
    got_real = bars_real.get_xy()[1:-1:2, 1][:40]
    got_gen = bars_gen.get_xy()[1:-1:2, 1][:40]
    np.testing.assert_allclose(got_real, want_real, rtol=1e-6)
    np.testing.assert_allclose(got_gen, want_gen, rtol=1e-6)
    ratio = rax.lines[0].get_ydata()
    with np.errstate(divide="ignore", invalid="ignore"):
        np.testing.assert_allclose(ratio, np.where(want_real > 0, want_gen / want_real, np.nan))
    assert ax.get_title() == "dll_k"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["real (held out)", "generated"]
    pixels = _png(fig, tmp_path / "h.png")
    assert pixels.std() > 10  # not a blank canvas


def test_histogram_counts_each_row_with_its_weight():
    # Signal rows (weight 1) plus background rows present twice with weights +1 and -1: the
    # weighted histogram is the signal's; generated rows carry the weights they are given.
    rng = np.random.default_rng(0)
    signal, background = rng.normal(size=3000), rng.uniform(-5, 5, size=1500)
    real = np.concatenate([signal, background, background])
    w = np.concatenate([np.ones(3000), np.ones(1500), -np.ones(1500)])
    gen = rng.normal(size=4000)
    w_gen = rng.uniform(-0.5, 2.0, size=4000)
    fig = histogram_figure(real, gen, "x", bins=30, real_weights=w, gen_weights=w_gen)
    ax, rax = fig.axes
    edges = np.linspace(*np.percentile(np.concatenate([real, gen]), [0.1, 99.9]), 31)
    want_real, _ = np.histogram(real, edges, weights=w, density=True)
    want_gen, _ = np.histogram(gen, edges, weights=w_gen, density=True)
    unweighted, _ = np.histogram(real, edges, density=True)
    assert not np.allclose(want_real, unweighted, rtol=0.05)
    np.testing.assert_allclose(want_real * (np.histogram(real, edges, weights=w)[0].sum()),
                               np.histogram(signal, edges)[0] / np.diff(edges), rtol=1e-9)
    got_real = ax.patches[0].get_xy()[1:-1:2, 1][:30]
    got_gen = ax.patches[1].get_xy()[1:-1:2, 1][:30]
    np.testing.assert_allclose(got_real, want_real, rtol=1e-6)
    np.testing.assert_allclose(got_gen, want_gen, rtol=1e-6)
    with np.errstate(divide="ignore", invalid="ignore"):
        np.testing.assert_allclose(rax.lines[0].get_ydata(),
                                   np.where(want_real > 0, want_gen / want_real, np.nan))
    assert ax.get_ylabel() == "weighted density"


def test_render_all_passes_the_weights_to_the_histograms(tmp_path, monkeypatch):
    import models.plots as plots

    seen = []
    real_hist = plots.histogram_figure

    def spy(real, gen, name, bins=50, **kw):
        seen.append((name, kw))
        return real_hist(real, gen, name, bins, **kw)

    monkeypatch.setattr(plots, "histogram_figure", spy)
    rng = np.random.default_rng(3)
    real, gen = rng.normal(size=(200, 2)), rng.normal(size=(200, 2))
    w = rng.uniform(-0.2, 1.5, size=200)
    plots.render_all(tmp_path, real=real, gen=gen, feature_names=["a", "b"], real_weights=w,
                     gen_weights=w)
    assert [name for name, _ in seen] == ["a", "b"]
    for _, kw in seen:
        assert kw["real_weights"] is w and kw["gen_weights"] is w


def test_curves_show_the_named_losses_and_the_referee(tmp_path):
    steps = [10, 20, 30, 40]
    curves = {"critic": [-1.0, -0.5, -0.2, -0.1], "generator": [0.3, 0.2, 0.1, 0.05]}
    fig = curves_figure(steps, curves, referee=[None, 0.9, 0.7, 0.6])
    loss_ax, ref_ax = fig.axes
    assert [line.get_label() for line in loss_ax.lines] == ["critic", "generator"]
    for line, values in zip(loss_ax.lines, curves.values(), strict=True):
        assert list(line.get_xdata()) == steps and list(line.get_ydata()) == values
    ref = ref_ax.lines[0]
    assert ref.get_label() == "referee AUC"
    np.testing.assert_array_equal(ref.get_ydata(), [np.nan, 0.9, 0.7, 0.6])
    _png(fig, tmp_path / "c.png")
    assert len(curves_figure(steps, curves).axes) == 1  # no referee: one panel


def test_pairs_conditions_and_image_grids(tmp_path):
    rng = np.random.default_rng(1)
    r, g = rng.normal(size=(300, 2)), rng.normal(size=(300, 2))
    fig = pair_figure(r, g, ("x", "y"))
    np.testing.assert_array_equal(fig.axes[0].collections[0].get_offsets(), r)
    np.testing.assert_array_equal(fig.axes[1].collections[0].get_offsets(), g)
    _png(fig, tmp_path / "p.png")

    bins = [{"centre": c, "features": [{"w1": w}]} for c, w in [(1, 0.1), (2, 0.5), (3, 0.2)]]
    fig = condition_figure("p", bins, ["x"])
    line = fig.axes[0].lines[0]
    assert list(line.get_xdata()) == [1, 2, 3] and list(line.get_ydata()) == [0.1, 0.5, 0.2]
    _png(fig, tmp_path / "cond.png")

    imgs = rng.uniform(0, 16, size=(10, 64))
    fig = image_grid_figure(imgs, (1, 8, 8))
    canvas = fig.axes[0].images[0].get_array()
    assert canvas.shape == (4 * 9, 4 * 9)
    np.testing.assert_allclose(canvas[:8, :8], (imgs[0].reshape(8, 8) - imgs.min())
                               / (imgs.max() - imgs.min()))
    _png(fig, tmp_path / "img.png")


def test_render_all_writes_every_plot_of_a_model(tmp_path):
    rng = np.random.default_rng(2)
    real, gen = rng.normal(size=(500, 3)), rng.normal(size=(500, 3))
    history = [SimpleNamespace(step=s, losses={"critic": -s / 10, "generator": s / 10},
                               metrics={"referee_auc": 0.6}) for s in (5, 10)]
    report = {"binned": {"p": [{"centre": c, "features": [{"w1": 0.1}] * 3} for c in (1, 2)]}}
    paths = render_all(tmp_path, real=real, gen=gen, feature_names=["a", "b", "c"],
                       history=history, report=report)
    assert set(paths) == {"hist_a", "hist_b", "hist_c", "pair_a_b", "pair_b_c", "curves",
                          "condition_p"}
    for path in paths.values():
        with Image.open(path) as img:
            assert img.format == "PNG" and img.size[0] >= 600
    with pytest.raises(ValueError):
        from gan_platform.artifacts import plot_key

        plot_key("m", "../etc")


def test_curves_show_the_validation_score_and_the_kept_step():
    steps = [1, 2, 3, 4]
    curves = {"critic": [-1.0, -0.5, -0.2, -0.1]}
    fig = curves_figure(steps, curves, validation=[None, 0.3, 0.1, 0.2], best_step=3)
    assert len(fig.axes) == 2
    val_line, kept = fig.axes[1].lines[0], fig.axes[1].lines[1]
    np.testing.assert_allclose(val_line.get_xdata(), [2, 3, 4])
    np.testing.assert_allclose(val_line.get_ydata(), [0.3, 0.1, 0.2])
    assert list(kept.get_xdata()) == [3, 3]
