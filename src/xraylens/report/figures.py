"""Small figures for reports, fast enough for hundreds of panels: overlays encoded straight to
PNG (no matplotlib figure per panel), and curves drawn with matplotlib."""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib import colormaps
from PIL import Image as PILImage

from xraylens import viz
from xraylens.report.document import Image
from xraylens.viz.overlay import to_image


def _grey(image: Any) -> np.ndarray:
    img = to_image(image)
    lo, hi = np.percentile(img, (0.5, 99.5))
    return np.clip((img - lo) / (hi - lo), 0, 1) if hi > lo else np.zeros_like(img)


def overlay_image(
    image: Any,
    attr: Any | None,
    name: str,
    *,
    sign: str = "positive",
    size: int = 128,
    alpha: float = 0.7,
    contour: Any | None = None,
) -> Image:
    """The X-ray (grey) with ``attr`` scaled by :func:`xraylens.viz.normalize_map` on top, as
    :func:`xraylens.viz.draw_overlay` draws it (opacity ``alpha * |value|``), resized to
    ``size`` px on its long side; ``contour`` (a mask) is outlined in cyan."""
    grey = _grey(image)
    h, w = grey.shape
    scale = size / max(h, w)
    out_wh = (max(1, round(w * scale)), max(1, round(h * scale)))

    def fit(a: np.ndarray) -> np.ndarray:
        """Resize to the panel first (colour mapping then costs panel pixels, not image
        pixels): nearest when enlarging, area-like bilinear when shrinking."""
        if scale == 1:
            return a
        resample = PILImage.Resampling.NEAREST if scale > 1 else PILImage.Resampling.BILINEAR
        return np.asarray(PILImage.fromarray(a.astype(np.float32), "F").resize(out_wh, resample))

    rgb = np.repeat(fit(grey)[..., None], 3, axis=-1)
    if attr is not None:
        scaled = fit(viz.normalize_map(attr, sign))  # the scale is the full map's
        norm = (scaled + 1) / 2 if sign == "all" else scaled
        colour = colormaps[viz.CMAPS[sign]](norm)[..., :3]
        a = (alpha * np.abs(scaled))[..., None]
        rgb = rgb * (1 - a) + colour * a
    if contour is not None:
        m = fit((np.asarray(contour) > 0).astype(np.float32)) > 0.5
        edge = m & ~(np.roll(m, 1, 0) & np.roll(m, -1, 0) & np.roll(m, 1, 1) & np.roll(m, -1, 1))
        rgb[edge] = (0.0, 1.0, 1.0)
    pil = PILImage.fromarray((np.clip(rgb, 0, 1) * 255).astype(np.uint8))
    buf = io.BytesIO()
    pil.save(buf, format="PNG", optimize=False)
    return Image(buf.getvalue(), name)


def curves_image(
    curves: dict[str, tuple[Sequence[float], Sequence[float]]],
    name: str,
    *,
    title: str,
    xlabel: str,
    ylabel: str,
) -> Image:
    """One line per ``curves`` entry (label -> (x, y)) in one axes."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.8, 3.0), layout="constrained")
    ax = fig.add_subplot()
    for label, (x, y) in curves.items():
        ax.plot(x, y, marker="o", ms=3, lw=1.2, label=label)
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if len(curves) > 1:
        ax.legend(fontsize=7)
    return Image.from_figure(fig, name, title, dpi=100)


def nap_outside_image(rows: Sequence[dict], name: str, *, title: str) -> Image:
    """The NAP energy outside the lungs per layer (rows of
    :func:`xraylens.audit.nap_outside_lungs`): its ratio to the area outside the lungs, a line
    per group, input first; the dashed line at 1 is a uniform profile."""
    from matplotlib.figure import Figure

    layers = list(dict.fromkeys(r["layer"] for r in rows))
    groups = list(dict.fromkeys(r["group"] for r in rows))
    fig = Figure(figsize=(0.75 * len(layers) + 2.4, 2.6), layout="constrained")
    ax = fig.add_subplot()
    for group in groups:
        by = {r["layer"]: r["ratio"] for r in rows if r["group"] == group}
        ax.plot(range(len(layers)), [by.get(x, float("nan")) for x in layers], marker="o",
                ms=3, lw=1.5, label=group)  # fmt: skip
    ax.axhline(1.0, ls="--", lw=1.2, color="0.3", label="uniform (x1)")
    ax.set_xticks(range(len(layers)), layers, rotation=30, fontsize=8)
    ax.set_ylabel("energy outside lungs / area", fontsize=9)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, frameon=False)
    return Image.from_figure(fig, name, title, dpi=100)
