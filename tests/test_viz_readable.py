"""Readable figures: outlier clipping, opacity, shared scales, probabilities and ids in titles."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

import xraylens as xl
from xraylens import viz


def _blob_with_outlier(size=64):
    """A smooth blob over ~1/4 of the image plus one pixel a million times larger."""
    yy, xx = np.mgrid[:size, :size]
    blob = np.exp(-(((yy - size / 2) ** 2 + (xx - size / 2) ** 2) / (2 * (size / 6) ** 2)))
    blob[blob < 0.2] = 0.0
    attr = blob.copy()
    attr[3, 3] = 1e6
    return blob, attr


def _visible(ax, level=0.1) -> np.ndarray:
    """Bool [H, W]: where the drawn heat map's opacity exceeds ``level``."""
    heat = ax.get_images()[1].get_array()
    return np.asarray(heat[..., 3]) > level


def _drawn(attr, **kw):
    fig = Figure()
    ax = fig.add_subplot()
    viz.draw_overlay(ax, np.full(attr.shape, 0.5), attr, **kw)
    return ax


def test_one_huge_outlier_pixel_does_not_hide_the_rest():
    blob, attr = _blob_with_outlier()
    area = blob > 0
    shown = _visible(_drawn(attr))  # the defaults
    assert (shown & area).sum() >= 0.9 * area.sum()
    # the rules that scale to the largest value or to the cumulative mass lose the blob
    for scaling in ("max", "cumulative"):
        lost = _visible(_drawn(attr, scaling=scaling))
        assert (lost & area).sum() < 0.01 * area.sum(), scaling


def test_rendered_pixels_change_over_the_blob():
    """The same on the rendered canvas: the overlay changes the blob's pixels."""
    blob, attr = _blob_with_outlier()

    def render(a):
        fig = Figure(figsize=(2, 2), dpi=64)
        canvas = FigureCanvasAgg(fig)
        ax = fig.add_axes((0, 0, 1, 1))
        viz.draw_overlay(ax, np.full(blob.shape, 0.5), a)
        canvas.draw()
        return np.asarray(canvas.buffer_rgba())[..., :3].astype(int)

    changed = np.abs(render(attr) - render(None)).sum(-1) > 30
    area = np.kron(blob > 0, np.ones((2, 2), dtype=bool))  # 64 px map on a 128 px canvas
    assert changed[area].mean() > 0.9


@pytest.mark.parametrize("mode", viz.ALPHA_SCALINGS)
def test_alpha_scaling_modes(mode):
    attr = np.linspace(0, 1, 64).reshape(8, 8)
    alpha = _drawn(attr, alpha=0.5, alpha_scaling=mode, scaling="max").get_images()[1]
    a = np.asarray(alpha.get_array()[..., 3])
    expected = {"sqrt": np.sqrt(attr), "linear": attr, "constant": (attr > 0).astype(float)}
    np.testing.assert_allclose(a, 0.5 * expected[mode], atol=1e-6)
    with pytest.raises(xl.InputError, match="alpha_scaling"):
        _drawn(attr, alpha_scaling="log")


def test_signed_uses_a_diverging_map_symmetric_around_zero():
    attr = np.zeros((8, 8))
    attr[0, 0], attr[1, 1] = 2.0, -2.0
    ax = _drawn(attr, sign="signed", scaling="max")
    heat = ax.get_images()[1].get_array()
    assert heat[0, 0, 0] > heat[0, 0, 2] and heat[1, 1, 2] > heat[1, 1, 0]  # red +, blue -
    np.testing.assert_allclose(viz.normalize_map(attr, "signed"), viz.normalize_map(attr, "all"))


def _res(values, probs=None, labels=("A", "B")):
    return xl.Attribution(
        values=values,
        labels=labels,
        method="saliency",
        model="m",
        probs=probs,
        classes=labels if probs is not None else None,
    )


def _heat_alpha(fig, k):
    """Opacity [H, W] of the ``k``-th heat map panel of ``fig`` (input panels skipped)."""
    heats = [ax.get_images()[1] for ax in fig.axes if len(ax.get_images()) == 2]
    return np.asarray(heats[k].get_array()[..., 3])


def test_plot_attribution_titles_probabilities_id_and_shares_the_scale():
    values = torch.ones(1, 2, 1, 16, 16)
    values[0, 1] *= 0.01  # label B: a hundred times weaker
    res = _res(values, probs=torch.tensor([[0.93, 0.004]]))
    fig = viz.plot_attribution(torch.rand(1, 16, 16), res, image_id="covid/img1")
    titles = [ax.get_title() for ax in fig.axes]
    assert "A  p=0.93" in titles and "B  p=0.00" in titles
    assert fig.get_suptitle().startswith("covid/img1: saliency")
    assert any(ax.get_label() == "<colorbar>" for ax in fig.axes)
    # one scale for the labels of the image: B is drawn much fainter than A
    assert _heat_alpha(fig, 1).max() < 0.2 * _heat_alpha(fig, 0).max()
    alone = viz.plot_attribution(torch.rand(1, 16, 16), res, shared_scale=False)
    np.testing.assert_allclose(_heat_alpha(alone, 1).max(), _heat_alpha(alone, 0).max())


def test_shared_scale_per_column_compares_models():
    img = torch.rand(1, 16, 16)
    strong = _res(torch.ones(1, 2, 1, 16, 16), torch.tensor([[0.9, 0.1]]))
    weak = _res(0.01 * torch.ones(1, 2, 1, 16, 16), torch.tensor([[0.2, 0.1]]))
    results = {"big": {"saliency": strong}, "small": {"saliency": weak}}
    fig = viz.plot_models_methods(img, results, "A", shared_scale="column")
    assert _heat_alpha(fig, 1).max() < 0.2 * _heat_alpha(fig, 0).max()
    labels = [
        ax.get_ylabel() for ax in fig.axes if ax.get_label() != "<colorbar>" and ax.get_ylabel()
    ]
    assert labels == ["big\nA p=0.90", "small\nA p=0.20"]
    with pytest.raises(xl.InputError, match="shared_scale"):
        viz.plot_grid(img, [[np.ones((16, 16))]], shared_scale="diagonal")


def test_nap_energy_figure_has_a_colourbar_per_layer():
    from xraylens.profile.nap import NAPProfiler

    module = torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.Flatten(),
        torch.nn.LazyLinear(2),
    )
    module(torch.rand(1, 1, 8, 8))
    clf = xl.Classifier(module, ("a", "b"), min_input_size=8, nap_layers=("0", "1"))
    prof = NAPProfiler(groups=("g1", "g2"))
    prof.update(clf, torch.rand(4, 1, 8, 8), torch.tensor([[1, 0], [1, 0], [0, 1], [0, 1]]).bool())
    region = np.zeros((8, 8), dtype=bool)
    region[:3, :3] = True
    fig = viz.plot_nap_energy(prof.result(), ["0", "1"], region=region)
    bars = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]
    assert len(bars) == 2
