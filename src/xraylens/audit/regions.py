"""Image regions a shortcut lives in: a border band, the corners, burnt-in markers, the lungs.

Every function returns numpy bool masks [H, W] (or [N, H, W] for a batch). Markers are found
from the image itself (scikit-image): small, bright, high-contrast connected components near
the image edges, as burnt-in laterality letters ("R", "L") and text labels are.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import ndimage

from xraylens.errors import InputError

#: Width of the border band, as a fraction of the image side.
BORDER = 0.08
#: Side of each corner square, as a fraction of the image side.
CORNER = 0.15


def _shape(shape: Any) -> tuple[int, int]:
    h, w = (int(v) for v in tuple(shape)[-2:])
    if h < 4 or w < 4:
        raise InputError(f"audit regions: image shape {tuple(shape)} is too small (< 4 px)")
    return h, w


def border_band(shape: Any, width: float = BORDER) -> np.ndarray:
    """bool [H, W]: pixels within ``width`` (fraction of each side) of the image edge."""
    h, w = _shape(shape)
    if not 0 < width < 0.5:
        raise InputError(f"audit border width must be in (0, 0.5), got {width!r}")
    bh, bw = max(1, round(width * h)), max(1, round(width * w))
    m = np.ones((h, w), dtype=bool)
    m[bh:-bh, bw:-bw] = False
    return m


def corners(shape: Any, size: float = CORNER) -> np.ndarray:
    """bool [H, W]: the four corner squares of side ``size`` (fraction of each side)."""
    h, w = _shape(shape)
    if not 0 < size < 0.5:
        raise InputError(f"audit corner size must be in (0, 0.5), got {size!r}")
    ch, cw = max(1, round(size * h)), max(1, round(size * w))
    m = np.zeros((h, w), dtype=bool)
    for rows in (slice(0, ch), slice(h - ch, h)):
        for cols in (slice(0, cw), slice(w - cw, w)):
            m[rows, cols] = True
    return m


def detect_markers(
    image: Any,
    *,
    edge: float = 0.25,
    contrast: float = 0.4,
    bright: float = 0.85,
    max_area: float = 0.03,
    min_pixels: int = 4,
) -> np.ndarray:
    """bool [H, W]: burnt-in markers detected in ``image`` ([H, W] or [1, H, W]; values in
    [0, 1] as :func:`xraylens.data.preprocess` gives them, or in [0, max] with max > 1, e.g.
    8-bit, which is divided by its maximum).

    A marker is a connected component of near-white pixels (>= ``bright``: burnt-in text is
    drawn saturated) that stand out from their surroundings by at least ``contrast`` in the
    white top-hat (the image minus its grey opening with a square of a fifth of the side), of
    at least ``min_pixels`` and at most ``max_area`` of the image, lying wholly within
    ``edge`` (fraction of the side) of an image edge. Bones are dimmer, long or central.
    """
    from skimage import measure, morphology

    img = np.asarray(getattr(image, "numpy", lambda: image)(), dtype=np.float64)
    if img.ndim == 3 and img.shape[0] == 1:
        img = img[0]
    if img.ndim != 2:
        raise InputError(f"detect_markers: image must be [H, W] or [1, H, W], got {img.shape}")
    if not np.isfinite(img).all():
        raise InputError("detect_markers: image contains NaN or infinite values")
    h, w = _shape(img.shape)
    top = float(img.max())
    scaled = img / top if top > 1.0 else img
    k = max(3, round(min(h, w) / 5)) | 1  # odd: the opening decomposes into small steps
    if hasattr(morphology, "footprint_rectangle"):  # scikit-image >= 0.25
        footprint = morphology.footprint_rectangle((k, k), decomposition="sequence")
    else:
        footprint = morphology.square(k, decomposition="sequence")
    candidates = (morphology.white_tophat(scaled, footprint) > contrast) & (scaled >= bright)
    labelled = measure.label(candidates, connectivity=2)
    # Sizes and boxes of every component at once (regionprops per component is slow on noisy
    # images with thousands of specks).
    areas = np.bincount(labelled.ravel())
    out = np.zeros((h, w), dtype=bool)
    eh, ew = edge * h, edge * w
    keep = []
    for index, box in enumerate(ndimage.find_objects(labelled), start=1):
        if box is None or not min_pixels <= areas[index] <= max_area * h * w:
            continue
        r0, r1, c0, c1 = box[0].start, box[0].stop, box[1].start, box[1].stop
        if r1 <= eh or r0 >= h - eh or c1 <= ew or c0 >= w - ew:
            keep.append(index)
    if keep:
        out = np.isin(labelled, keep)
    return out


def stack_regions(images: Any, lung_masks: Any | None = None, **kw) -> dict[str, np.ndarray]:
    """Regions of a batch: ``{"border", "corners", "markers"[, "lungs"]}`` -> bool [N, H, W].

    ``images``: [N, H, W] or [N, 1, H, W]; ``lung_masks``: [N, H, W] or None (no lung region:
    the audit then says that lung shares are unknown). ``kw`` go to :func:`detect_markers`.
    """
    imgs = np.asarray(getattr(images, "numpy", lambda: images)(), dtype=np.float32)
    if imgs.ndim == 4 and imgs.shape[1] == 1:
        imgs = imgs[:, 0]
    if imgs.ndim != 3:
        raise InputError(f"audit: images must be [N, H, W] or [N, 1, H, W], got {imgs.shape}")
    n = imgs.shape[0]
    out = {
        "border": np.broadcast_to(border_band(imgs.shape), imgs.shape).copy(),
        "corners": np.broadcast_to(corners(imgs.shape), imgs.shape).copy(),
        "markers": np.stack([detect_markers(im, **kw) for im in imgs]),
    }
    if lung_masks is not None:
        lungs = np.asarray(getattr(lung_masks, "numpy", lambda: lung_masks)()) > 0
        if lungs.shape != imgs.shape:
            raise InputError(f"audit: lung_masks are {lungs.shape}, the images {imgs.shape}")
        out["lungs"] = lungs
    assert all(v.shape[0] == n for v in out.values())
    return out
