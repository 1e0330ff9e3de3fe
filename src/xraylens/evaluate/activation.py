"""Localisation of layer-level profiles (NAPs) and classification AUC.

- :func:`area_fractions`: the share of each cell of a coarse grid covered by a region (area
  resampling), to compare a layer's [h, w] grid with a mask at input resolution.
- :func:`energy_share`: share of a NAP's energy ``sum_c |NAP|`` inside a region.
- :func:`roc_auc`: ROC AUC of scores against 0/1 labels (ties averaged).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from xraylens.core.arrays import as_array
from xraylens.errors import InputError


def area_fractions(mask: Any, shape: tuple[int, int]) -> np.ndarray:
    """Share of each cell of a ``shape`` grid covered by ``mask`` [H, W]: float64 [h, w]."""
    m = torch.from_numpy((as_array(mask, "mask") > 0).astype(np.float32))
    if m.dim() != 2:
        raise InputError(f"mask must be [H, W], got {tuple(m.shape)}")
    return torch.nn.functional.adaptive_avg_pool2d(m[None, None], shape)[0, 0].double().numpy()


def energy_share(nap: Any, region: Any) -> dict[str, float]:
    """For a NAP [C, h, w] (or [h, w]) and a region [H, W] at input resolution: ``share`` of
    the energy ``sum_c |NAP|`` inside the region (cells weighted by :func:`area_fractions`),
    ``chance`` (the region's area share), ``ratio`` and ``peak_inside`` (1.0 when the energy
    peak is in a cell the region touches). NaN share and ratio for a zero NAP or empty region."""
    a = np.abs(as_array(nap, "nap"))
    if a.ndim == 3:
        a = a.sum(axis=0)
    if a.ndim != 2:
        raise InputError(f"nap must be [C, h, w] or [h, w], got shape {a.shape}")
    if not np.isfinite(a).all():
        raise InputError("nap contains NaN or infinite values")
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


def roc_auc(scores: Any, labels: Any) -> float:
    """ROC AUC of ``scores`` [N] for 0/1 ``labels`` [N] (ties averaged); NaN when one class is
    absent."""
    s = torch.from_numpy(as_array(scores, "scores").ravel())
    y = torch.from_numpy(as_array(labels, "labels").ravel() > 0.5)
    if s.shape != y.shape:
        raise InputError(f"scores ({s.numel()}) and labels ({y.numel()}) differ in length")
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    srt = s.sort().values
    ranks = (torch.searchsorted(srt, s) + torch.searchsorted(srt, s, right=True) + 1) / 2
    return float((ranks[y].double().sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


__all__ = ["area_fractions", "energy_share", "roc_auc"]
