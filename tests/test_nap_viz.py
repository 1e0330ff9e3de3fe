"""NAP plots: grids with symmetric per-layer colour limits, input-layer profiles, PNG files."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.figure import Figure

import xraylens as xl
from xraylens.profile import NAPResult
from xraylens.viz.nap import plot_inactive_fraction, plot_input_nap, plot_nap_grid, save_figure


@pytest.fixture
def res() -> NAPResult:
    rng = np.random.default_rng(0)
    return NAPResult(
        ("input", "conv", "fc"),
        ("COVID-19", "Pneumonia", "No Finding"),
        {
            "input": rng.random((3, 1, 16, 16)) * [[[[2]]], [[[3]]], [[[4]]]],
            "conv": rng.normal(size=(3, 5, 4, 4)),
            "fc": rng.normal(size=(3, 6)),
        },
        [2, 3, 4],
        10,
        {"input": np.zeros(1), "conv": np.zeros(5), "fc": np.zeros(6)},
        {"input": np.ones(1), "conv": np.r_[0.0, np.ones(4)], "fc": np.ones(6)},
        model="tiny",
    )


def _images(fig):
    return [im for ax in fig.axes for im in ax.get_images()]


def test_grid_layout_and_symmetric_limits(res):
    fig = plot_nap_grid(res, "conv", k=3)
    assert isinstance(fig, Figure)
    images = _images(fig)
    assert len(images) == 3 * 3  # groups x top-k
    limit = max(np.abs(res.nap["conv"][g]).max() for g in res.groups)
    assert all(im.get_clim() == pytest.approx((-limit, limit)) for im in images)
    shown = images[0].get_array()
    top = res.top_maps("conv", 3)
    np.testing.assert_allclose(shown, res.nap["conv"]["COVID-19"][top[0]])
    titles = [ax.get_title() for ax in fig.axes[:3]]
    assert titles == [f"map {c}" for c in top]


def test_grid_chosen_maps_groups_and_vmax(res):
    fig = plot_nap_grid(res, "conv", maps=[4, 0], groups=["Pneumonia"], vmax=2.0)
    images = _images(fig)
    assert len(images) == 2 and images[0].get_clim() == (-2.0, 2.0)
    np.testing.assert_allclose(images[1].get_array(), res.nap["conv"]["Pneumonia"][0])
    with pytest.raises(xl.InputError, match="channel indices"):
        plot_nap_grid(res, "conv", maps=[5])
    with pytest.raises(xl.InputError, match="unknown groups"):
        plot_nap_grid(res, "conv", groups=["Healthy"])
    with pytest.raises(KeyError, match="conv"):
        plot_nap_grid(res, "cnv")


def test_vector_layer_heatmap(res):
    fig = plot_nap_grid(res, "fc", k=4)
    (image,) = _images(fig)
    assert image.get_array().shape == (3, 4)


def test_input_profiles(res, tmp_path):
    fig = plot_input_nap(res)
    images = _images(fig)
    assert len(images) == 2 * 3  # mean row and NAP row
    means, naps = images[:3], images[3:]
    assert len({im.get_clim() for im in means}) == 1  # one grey scale for all groups
    lo, hi = naps[0].get_clim()
    assert lo == -hi and hi > 0
    path = save_figure(fig, tmp_path / "input.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_empty_group_and_inactive_plot(res, tmp_path):
    res.group_counts[2] = 0  # a group without images: NaN panels, no crash
    res._derived.clear()
    save_figure(plot_nap_grid(res, "conv", k=2), tmp_path / "grid.png")
    save_figure(plot_input_nap(res), tmp_path / "input.png")
    fig = plot_inactive_fraction(res)
    heights = [p.get_height() for p in fig.axes[0].patches]
    assert heights == pytest.approx([0.0, 0.2, 0.0, 0.0, 0.2, 0.0])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["grid.png", "input.png"]
