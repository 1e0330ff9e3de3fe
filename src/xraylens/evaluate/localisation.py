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

import numpy as np
import torch

from xraylens.errors import InputError
from xraylens.evaluate._checks import as_maps, as_region, as_region_only

#: pixels per chunk of maps: small enough that a chunk's float64 temporaries (8 MB) stay in
#: the CPU's cache, which makes the element-wise passes several times faster than 64 MB chunks
_CHUNK_PIXELS = 2**20


def _flat(maps: Any, region: Any, radius: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Maps [N, T, P] and the region bool [N, 1, P] (one mask per image, not copied per map)
    or [N, T, P] (one per map), grown by ``radius`` pixels (a square neighbourhood)."""
    a = as_maps(maps)
    n, t, h, w = a.shape
    s = as_region(region, (n, t, h, w))
    if t > 1 and s.stride(1) == 0:  # a per-image mask broadcast over the T maps
        s = s[:, :1]
    m = s.shape[1]
    if radius > 0:
        s = torch.nn.functional.max_pool2d(
            s.reshape(n * m, 1, h, w).float(), 2 * radius + 1, stride=1, padding=radius
        )
        s = s > 0
    return a.reshape(n, t, h * w), s.reshape(n, m, h * w)


def _rows(
    fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], a, s, threads: bool = False
) -> torch.Tensor:
    """Apply ``fn(a [B, T, P], s [B, 1 or T, P] bool) -> [B, T]`` over chunks of images;
    ``threads``: chunks spread over torch's thread count (for ``fn`` s whose work is numpy on
    one core, which releases the GIL)."""
    n, t, p = a.shape
    step = max(1, _CHUNK_PIXELS // (t * p))  # images per chunk
    starts = range(0, n, step)
    workers = min(torch.get_num_threads(), len(starts)) if threads else 1
    if workers <= 1:
        return torch.cat([fn(a[i : i + step], s[i : i + step]) for i in starts])
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(workers) as pool:
        return torch.cat(list(pool.map(lambda i: fn(a[i : i + step], s[i : i + step]), starts)))


def _count(b: torch.Tensor) -> torch.Tensor:
    """True values along the last dim of bool ``b``: int64 (count_nonzero, 30x faster than a
    bool sum on the CPU)."""
    return torch.count_nonzero(b, dim=-1)


def area_share(region: Any) -> torch.Tensor:
    """Fraction of pixels inside ``region``: float64 [N] for [N, H, W], [N, T] for [N, T, H, W].

    This is the share a map spread uniformly over the image would put inside: chance level.
    """
    s = as_region_only(region)
    return _count(s.flatten(-2)).double() / (s.shape[-1] * s.shape[-2])


def _share(a: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    pos = a.clamp(min=0).double()  # float64 sums, as promised
    if s.shape[1] == 1:  # one product gives the total (a column of ones) and the inside mass
        cols = torch.stack([torch.ones_like(s[:, 0]), s[:, 0]], -1).double()  # [B, P, 2]
        sums = torch.bmm(pos, cols)
        total, inside = sums[..., 0], sums[..., 1]
    else:
        total = pos.sum(-1)
        inside = (pos * s).sum(-1)
    return torch.where(total > 0, inside / total, torch.nan)


def region_share(maps: Any, region: Any) -> torch.Tensor:
    """Share of the **positive** attribution mass inside ``region``: float64 [N, T] in [0, 1].

    NaN where a map has no positive mass (all zero or all negative); 0 for an empty region.
    Quantus' RelevanceMassAccuracy sums signed values instead (equal for non-negative maps).
    """
    return _rows(_share, *_flat(maps, region))


def share_ratio(maps: Any, region: Any) -> torch.Tensor:
    """:func:`region_share` divided by :func:`area_share`: 1 is chance, ``1 / area`` the most.

    float64 [N, T]; NaN where the share is NaN or the region is empty.
    """
    a, s = _flat(maps, region)  # checked once, for both
    area = _count(s).double() / s.shape[-1]
    return _rows(_share, a, s) / torch.where(area > 0, area, torch.nan)


def _empty_nan(values: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    return torch.where(s.any(-1), values, torch.nan)


def _rank(a: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    b, t, p = a.shape
    k = _count(s).expand(b, t).reshape(-1)
    a, s = a.reshape(b * t, p), s.expand(b, t, p).reshape(b * t, p)
    out = torch.full((b * t,), torch.nan, dtype=torch.float64)
    # rows grouped by K (with one mask per image, its T maps share K); the K-th largest value
    # by selection (numpy's introselect: O(P), faster than torch.kthvalue)
    for kk in k.unique().tolist():
        if kk == 0:
            continue
        rows = (k == kk).nonzero()[:, 0]
        ar, sr = a[rows], s[rows]
        v = torch.from_numpy(np.partition(ar.numpy(), p - kk, axis=-1)[:, p - kk, None])
        top = ar >= v
        # ties at the K-th value beyond the K places: the first ones in pixel order fill them
        tied = _count(top) > kk
        if bool(tied.any()):
            at, vt = ar[tied], v[tied]
            greater, eq = at > vt, at == vt
            room = kk - _count(greater)[:, None]
            top[tied] = greater | (eq & (eq.cumsum(-1) <= room))
        out[rows] = _count(top & sr).double() / kk
    return out.reshape(b, t)


def rank_accuracy(maps: Any, region: Any) -> torch.Tensor:
    """Relevance rank accuracy (Arras et al. 2022): of the K highest-valued pixels, K the
    region's size, the fraction inside the region. float64 [N, T]; NaN for an empty region.
    Ties at the K-th value are broken by pixel order (Quantus: by numpy's argsort)."""
    return _rows(_rank, *_flat(maps, region), threads=True)


def _hit(a: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    top = a.amax(-1)
    constant = a.amin(-1) == top
    # the largest value inside the region reaches the map's maximum: a maximal pixel inside
    inside = torch.where(s, a, -torch.inf).amax(-1) == top
    return _empty_nan(torch.where(constant, torch.nan, inside.double()), s)


def pointing_game(maps: Any, region: Any, tolerance: int = 0) -> torch.Tensor:
    """Pointing game (Zhang et al. 2018): 1.0 when the map's maximum lies inside ``region``
    grown by ``tolerance`` pixels (ties: any maximal pixel counts), else 0.0. float64 [N, T];
    NaN for a constant map (no maximum to point with) or an empty region."""
    if isinstance(tolerance, bool) or not isinstance(tolerance, int) or tolerance < 0:
        raise InputError(f"pointing_game: tolerance must be an int >= 0, got {tolerance!r}")
    return _rows(_hit, *_flat(maps, region, tolerance))


def _otsu_bins(u: torch.Tensor, nbins: int, lo=0.0, span=1.0) -> torch.Tensor:
    """Otsu's threshold of rows ``u`` [B, P] already scaled to [0, ``nbins``] (float64): the
    chosen bin index [B] (the threshold is that bin's centre). ``lo``, ``span`` [B, 1]: the
    rows' range in their own units, in which the bin centres are placed."""
    b = u.shape[0]
    idx = u.clamp(max=nbins - 1).to(torch.int32).numpy()  # floor: u >= 0
    idx += np.arange(b, dtype=np.int32)[:, None] * nbins  # one bincount for every row
    hist = torch.from_numpy(np.bincount(idx.ravel(), minlength=b * nbins).reshape(b, nbins))
    hist = hist.double()
    centres = lo + (torch.arange(nbins, dtype=torch.float64)[None] + 0.5) * span / nbins
    w1 = hist.cumsum(-1)
    w2 = hist.flip(-1).cumsum(-1).flip(-1)
    m1 = (hist * centres).cumsum(-1) / w1.clamp(min=1e-300)
    m2 = (hist * centres).flip(-1).cumsum(-1).flip(-1) / w2.clamp(min=1e-300)
    var = w1[:, :-1] * w2[:, 1:] * (m1[:, :-1] - m2[:, 1:]) ** 2
    return var.argmax(-1)


def _scaled(a: torch.Tensor, nbins: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rows of ``a`` [B, P] min-max normalised (float64) and times ``nbins`` (exact: a power of
    two for 256), their min, max."""
    lo = a.amin(-1, keepdim=True).double()
    hi = a.amax(-1, keepdim=True).double()
    span = torch.where(hi > lo, hi - lo, 1.0)
    # a copy even for float64 maps (never write into the caller's tensor), then in place
    u = a.to(torch.float64, copy=True).sub_(lo).div_(span).mul_(nbins)
    return u, lo[:, 0], hi[:, 0]


def otsu_threshold(a: torch.Tensor, nbins: int = 256) -> torch.Tensor:
    """Otsu's threshold of each row of ``a`` [B, P]: float64 [B], as
    :func:`skimage.filters.threshold_otsu` (a ``nbins`` histogram over each row's range; the
    threshold is a bin centre, pixels strictly above it are foreground)."""
    a = a.double()
    u, lo, hi = _scaled(a, nbins)
    span = torch.where(hi > lo, hi - lo, 1.0)[:, None]
    best = _otsu_bins(u, nbins, lo[:, None], span)
    centres = lo[:, None] + (torch.arange(nbins, dtype=torch.float64)[None] + 0.5) * span / nbins
    return torch.where(hi > lo, centres.gather(1, best[:, None])[:, 0], lo)


def _binary(a: torch.Tensor, threshold: str | float) -> tuple[torch.Tensor, torch.Tensor]:
    """Binarised rows of ``a`` [B, P] (bool) and whether each row is constant."""
    # min-max normalisation then Otsu on the normalised values, as before: its range is
    # exactly [0, 1], so its histogram bins are floor(256 * norm) and its threshold the centre
    # (k + 0.5) / 256; comparing 256 * norm with k + 0.5 is the same test, exactly
    u, lo, hi = _scaled(a, 256)
    constant = hi <= lo
    if threshold == "otsu":
        level = _otsu_bins(u, 256).double() + 0.5
    else:
        level = torch.full_like(lo, float(threshold) * 256)
    return (u > level[:, None]) & ~constant[:, None], constant


def _check_threshold(threshold: str | float) -> None:
    if isinstance(threshold, str):
        if threshold != "otsu":
            raise InputError(f"binarise: threshold must be 'otsu' or a float, got {threshold!r}")
    elif isinstance(threshold, bool) or not (
        isinstance(threshold, (int, float)) and 0 <= threshold < 1
    ):
        raise InputError(f"binarise: threshold must be 'otsu' or in [0, 1), got {threshold!r}")


def binarise(maps: Any, threshold: str | float = "otsu") -> torch.Tensor:
    """Binary maps bool [N, T, H, W]: each map min-max normalised to [0, 1], then kept where it
    exceeds ``threshold`` (a float in [0, 1)) or its Otsu threshold (``"otsu"``), as in
    CheXlocalize (Saporta et al. 2022). A constant map binarises to all False."""
    _check_threshold(threshold)
    a = as_maps(maps)
    n, t, h, w = a.shape
    flat = a.reshape(n * t, h * w)
    step = max(1, _CHUNK_PIXELS // (h * w))
    out = [_binary(flat[i : i + step], threshold)[0] for i in range(0, n * t, step)]
    return torch.cat(out).reshape(n, t, h, w)


def iou(maps: Any, region: Any, threshold: str | float = "otsu") -> torch.Tensor:
    """Intersection over union of :func:`binarise` d maps and ``region``: float64 [N, T];
    NaN for a constant map or an empty region."""
    _check_threshold(threshold)

    def one(a, s):
        b, t, p = a.shape
        binary, constant = _binary(a.reshape(b * t, p), threshold)
        binary = binary.reshape(b, t, p)
        inter = _count(binary & s)
        area = _count(s)
        union = _count(binary) + area - inter  # |b| + |s| - |b & s|
        value = inter.double() / union.clamp(min=1).double()
        bad = constant.reshape(b, t) | (area == 0)
        return torch.where(bad, torch.nan, value)

    return _rows(one, *_flat(maps, region))


def _twice_u(inside: np.ndarray, outside: np.ndarray) -> int:
    """Twice the Mann-Whitney U of sorted ``inside`` against sorted ``outside`` values: each
    inside value counts the outside values below it, and those equal to it by half."""
    below = np.searchsorted(outside, inside, "left")
    twice = 2 * int(below.sum())
    tied = outside[np.minimum(below, len(outside) - 1)] == inside  # rare: only these searched
    if tied.any():
        twice += int((np.searchsorted(outside, inside[tied], "right") - below[tied]).sum())
    return twice


def _sort_keys(a: np.ndarray) -> np.ndarray:
    """int32 keys [..., P] of float32 values ordered, and equal, exactly as the values are
    (-0.0 made +0.0 first): numpy sorts int32 about 1.5x faster than float32."""
    if a.dtype != np.float32:
        return a
    i = (a + np.float32(0.0)).view(np.int32)
    return i ^ ((i >> 31) & np.int32(0x7FFFFFFF))


def _auroc_image(a: np.ndarray, s: np.ndarray) -> np.ndarray:
    """Twice the U statistics of one image's maps ``a`` [T, P] against masks ``s`` [1 or T, P]:
    float64 [T] of AUROC values (NaN where a class is empty)."""
    t, p = a.shape
    out = np.full(t, np.nan)
    keys = _sort_keys(a)
    # with one mask per image its T maps are split and sorted together
    groups = (
        [(slice(None), s[0])] if s.shape[0] == 1 else [(slice(j, j + 1), s[j]) for j in range(t)]
    )
    for rows, m in groups:
        k = int(np.count_nonzero(m))
        if k in (0, p):
            continue
        inside = np.sort(keys[rows][..., m], axis=-1).reshape(-1, k)
        outside = np.sort(keys[rows][..., ~m], axis=-1).reshape(-1, p - k)
        twice = [_twice_u(u, v) for u, v in zip(inside, outside)]
        out[rows] = np.asarray(twice, dtype=np.float64) / 2 / (k * (p - k))
    return out


def pixel_auroc(maps: Any, region: Any) -> torch.Tensor:
    """Area under the ROC curve of pixel values as scores for region membership: float64
    [N, T] (0.5 chance, ties averaged); NaN when the region is empty or covers every pixel."""
    # both classes sorted (two sorts of halves of the map instead of an argsort of all of it
    # and a gather), counts by binary search in the sorted outside values: integers, exact
    a, s = _flat(maps, region)
    return _rows(_auroc, a, s, threads=True)


def _auroc(a: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    return torch.from_numpy(
        np.stack([_auroc_image(ai, si) for ai, si in zip(a.numpy(), s.numpy())])
    )


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
