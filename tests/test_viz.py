"""xraylens.viz: greyscale overlays, sign modes, outlier scaling, panels, saving."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

import xraylens as xl
from xraylens import viz
from xraylens.viz.overlay import to_image, to_map

captum_viz = pytest.importorskip("captum.attr._utils.visualization")


def _pixels(fig: Figure) -> np.ndarray:
    """The rendered RGBA pixels of ``fig`` (Agg canvas)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())


@pytest.fixture
def no_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


@pytest.mark.parametrize("sign", ["positive", "absolute", "negative", "signed", "all"])
@pytest.mark.parametrize("outlier_perc", [0.0, 2.0, 10.0])
def test_normalize_map_equals_captum(sign, outlier_perc):
    rng = np.random.default_rng(1)
    attr = rng.standard_normal((33, 47)) ** 3  # heavy tails: the outlier rule matters
    captum_sign = {"absolute": "absolute_value", "signed": "all"}.get(sign, sign)
    if outlier_perc == 0:  # Captum's rule at 100 % is the maximum
        ours = viz.normalize_map(attr, sign, outlier_perc=0.0)
        mags = {"positive": np.clip(attr, 0, None), "negative": np.clip(-attr, 0, None)}.get(
            sign, np.abs(attr)
        )
        expected = (attr if sign in ("all", "signed") else mags) / mags.max()
    else:
        ours = viz.normalize_map(attr, sign, outlier_perc=outlier_perc, scaling="cumulative")
        expected = captum_viz._normalize_attr(attr, captum_sign, outlier_perc)
    np.testing.assert_allclose(ours, expected, rtol=1e-12, atol=1e-12)
    low = -1.0 if sign in ("all", "signed") else 0.0
    assert ours.min() >= low and ours.max() <= 1.0


def test_percentile_and_max_scaling():
    attr = np.arange(100, dtype=float).reshape(10, 10)
    at99 = viz.normalize_map(attr, "absolute", outlier_perc=1.0, scaling="percentile")
    assert at99.max() == 1.0
    # the percentile of the non-zero magnitudes: zeros (here attr[0, 0]) do not lower it
    np.testing.assert_allclose(at99[0, 1], 1.0 / np.percentile(attr[attr > 0], 99.0))
    full = viz.normalize_map(attr, "absolute", scaling="max")
    np.testing.assert_allclose(full, attr / 99.0)


def test_channels_are_summed_and_images_averaged():
    attr = torch.stack([torch.ones(8, 8), 2 * torch.ones(8, 8)])  # [C=2, H, W]
    np.testing.assert_allclose(to_map(attr), 3.0)
    np.testing.assert_allclose(to_image(attr), 1.5)
    assert to_map(torch.ones(1, 8, 8, dtype=torch.float64)).shape == (8, 8)


@pytest.mark.parametrize("bad", [np.ones((2, 3, 4, 5)), np.ones(5), "text"])
def test_bad_shapes_are_input_errors(bad):
    with pytest.raises(xl.InputError):
        viz.normalize_map(bad)


def test_nan_and_bad_options_are_input_errors():
    attr = np.ones((8, 8))
    attr[0, 0] = np.nan
    with pytest.raises(xl.InputError, match="NaN"):
        viz.normalize_map(attr)
    with pytest.raises(xl.InputError, match="sign"):
        viz.normalize_map(np.ones((4, 4)), "both")
    with pytest.raises(xl.InputError, match="scaling"):
        viz.normalize_map(np.ones((4, 4)), scaling="log")
    with pytest.raises(xl.InputError, match="outlier_perc"):
        viz.normalize_map(np.ones((4, 4)), outlier_perc=100)
    with pytest.raises(xl.InputError, match="differ in size"):
        viz.overlay(np.zeros((8, 8)), np.ones((4, 4)))


@pytest.mark.parametrize("sign", viz.SIGNS)
def test_all_zero_map_and_constant_image_render_cleanly(sign, no_warnings):
    assert not viz.normalize_map(np.zeros((16, 16)), sign).any()
    for image in (torch.zeros(16, 16), torch.full((1, 16, 16), 0.7)):
        fig = viz.overlay(image, torch.zeros(1, 16, 16), sign=sign)
        px = _pixels(fig)
        assert np.isfinite(px).all() and px.any()


def test_overlay_is_transparent_where_the_map_is_zero():
    attr = np.zeros((16, 16))
    attr[4:8, 4:8] = 1.0
    fig = Figure()
    ax = fig.add_subplot()
    viz.draw_overlay(ax, np.full((16, 16), 0.5), attr, alpha=0.6)
    grey, heat = ax.get_images()
    alpha = heat.get_array()[..., 3]
    assert np.all(alpha[attr == 0] == 0) and np.allclose(alpha[attr == 1], 0.6)
    assert grey.get_cmap().name == "gray"


