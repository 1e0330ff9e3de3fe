"""Complexity of maps: how concentrated the attribution is, whatever it points at.

Both measures use absolute values ``|a|`` of maps [N, T, H, W] (or [N, T, C, H, W], channels
summed first) and return float64 [N, T]; an all-zero map is NaN.

- :func:`sparseness`: the Gini index of ``|a|`` (Chalasani et al. 2020): 0 for a uniform map,
  ``1 - 1/P`` when one pixel of P holds everything. Quantus adds 1e-7 to every value first.
- :func:`entropy`: Shannon entropy (nats) of ``p = |a| / sum |a|`` (Bhatt et al. 2020):
  ``log P`` for a uniform map, 0 for one pixel. Quantus adds 1e-12 inside the logarithm.
"""

from __future__ import annotations

from typing import Any

import torch

from xraylens.evaluate._checks import as_maps

_CHUNK_PIXELS = 8 * 10**6


def _chunks(fn, maps: Any) -> torch.Tensor:
    a = as_maps(maps)
    n, t, h, w = a.shape
    step = max(1, _CHUNK_PIXELS // (t * h * w))
    out = [fn(a[i : i + step].reshape(-1, h * w).double().abs()) for i in range(0, n, step)]
    return torch.cat(out).reshape(n, t)


def sparseness(maps: Any) -> torch.Tensor:
    """Gini index of each map's absolute values: float64 [N, T] in [0, 1); NaN if all zero."""

    def gini(a):
        p = a.shape[1]
        s = a.sort(-1).values
        k = torch.arange(1, p + 1, dtype=torch.float64)
        total = s.sum(-1)
        g = ((2 * k - p - 1) * s).sum(-1) / (p * total.clamp(min=1e-300))
        return torch.where(total > 0, g, torch.nan)

    return _chunks(gini, maps)


def entropy(maps: Any) -> torch.Tensor:
    """Shannon entropy (nats) of each map's normalised absolute values: float64 [N, T]; NaN if
    all zero."""

    def ent(a):
        total = a.sum(-1, keepdim=True)
        p = a / total.clamp(min=1e-300)
        h = -(torch.special.xlogy(p, p)).sum(-1)
        return torch.where(total[:, 0] > 0, h, torch.nan)

    return _chunks(ent, maps)


__all__ = ["entropy", "sparseness"]
