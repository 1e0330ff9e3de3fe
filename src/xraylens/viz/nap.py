"""Plots of Neuron Activation Profiles (matplotlib, no pyplot: safe under Agg and in threads).

- :func:`plot_nap_grid`: groups x top-k feature maps of one layer, diverging colormap, one
  symmetric colour scale per layer (as Fig. 6 of the paper).
- :func:`plot_input_nap`: the input layer: per group the mean image and its NAP.
- :func:`plot_nap_energy`: groups x layers, NAP energy per position, one colourbar per layer.
- :func:`plot_inactive_fraction`: share of inactive / all-zero feature maps per layer.
- :func:`save_figure` (from :mod:`xraylens.viz.figure`): write a figure atomically.

Every function returns a :class:`matplotlib.figure.Figure`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure

from xraylens.errors import InputError
from xraylens.profile.result import NAPResult
from xraylens.viz.figure import save_figure

DIVERGING = "RdBu_r"  # red: the group is above the mean over groups, blue: below


def _groups(result: NAPResult, groups: Sequence[str] | None) -> list[str]:
    if groups is None:
        return list(result.groups)
    if isinstance(groups, str):
        groups = [groups]
    unknown = [g for g in groups if g not in result.groups]
    if unknown:
        raise InputError(f"unknown groups {unknown}; the result has {list(result.groups)}")
    return list(groups)


def _as_image(a: np.ndarray, layer: str) -> np.ndarray:
    """A map [*S] as a 2-D image: [H, W] as is, [L] as one row."""
    if a.ndim == 2:
        return a
    if a.ndim == 1:
        return a[None, :]
    raise InputError(f"layer {layer!r} maps have {a.ndim} spatial dims; plots need 1 or 2")


def _symmetric_limit(arrays: Sequence[np.ndarray]) -> float:
    finite = [np.nanmax(np.abs(a)) for a in arrays if np.isfinite(a).any()]
    vmax = float(max(finite)) if finite else 0.0
    return vmax if vmax > 0 else 1e-12  # an all-zero NAP still gets a valid colour scale


def _label(result: NAPResult, group: str) -> str:
    return f"{group}\n(n={result.counts[group]})"


def plot_nap_grid(
    result: NAPResult,
    layer: str,
    *,
    k: int = 8,
    maps: Sequence[int] | None = None,
    groups: Sequence[str] | None = None,
    weighting: str | None = None,
    vmax: float | None = None,
    cmap: str = DIVERGING,
    panel_size: float = 1.6,
) -> Figure:
    """Groups (rows) x feature maps (columns) of one layer's NAPs.

    Args:
        maps: channel indices to show; default the ``k`` maps with the largest mean |NAP|.
        vmax: colour limit (symmetric, ``[-vmax, vmax]``); default the largest |NAP| of the
            layer over every group and map, so grids of one layer are comparable.
        weighting: NAP weighting (default the result's).

    Vector layers ([C] maps, e.g. a linear layer) are drawn as one groups x maps heatmap.
    """
    naps = result.naps(weighting)[layer]
    names = _groups(result, groups)
    channels = result.shape(layer)[0]
    maps = list(result.top_maps(layer, k, weighting=weighting) if maps is None else maps)
    bad = [c for c in maps if not 0 <= int(c) < channels]
    if bad or not maps:
        raise InputError(f"maps must be channel indices in [0, {channels}), got {maps}")
    limit = vmax if vmax is not None else _symmetric_limit([naps[g] for g in result.groups])
    spatial = result.shape(layer)[1:]
    if not spatial:  # [C] vector layer: one heatmap
        table = np.stack([naps[g][maps] for g in names])
        fig = Figure(figsize=(1.5 + 0.5 * len(maps), 1.0 + 0.4 * len(names)), layout="constrained")
        ax = fig.add_subplot()
        im = ax.imshow(table, cmap=cmap, vmin=-limit, vmax=limit, aspect="auto")
        ax.set_xticks(range(len(maps)), [str(c) for c in maps])
        ax.set_yticks(range(len(names)), [_label(result, g) for g in names])
        ax.set_xlabel("unit")
        fig.colorbar(im, ax=ax, label="NAP")
        fig.suptitle(f"NAP of {layer} ({result.model or 'model'})")
        return fig
    rows, cols = len(names), len(maps)
    fig = Figure(
        figsize=(0.6 + panel_size * cols + 0.8, 0.6 + panel_size * rows), layout="constrained"
    )
    axes = fig.subplots(rows, cols, squeeze=False)
    im = None
    for r, group in enumerate(names):
        for c, channel in enumerate(maps):
            ax = axes[r, c]
            image = _as_image(naps[group][int(channel)], layer)
            im = ax.imshow(image, cmap=cmap, vmin=-limit, vmax=limit, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(f"map {int(channel)}", fontsize=8)
            if c == 0:
                ax.set_ylabel(_label(result, group), fontsize=8)
    fig.colorbar(im, ax=axes, shrink=0.8, label="NAP")
    fig.suptitle(f"NAP of {layer}: top {cols} maps by mean |NAP| ({result.model or 'model'})")
    return fig


def plot_input_nap(
    result: NAPResult,
    *,
    layer: str = "input",
    groups: Sequence[str] | None = None,
    weighting: str | None = None,
    cmap: str = DIVERGING,
    panel_size: float = 2.6,
) -> Figure:
    """The input layer per group: top row the mean image (grey, one scale for all groups),
    bottom row the NAP (diverging, symmetric scale). Several channels are averaged."""
    names = _groups(result, groups)
    means = [_as_image(result.mean[layer][g].mean(axis=0), layer) for g in names]
    naps = [_as_image(result.naps(weighting)[layer][g].mean(axis=0), layer) for g in names]
    finite = [m for m in means if np.isfinite(m).any()]
    lo = min(float(np.nanmin(m)) for m in finite) if finite else 0.0
    hi = max(float(np.nanmax(m)) for m in finite) if finite else 1.0
    limit = _symmetric_limit(naps)
    fig = Figure(
        figsize=(0.8 + panel_size * len(names) + 0.8, 0.6 + 2 * panel_size), layout="constrained"
    )
    axes = fig.subplots(2, len(names), squeeze=False)
    im_mean = im_nap = None
    for c, group in enumerate(names):
        im_mean = axes[0, c].imshow(means[c], cmap="gray", vmin=lo, vmax=hi)
        im_nap = axes[1, c].imshow(naps[c], cmap=cmap, vmin=-limit, vmax=limit)
        axes[0, c].set_title(f"{group} (n={result.counts[group]})", fontsize=9)
        for ax in axes[:, c]:
            ax.set_xticks([])
            ax.set_yticks([])
    axes[0, 0].set_ylabel("mean image")
    axes[1, 0].set_ylabel("NAP")
    fig.colorbar(im_mean, ax=axes[0, :], shrink=0.8, label="intensity")
    fig.colorbar(im_nap, ax=axes[1, :], shrink=0.8, label="NAP")
    fig.suptitle(f"Input-layer profiles ({result.model or 'model'}, {result.n_images} images)")
    return fig


def _cells_touched(region: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Bool [h, w]: the cells of a ``shape`` grid over ``region`` [H, W] that it touches."""
    import torch

    mask = torch.as_tensor(np.asarray(region, dtype=np.float32))[None, None]
    cells = torch.nn.functional.adaptive_max_pool2d(mask, tuple(shape))[0, 0]
    return cells.numpy() > 0


def plot_nap_energy(
    result: NAPResult,
    layers: Sequence[str] | None = None,
    *,
    region: np.ndarray | None = None,
    groups: Sequence[str] | None = None,
    weighting: str | None = None,
    cmap: str = "magma",
    panel_size: float = 1.9,
) -> Figure:
    """Groups (rows) x layers (columns): NAP energy ``sum_c |NAP|`` per position.

    Each layer has its own scale (shared by its groups) and its own colourbar. ``region``: a
    mask [H, W] at input resolution (e.g. a marker), outlined on the cells it touches.
    """
    layers = list(result.layers if layers is None else layers)
    layers = [la for la in layers if len(result.shape(la)) == 3]  # spatial layers only
    if not layers:
        raise InputError("plot_nap_energy needs at least one layer with [C, H, W] maps")
    names = _groups(result, groups)
    naps = result.naps(weighting)
    fig = Figure(
        figsize=(1.2 + (panel_size + 0.5) * len(layers), 0.8 + panel_size * len(names)),
        layout="constrained",
    )
    axes = fig.subplots(len(names), len(layers), squeeze=False)
    for c, layer in enumerate(layers):
        shape = tuple(result.shape(layer)[1:])
        energy = {g: np.abs(naps[layer][g]).sum(axis=0) for g in names}
        top = max(float(np.nanmax(e)) for e in energy.values()) or 1.0
        im = None
        for r, g in enumerate(names):
            ax = axes[r, c]
            im = ax.imshow(energy[g], cmap=cmap, vmin=0, vmax=top, interpolation="nearest")
            if region is not None:
                cells = _cells_touched(region, shape)
                if cells.any() and not cells.all():  # padded: closed at the map's border too
                    h, w = cells.shape
                    ys, xs = np.arange(-1, h + 1), np.arange(-1, w + 1)
                    padded = np.pad(cells.astype(float), 1)
                    ax.contour(xs, ys, padded, levels=[0.5], colors="cyan", linewidths=0.8)
                    ax.set_xlim(-0.5, w - 0.5)
                    ax.set_ylim(h - 0.5, -0.5)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(f"{layer}\n{'x'.join(str(v) for v in shape)}", fontsize=8)
            if c == 0:
                ax.set_ylabel(_label(result, g), fontsize=8)
        fig.colorbar(im, ax=axes[:, c], shrink=0.8, label="sum |NAP|")
    extra = "; cyan: marker region" if region is not None else ""
    fig.suptitle(f"NAP energy per position\n(sum over feature maps of |NAP|{extra})", fontsize=10)
    return fig


def plot_inactive_fraction(result: NAPResult) -> Figure:
    """Bars per layer: share of feature maps constant over every input, and of those zero."""
    layers = list(result.layers)
    inactive = [result.inactive_fraction[layer] for layer in layers]
    zero = [result.zero_fraction[layer] for layer in layers]
    fig = Figure(figsize=(1.5 + 0.8 * len(layers), 3.2), layout="constrained")
    ax = fig.add_subplot()
    x = np.arange(len(layers))
    ax.bar(x - 0.2, inactive, width=0.4, label="constant over every input")
    ax.bar(x + 0.2, zero, width=0.4, label="zero for every input")
    ax.set_xticks(x, layers, rotation=30, ha="right")
    ax.set_ylim(0, 1)
    ax.set_ylabel("share of feature maps")
    ax.legend(fontsize=8)
    ax.set_title(f"Inactive feature maps ({result.model or 'model'}, {result.n_images} images)")
    return fig


__all__ = [
    "plot_inactive_fraction",
    "plot_input_nap",
    "plot_nap_energy",
    "plot_nap_grid",
    "save_figure",
]
