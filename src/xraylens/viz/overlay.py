"""Attribution maps over greyscale X-rays: scaling, sign modes and overlays.

No RGB assumption anywhere: the underlay is a greyscale image ([H, W] or [C, H, W], channels
averaged), the map is summed over its channels (as Captum's ``visualize_image_attr`` does) and
drawn on top with a colormap and a per-pixel alpha, so the X-ray stays visible where the map is
zero.

Sign modes (:data:`SIGNS`):

- ``"positive"`` (default): evidence for the label only (negative values dropped), sequential
  colormap;
- ``"absolute"``: ``|map|``, sequential colormap;
- ``"negative"``: evidence against the label only (shown as magnitudes), sequential colormap;
- ``"signed"`` (alias ``"all"``): signed, diverging colormap with limits symmetric around 0
  (red +, blue -).

Outlier clipping (:func:`normalize_map`): maps are divided by a threshold and clipped to [0, 1]
(or [-1, 1] signed) so that a few extreme pixels do not wash out the rest:

- ``scaling="percentile"`` (default, ``outlier_perc=2``): the ``100 - outlier_perc`` percentile
  of the map's non-zero magnitudes, so the strongest 2 % of the pixels saturate. One huge pixel
  cannot hide the rest of the map;
- ``scaling="cumulative"``: Captum's ``visualize_image_attr`` rule: the smallest value at which
  the sorted magnitudes' cumulative sum reaches ``100 - outlier_perc`` percent of their total
  (a single pixel holding most of the total mass then sets the scale);
- ``scaling="max"``: the largest magnitude (no clipping).

Opacity (:data:`ALPHA_SCALINGS`): the heat map's per-pixel opacity is ``alpha * f(|scaled|)``
with ``f(v) = v`` by default (``"linear"``: zero stays transparent and, with the clipping above,
the strongest structures stand out), ``"sqrt"`` (weak attribution more visible, but pixel-level
gradient noise becomes a haze over the lungs) or ``"constant"`` (``alpha`` wherever the map is
non-zero).

:data:`DEFAULTS` holds the defaults the CLI, the demo and the recipe share.

All-zero maps and constant images give valid figures without warnings or NaN.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from xraylens.core.arrays import as_array
from xraylens.errors import InputError

SIGNS = ("positive", "absolute", "negative", "signed", "all")
SCALINGS = ("percentile", "cumulative", "max")
ALPHA_SCALINGS = ("linear", "sqrt", "constant")
#: Default colormap per sign mode.
CMAPS = {
    "positive": "inferno",
    "absolute": "inferno",
    "negative": "viridis",
    "signed": "RdBu_r",
    "all": "RdBu_r",
}
#: Display defaults shared by the CLI (``xraylens explain``), the demo and the recipe.
DEFAULTS = {
    "sign": "positive",
    "outlier_perc": 2.0,
    "scaling": "percentile",
    "alpha": 0.7,
    "alpha_scaling": "linear",
}


def is_signed(sign: str) -> bool:
    """Whether ``sign`` shows both signs (diverging colormap, limits [-1, 1])."""
    return sign in ("signed", "all")


def to_image(image: Any, name: str = "image") -> np.ndarray:
    """A greyscale underlay [H, W] from [H, W] or [C, H, W] (channels averaged)."""
    a = as_array(image, name)
    if a.ndim == 3:
        a = a.mean(axis=0)
    if a.ndim != 2:
        raise InputError(f"{name} must be [H, W] or [C, H, W], got shape {a.shape}")
    if not np.isfinite(a).all():
        raise InputError(f"{name} contains NaN or infinite values")
    return a


def to_map(attr: Any, name: str = "attribution") -> np.ndarray:
    """A 2-D map [H, W] from [H, W] or [C, H, W] (channels summed)."""
    a = as_array(attr, name)
    if a.ndim == 3:
        a = a.sum(axis=0)
    if a.ndim != 2:
        raise InputError(f"{name} must be [H, W] or [C, H, W], got shape {a.shape}")
    if not np.isfinite(a).all():
        raise InputError(f"{name} contains NaN or infinite values")
    return a


def _check_sign(sign: str) -> str:
    if sign not in SIGNS:
        raise InputError(f"sign must be one of {SIGNS}, got {sign!r}")
    return sign


def _magnitudes(a: np.ndarray, sign: str) -> np.ndarray:
    if sign == "positive":
        return np.clip(a, 0.0, None)
    if sign == "negative":
        return np.clip(-a, 0.0, None)
    return np.abs(a)


def scale_threshold(
    magnitudes: np.ndarray, outlier_perc: float = 2.0, scaling: str = "percentile"
) -> float:
    """The value that maps to 1 (see the module docstring); 0.0 for an all-zero map."""
    if scaling not in SCALINGS:
        raise InputError(f"scaling must be one of {SCALINGS}, got {scaling!r}")
    if not 0.0 <= float(outlier_perc) < 100.0:
        raise InputError(f"outlier_perc must be in [0, 100), got {outlier_perc!r}")
    m = np.asarray(magnitudes, dtype=np.float64).ravel()
    if m.size == 0 or not np.any(m > 0):
        return 0.0
    if scaling == "max" or outlier_perc == 0:
        return float(m.max())
    if scaling == "percentile":  # of the non-zero pixels: a sparse map still gets a scale
        return float(np.percentile(m[m > 0], 100.0 - outlier_perc))
    ordered = np.sort(m)
    cumulative = np.cumsum(ordered)
    position = np.searchsorted(cumulative, cumulative[-1] * (100.0 - outlier_perc) / 100.0)
    return float(ordered[min(position, ordered.size - 1)])


def normalize_map(
    attr: Any,
    sign: str = "positive",
    *,
    outlier_perc: float = 2.0,
    scaling: str = "percentile",
    threshold: float | None = None,
) -> np.ndarray:
    """Scale a map for display: [H, W] (or [C, H, W], summed) -> float64 [H, W].

    Values lie in [0, 1] for ``"positive"``/``"absolute"``/``"negative"`` and in [-1, 1] for
    ``"signed"``/``"all"``. ``threshold`` overrides the outlier rule (e.g. one shared scale for
    several panels, from :func:`scale_threshold`). An all-zero map gives zeros.
    """
    a = to_map(attr)
    sign = _check_sign(sign)
    mags = _magnitudes(a, sign)
    if threshold is None:
        threshold = scale_threshold(mags, outlier_perc, scaling)
    if threshold <= 0:
        return np.zeros_like(a)
    if is_signed(sign):
        return np.clip(a / threshold, -1.0, 1.0)
    return np.clip(mags / threshold, 0.0, 1.0)


def _image_limits(img: np.ndarray) -> tuple[float, float]:
    lo, hi = float(img.min()), float(img.max())
    return (lo, hi) if hi > lo else (lo, lo + 1.0)  # a constant image: a valid, flat scale


def draw_overlay(
    ax: Axes,
    image: Any,
    attr: Any | None = None,
    *,
    sign: str = "positive",
    outlier_perc: float = 2.0,
    scaling: str = "percentile",
    threshold: float | None = None,
    alpha: float = 0.7,
    alpha_scaling: str = "linear",
    cmap: str | None = None,
    title: str | None = None,
    contour: Any | None = None,
    contour_color: str = "cyan",
) -> ScalarMappable:
    """Draw ``image`` (grey) with ``attr`` on top into ``ax``; returns the map's colour scale.

    The heat map's per-pixel opacity is ``alpha * f(|scaled value|)`` (``alpha_scaling``, see
    the module docstring): zero attribution leaves the X-ray visible. ``attr=None`` draws the
    image alone. ``contour``: a mask [H, W] (e.g. a lesion or the lungs) outlined on top.
    """
    img = to_image(image)
    lo, hi = _image_limits(img)
    ax.imshow(img, cmap="gray", vmin=lo, vmax=hi, interpolation="nearest")
    sign = _check_sign(sign)
    cmap_name = cmap or CMAPS[sign]
    vmin = -1.0 if is_signed(sign) else 0.0
    mappable = ScalarMappable(norm=Normalize(vmin=vmin, vmax=1.0), cmap=cmap_name)
    if attr is not None:
        if not 0.0 <= alpha <= 1.0:
            raise InputError(f"alpha must be in [0, 1], got {alpha!r}")
        if alpha_scaling not in ALPHA_SCALINGS:
            raise InputError(
                f"alpha_scaling must be one of {ALPHA_SCALINGS}, got {alpha_scaling!r}"
            )
        scaled = normalize_map(
            attr, sign, outlier_perc=outlier_perc, scaling=scaling, threshold=threshold
        )
        if scaled.shape != img.shape:
            raise InputError(
                f"attribution map {scaled.shape} and image {img.shape} differ in size; "
                "resize one to the other"
            )
        rgba = colormaps[cmap_name](mappable.norm(scaled))
        rgba[..., 3] = alpha * _opacity(np.abs(scaled), alpha_scaling)
        ax.imshow(rgba, interpolation="nearest")
    if contour is not None:
        mask = to_image(contour, "contour") > 0
        if mask.shape != img.shape:
            raise InputError(f"contour mask {mask.shape} and image {img.shape} differ in size")
        if mask.any() and not mask.all():
            ax.contour(mask.astype(float), levels=[0.5], colors=contour_color, linewidths=0.8)
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=9)
    return mappable


def _opacity(v: np.ndarray, alpha_scaling: str) -> np.ndarray:
    """Per-pixel opacity factor in [0, 1] of scaled magnitudes ``v`` in [0, 1]."""
    if alpha_scaling == "sqrt":
        return np.sqrt(v)
    if alpha_scaling == "constant":
        return (v > 0).astype(np.float64)
    return v


def overlay(
    image: Any,
    attr: Any | None = None,
    *,
    sign: str = "positive",
    outlier_perc: float = 2.0,
    scaling: str = "percentile",
    alpha: float = 0.7,
    alpha_scaling: str = "linear",
    cmap: str | None = None,
    title: str | None = None,
    contour: Any | None = None,
    colorbar: bool = True,
    size: float = 4.0,
) -> Figure:
    """A figure of one attribution map over its greyscale image (see :func:`draw_overlay`).

    Args:
        image: [H, W] or [C, H, W] tensor/array (any range; shown in grey).
        attr: [H, W] or [C, H, W] map of the same size (channels summed), or None.
        contour: optional mask [H, W] outlined on top (e.g. a lesion or the lungs).
    """
    fig = Figure(figsize=(size + (0.8 if colorbar else 0.0), size), layout="constrained")
    ax = fig.add_subplot()
    mappable = draw_overlay(
        ax,
        image,
        attr,
        sign=sign,
        outlier_perc=outlier_perc,
        scaling=scaling,
        alpha=alpha,
        alpha_scaling=alpha_scaling,
        cmap=cmap,
        title=title,
        contour=contour,
    )
    if colorbar and attr is not None:
        fig.colorbar(mappable, ax=ax, shrink=0.8, label=scale_label(sign, outlier_perc, scaling))
    return fig


def scale_label(sign: str, outlier_perc: float, scaling: str) -> str:
    """Colourbar label, two short lines: what is shown, and what 1 means."""
    if scaling == "max" or outlier_perc == 0:
        one = "1 = max"
    elif scaling == "cumulative":
        one = f"1 = cumulative {100 - outlier_perc:g}%"
    else:
        one = f"1 = top {outlier_perc:g}% (clipped)"
    return f"{sign} attribution\n{one}"


__all__ = [
    "ALPHA_SCALINGS",
    "CMAPS",
    "DEFAULTS",
    "SCALINGS",
    "SIGNS",
    "draw_overlay",
    "is_signed",
    "normalize_map",
    "overlay",
    "scale_label",
    "scale_threshold",
    "to_image",
    "to_map",
]
