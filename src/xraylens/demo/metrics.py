"""Measures for the demo: do attribution maps and NAPs land where the ground truth says?

- :func:`concentration`: share of a map's positive mass inside a region, against the region's
  share of the area (chance: a map spread uniformly). ``ratio > 1`` means the map concentrates
  on the region; the ratio is at most ``1 / area share``.
- :func:`pointing_hit`: the pointing game (Zhang et al.): is the map's maximum inside the region
  (grown by ``tolerance`` pixels)?
- :func:`energy_concentration`: the same share for a NAP of a layer: energy ``sum_c |NAP|`` per
  position, the region resampled to the layer's resolution by area.
- :func:`auc`: area under the ROC curve from scores and 0/1 labels (ties averaged).

Maps are numpy arrays or tensors [H, W] or [C, H, W] (channels summed).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from xraylens.errors import InputError
from xraylens.viz.overlay import as_array, to_map


def _region(mask: Any, shape: tuple[int, ...], name: str = "mask") -> np.ndarray:
    m = as_array(mask, name) > 0
    if m.ndim == 3:
        m = m.any(axis=0)
    if m.shape != tuple(shape):
        raise InputError(f"{name} is {m.shape}, the map is {tuple(shape)}")
    return m


def concentration(attr: Any, mask: Any) -> dict[str, float]:
    """``share`` of the positive attribution inside ``mask``, ``chance`` (the mask's area
    share) and ``ratio = share / chance``; NaN share and ratio when the map has no positive
    mass or the mask is empty."""
    a = np.clip(to_map(attr), 0.0, None)
    m = _region(mask, a.shape)
    total = float(a.sum())
    chance = float(m.mean())
    share = float(a[m].sum() / total) if total > 0 else float("nan")
    ratio = share / chance if chance > 0 and total > 0 else float("nan")
    return {"share": share, "chance": chance, "ratio": ratio}


def _dilate(m: np.ndarray, radius: int) -> np.ndarray:
    if radius <= 0:
        return m
    t = torch.from_numpy(m.astype(np.float32))[None, None]
    grown = torch.nn.functional.max_pool2d(t, 2 * radius + 1, stride=1, padding=radius)
    return grown[0, 0].numpy() > 0


def pointing_hit(attr: Any, mask: Any, tolerance: int = 0) -> bool:
    """Whether the map's maximum lies inside ``mask`` grown by ``tolerance`` pixels (ties: any
    maximal pixel counts). An all-zero map never hits."""
    a = to_map(attr)
    m = _dilate(_region(mask, a.shape), int(tolerance))
    top = a.max()
    if top <= 0 and a.min() >= 0:
        return False
    return bool(m[a == top].any())


def area_fractions(mask: Any, shape: tuple[int, int]) -> np.ndarray:
    """Share of each cell of a ``shape`` grid covered by ``mask`` [H, W] (area resampling)."""
    m = torch.from_numpy((as_array(mask, "mask") > 0).astype(np.float32))
    if m.dim() != 2:
        raise InputError(f"mask must be [H, W], got {tuple(m.shape)}")
    return torch.nn.functional.adaptive_avg_pool2d(m[None, None], shape)[0, 0].double().numpy()


def energy_concentration(nap: Any, region: Any) -> dict[str, float]:
    """For a NAP [C, h, w] (or [h, w]) and a region mask [H, W] at input resolution:
    ``share`` of the energy ``sum_c |NAP|`` inside the region, ``chance`` (the region's area
    share), ``ratio``, and ``peak_inside`` (1.0 when the energy peak is in a cell the region
    touches, else 0.0)."""
    a = np.abs(as_array(nap, "nap"))
    if a.ndim == 3:
        a = a.sum(axis=0)
    if a.ndim != 2:
        raise InputError(f"nap must be [C, h, w] or [h, w], got shape {a.shape}")
    frac = area_fractions(region, a.shape)
    total = float(a.sum())
    chance = float(frac.mean())
    share = float((a * frac).sum() / total) if total > 0 else float("nan")
    peak = np.unravel_index(int(np.argmax(a)), a.shape)
    return {
        "share": share,
        "chance": chance,
        "ratio": share / chance if chance > 0 and total > 0 else float("nan"),
        "peak_inside": float(frac[peak] > 0),
    }


def auc(scores: Any, labels: Any) -> float:
    """ROC AUC of ``scores`` [N] for 0/1 ``labels`` [N]; NaN when one class is absent."""
    s = as_array(scores, "scores").ravel()
    y = as_array(labels, "labels").ravel() > 0.5
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s), dtype=np.float64)
    sorted_s = s[order]
    i = 0
    while i < len(s):  # average ranks over ties
        j = i
        while j + 1 < len(s) and sorted_s[j + 1] == sorted_s[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


__all__ = ["area_fractions", "auc", "concentration", "energy_concentration", "pointing_hit"]