def test_greyscale_only_no_rgb_assumption(tmp_path, no_warnings):
    """Captum #372/#378: greyscale [1, H, W] images and maps just work, in float64 too."""
    image = torch.rand(1, 40, 30, dtype=torch.float64)
    attr = torch.randn(1, 40, 30, dtype=torch.float64)
    mask = np.zeros((40, 30), dtype=bool)
    mask[10:20, 5:15] = True
    for sign in viz.SIGNS:
        fig = viz.overlay(image, attr, sign=sign, contour=mask, title=sign)
        assert isinstance(fig, Figure)
    path = viz.save_figure(fig, tmp_path / "o.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _result(n=2, labels=("COVID-19", "Pneumonia", "No Finding"), method="m", size=24):
    return xl.Attribution(
        values=torch.randn(n, len(labels), 1, size, size), labels=labels, method=method
    )


def test_plot_grid_layout_empty_panels_and_shared_scale(no_warnings):
    img = torch.rand(1, 24, 24)
    maps = [[torch.randn(24, 24), None, torch.zeros(24, 24)], [torch.randn(1, 24, 24)]]
    fig = viz.plot_grid(img, maps, row_labels=["a", "b"], col_labels=["x", "y", "z"])
    panels = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
    assert len(panels) == 2 * 4  # the image column plus three
    assert sum(not ax.axison for ax in panels) == 3  # (0, y), (1, y), (1, z) are empty
    shared = viz.plot_grid(img, [[np.ones((24, 24)), 4 * np.ones((24, 24))]], shared_scale=True)
    heats = [ax.get_images()[1].get_array()[..., 3] for ax in shared.axes[1:3]]
    assert heats[0].max() < heats[1].max()  # one scale: the smaller map is fainter


def test_plot_grid_per_row_images_and_contours():
    images = [torch.zeros(24, 24), torch.ones(24, 24)]
    mask = np.zeros((24, 24), dtype=bool)
    mask[5:10, 5:10] = True
    fig = viz.plot_grid(images, [[np.ones((24, 24))], [np.ones((24, 24))]], contours=[mask, None])
    assert isinstance(fig, Figure)
    with pytest.raises(xl.InputError, match="rows"):
        viz.plot_grid(images, [[np.ones((24, 24))]])
    with pytest.raises(xl.InputError, match="col_labels"):
        viz.plot_grid(images[0], [[np.ones((24, 24))]], col_labels=["a", "b"])
    with pytest.raises(xl.InputError):
        viz.plot_grid(images[0], [])


def test_plot_models_methods_is_the_paper_layout():
    img = torch.rand(1, 24, 24)
    results = {
        "resnet18": {"saliency": _result(method="saliency"), "occlusion": _result()},
        "densenet161": {"saliency": _result(method="saliency")},
    }
    fig = viz.plot_models_methods(img, results, "COVID-19", index=1)
    panels = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
    assert len(panels) == 2 * 3
    assert [ax.get_title() for ax in panels[:3]] == ["input", "saliency", "occlusion"]
    assert [ax.get_ylabel() for ax in panels[::3]] == ["resnet18", "densenet161"]
    assert not panels[5].axison  # densenet161 has no occlusion: an empty panel


def test_plot_labels_methods_and_plot_attribution_with_per_image_targets():
    img = torch.rand(1, 24, 24)
    per_image = xl.Attribution(
        values=torch.randn(2, 2, 1, 24, 24),
        labels=[("COVID-19",), ("No Finding", "Pneumonia")],
        mask=torch.tensor([[True, False], [True, True]]),
        method="saliency",
    )
    fig = viz.plot_labels_methods(img, [per_image, _result(method="occlusion")], index=0)
    panels = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
    assert [ax.get_ylabel() for ax in panels if ax.get_ylabel()] == [
        "COVID-19",
        "Pneumonia",
        "No Finding",
    ]
    fig = viz.plot_attribution(img, per_image, index=1)
    titles = [ax.get_title() for ax in fig.axes]
    assert "No Finding" in titles and "Pneumonia" in titles
    many = _result(labels=tuple(xl.data.PAPER_LABELS))
    fig = viz.plot_attribution(img, many, columns=5)
    titles = [ax.get_title() for ax in fig.axes]
    assert all(name in titles for name in xl.data.PAPER_LABELS)
    with pytest.raises(xl.InputError, match="no map"):
        viz.plot_attribution(img, per_image, index=0, labels=["Pneumonia"])
    with pytest.raises(xl.InputError, match="out of range"):
        viz.plot_attribution(img, per_image, index=5)


def test_save_figure_is_atomic_and_checks_the_suffix(tmp_path):
    fig = viz.overlay(np.zeros((8, 8)), np.ones((8, 8)))
    for suffix in ("png", "svg", "pdf"):
        assert viz.save_figure(fig, tmp_path / "sub" / f"f.{suffix}").stat().st_size > 0
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["f.pdf", "f.png", "f.svg"]
    with pytest.raises(xl.InputError, match="cannot save"):
        viz.save_figure(fig, tmp_path / "f.gif")
    with pytest.raises(xl.InputError, match="Figure"):
        viz.save_figure("not a figure", tmp_path / "f.png")


def test_nap_plots_are_re_exported():
    from xraylens.viz import nap

    assert viz.plot_nap_grid is nap.plot_nap_grid
    assert viz.plot_input_nap is nap.plot_input_nap
    assert viz.plot_inactive_fraction is nap.plot_inactive_fraction
    assert set(viz.__all__) <= set(dir(viz))
