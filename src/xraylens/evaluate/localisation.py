"""Localisation: does a map's attribution lie inside a region (a lung mask, a lesion, a marker)?

Every function takes ``maps`` [N, T, H, W] or [N, T, C, H, W] (channels summed; an
:class:`~xraylens.Attribution` works too) and ``region`` bool [N, H, W] (one mask per image,
shared by its T maps) or [N, T, H, W] (one per map), at the maps' geometry (bring masks there
with :func:`xraylens.data.preprocess_mask`), and returns float64 [N, T].

NaN marks values that are undefined, never a guess: a map with no positive mass
(:func:`region_share`), a constant map (pointing game, IoU), an empty region (every measure but
:func:`region_share`, which is then 0). Maps with NaN or infinite values are an
:class:`~xraylens.InputError`. Work runs in chunks of maps, so 14 labels x 500 images at 224 px
need no more than the maps themselves.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from xraylens.errors import InputError
from xraylens.evaluate._checks import as_maps, as_region, as_region_only

#: pixels per chunk of rows in the vectorised measures (about 64 MB of float64 temporaries)
_CHUNK_PIXELS = 8 * 10**6


def _rows(
    fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], maps: Any, region: Any
) -> torch.Tensor:
    """Apply ``fn(a [B, P], s [B, P] bool) -> [B]`` over chunks of the flattened maps; [N, T]."""
    a = as_maps(maps)
    n, t, h, w = a.shape
    s = as_region(region, (n, t, h, w))
    step = max(1, _CHUNK_PIXELS // (t * h * w))  # images per chunk
    out = [
        # reshape copies a broadcast region, so only one chunk at a time
        fn(a[i : i + step].reshape(-1, h * w).double(), s[i : i + step].reshape(-1, h * w))
        for i in range(0, n, step)
    ]
    return torch.cat(out).reshape(n, t)


def area_share(region: Any) -> torch.Tensor:
    """Fraction of pixels inside ``region``: float64 [N] for [N, H, W], [N, T] for [N, T, H, W].

    This is the share a map spread uniformly over the image would put inside: chance level.
    """
    s = as_region_only(region)
    return s.flatten(-2).double().mean(-1)


def region_share(maps: Any, region: Any) -> torch.Tensor:
    """Share of the **positive** attribution mass inside ``region``: float64 [N, T] in [0, 1].

    NaN where a map has no positive mass (all zero or all negative); 0 for an empty region.
    Quantus' RelevanceMassAccuracy sums signed values instead (equal for non-negative maps).
    """

    def share(a, s):
        pos = a.clamp(min=0)
        total = pos.sum(-1)
        inside = (pos * s).sum(-1)
        return torch.where(total > 0, inside / total, torch.nan)

    return _rows(share, maps, region)


def share_ratio(maps: Any, region: Any) -> torch.Tensor:
    """:func:`region_share` divided by :func:`area_share`: 1 is chance, ``1 / area`` the most.

    float64 [N, T]; NaN where the share is NaN or the region is empty.
    """
    a = as_maps(maps)
    s = as_region(region, tuple(a.shape))
    area = s.flatten(-2).double().mean(-1)
    return region_share(a, s) / torch.where(area > 0, area, torch.nan)


def _empty_nan(values: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    k = s.sum(-1)
    return torch.where(k > 0, values, torch.nan)


def rank_accuracy(maps: Any, region: Any) -> torch.Tensor:
    """Relevance rank accuracy (Arras et al. 2022): of the K highest-valued pixels, K the
    region's size, the fraction inside the region. float64 [N, T]; NaN for an empty region.
    Ties at the K-th value are broken by pixel order (Quantus: by numpy's argsort)."""

    def rank(a, s):
        k = s.sum(-1)
        order = torch.argsort(a, dim=-1, descending=True, stable=True)
        hits = torch.gather(s, 1, order)
        top = torch.arange(a.shape[1])[None] < k[:, None]
        return _empty_nan((hits & top).sum(-1).double() / k.clamp(min=1), s)

    return _rows(rank, maps, region)


def _dilate(s: torch.Tensor, radius: int) -> torch.Tensor:
    """Grow bool [N, T, H, W] regions by ``radius`` pixels (a square neighbourhood)."""
    if radius <= 0:
        return s
    n, t, h, w = s.shape
    grown = torch.nn.functional.max_pool2d(
        s.reshape(n * t, 1, h, w).float(), 2 * radius + 1, stride=1, padding=radius
    )
    return grown.reshape(n, t, h, w) > 0


def pointing_game(maps: Any, region: Any, tolerance: int = 0) -> torch.Tensor:
    """Pointing game (Zhang et al. 2018): 1.0 when the map's maximum lies inside ``region``
    grown by ``tolerance`` pixels (ties: any maximal pixel counts), else 0.0. float64 [N, T];
    NaN for a constant map (no maximum to point with) or an empty region."""
    if isinstance(tolerance, bool) or not isinstance(tolerance, int) or tolerance < 0:
        raise InputError(f"pointing_game: tolerance must be an int >= 0, got {tolerance!r}")
    a = as_maps(maps)
    s = _dilate(as_region(region, tuple(a.shape)), tolerance)

    def hit(a, s):
        top = a.max(-1, keepdim=True).values
        inside = ((a == top) & s).any(-1).double()
        constant = a.min(-1).values == top[:, 0]
        return _empty_nan(torch.where(constant, torch.nan, inside), s)

    return _rows(hit, a, s)


def _minmax(a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of ``a`` [B, P] rescaled to [0, 1], and whether each row is constant."""
    lo = a.min(-1, keepdim=True).values
    hi = a.max(-1, keepdim=True).values
    span = hi - lo
    constant = span[:, 0] <= 0
    return (a - lo) / torch.where(span > 0, span, 1.0), constant


def otsu_threshold(a: torch.Tensor, nbins: int = 256) -> torch.Tensor:
    """Otsu's threshold of each row of ``a`` [B, P]: float64 [B], as
    :func:`skimage.filters.threshold_otsu` (a ``nbins`` histogram over each row's range; the
    threshold is a bin centre, pixels strictly above it are foreground)."""
    a = a.double()
    lo = a.min(-1, keepdim=True).values
    hi = a.max(-1, keepdim=True).values
    span = torch.where(hi > lo, hi - lo, 1.0)
    idx = ((a - lo) / span * nbins).floor().clamp(0, nbins - 1).long()
    b = a.shape[0]
    hist = torch.zeros(b, nbins, dtype=torch.float64)
    hist.scatter_add_(1, idx, torch.ones_like(a))
    centres = lo + (torch.arange(nbins, dtype=torch.float64)[None] + 0.5) * span / nbins
    w1 = hist.cumsum(-1)
    w2 = hist.flip(-1).cumsum(-1).flip(-1)
    m1 = (hist * centres).cumsum(-1) / w1.clamp(min=1e-300)
    m2 = (hist * centres).flip(-1).cumsum(-1).flip(-1) / w2.clamp(min=1e-300)
    var = w1[:, :-1] * w2[:, 1:] * (m1[:, :-1] - m2[:, 1:]) ** 2
    best = var.argmax(-1)
    out = centres.gather(1, best[:, None])[:, 0]
    return torch.where(hi[:, 0] > lo[:, 0], out, lo[:, 0])


def binarise(maps: Any, threshold: str | float = "otsu") -> torch.Tensor:
    """Binary maps bool [N, T, H, W]: each map min-max normalised to [0, 1], then kept where it
    exceeds ``threshold`` (a float in [0, 1)) or its Otsu threshold (``"otsu"``), as in
    CheXlocalize (Saporta et al. 2022). A constant map binarises to all False."""
    if isinstance(threshold, str):
        if threshold != "otsu":
            raise InputError(f"binarise: threshold must be 'otsu' or a float, got {threshold!r}")
    elif isinstance(threshold, bool) or not (
        isinstance(threshold, (int, float)) and 0 <= threshold < 1
    ):
        raise InputError(f"binarise: threshold must be 'otsu' or in [0, 1), got {threshold!r}")
    a = as_maps(maps)
    n, t, h, w = a.shape
    flat = a.reshape(n * t, h * w)
    step = max(1, _CHUNK_PIXELS // (h * w))
    out = []
    for i in range(0, n * t, step):
        norm, constant = _minmax(flat[i : i + step].double())
        if threshold == "otsu":
            level = otsu_threshold(norm)
        else:
            level = torch.full_like(norm[:, 0], float(threshold))
        out.append((norm > level[:, None]) & ~constant[:, None])
    return torch.cat(out).reshape(n, t, h, w)


def iou(maps: Any, region: Any, threshold: str | float = "otsu") -> torch.Tensor:
    """Intersection over union of :func:`binarise` d maps and ``region``: float64 [N, T];
    NaN for a constant map or an empty region."""
    a = as_maps(maps)
    s = as_region(region, tuple(a.shape))
    b = binarise(a, threshold)
    constant = a.flatten(2).amax(-1) == a.flatten(2).amin(-1)
    inter = (b & s).flatten(2).sum(-1).double()
    union = (b | s).flatten(2).sum(-1).double()
    value = inter / union.clamp(min=1)
    empty = s.flatten(2).sum(-1) == 0
    return torch.where(constant | empty, torch.nan, value)


def pixel_auroc(maps: Any, region: Any) -> torch.Tensor:
    """Area under the ROC curve of pixel values as scores for region membership: float64
    [N, T] (0.5 chance, ties averaged); NaN when the region is empty or covers every pixel."""

    def auroc(a, s):
        srt = a.sort(-1).values
        low = torch.searchsorted(srt, a, right=False)
        high = torch.searchsorted(srt, a, right=True)
        ranks = (low + high + 1).double() / 2  # mean 1-based rank over ties
        p = s.sum(-1).double()
        q = s.shape[1] - p
        value = ((ranks * s).sum(-1) - p * (p + 1) / 2) / (p * q).clamp(min=1)
        return torch.where((p > 0) & (q > 0), value, torch.nan)

    return _rows(auroc, maps, region)


__all__ = [
    "area_share",
    "binarise",
    "iou",
    "otsu_threshold",
    "pixel_auroc",
    "pointing_game",
    "rank_accuracy",
    "region_share",
    "share_ratio",
]
