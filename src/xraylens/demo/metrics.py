"""The demo's measures, on top of :mod:`xraylens.evaluate` (where they live now).

- :func:`concentration`: share of a map's positive mass inside a region, its chance level (the
  region's area share) and their ratio (:func:`xraylens.evaluate.region_share`).
- :func:`pointing_hit`: the pointing game (:func:`xraylens.evaluate.pointing_game`); a
  constant map, NaN there, is a miss here.
- :func:`energy_concentration`, :func:`area_fractions`, :func:`auc`: NAP energy share, area
  resampling and ROC AUC (:mod:`xraylens.evaluate.activation`).

Maps are numpy arrays or tensors [H, W] or [C, H, W] (channels summed).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from xraylens import evaluate
from xraylens.errors import InputError
from xraylens.evaluate.activation import area_fractions, roc_auc
from xraylens.evaluate.activation import energy_share as energy_concentration
from xraylens.viz.overlay import as_array, to_map


def _pair(attr: Any, mask: Any, name: str = "mask") -> tuple[torch.Tensor, torch.Tensor]:
    """One map [1, 1, H, W] and its region [1, H, W] (a [C, H, W] mask: any channel)."""
    a = torch.from_numpy(to_map(attr))
    m = as_array(mask, name) > 0
    if m.ndim == 3:
        m = m.any(axis=0)
    if m.shape != tuple(a.shape):
        raise InputError(f"{name} is {m.shape}, the map is {tuple(a.shape)}")
    return a[None, None], torch.from_numpy(m)[None]


def concentration(attr: Any, mask: Any) -> dict[str, float]:
    """``share`` of the positive attribution inside ``mask``, ``chance`` (the mask's area
    share) and ``ratio = share / chance``; NaN share and ratio when the map has no positive
    mass or the mask is empty."""
    a, m = _pair(attr, mask)
    share = float(evaluate.region_share(a, m)[0, 0])
    chance = float(evaluate.area_share(m)[0])
    if chance == 0:
        share = math.nan
    return {"share": share, "chance": chance, "ratio": share / chance if chance else math.nan}


def pointing_hit(attr: Any, mask: Any, tolerance: int = 0) -> bool:
    """Whether the map's maximum lies inside ``mask`` grown by ``tolerance`` pixels (ties: any
    maximal pixel counts). A constant (e.g. all-zero) map never hits."""
    a, m = _pair(attr, mask)
    return bool(evaluate.pointing_game(a, m, tolerance=int(tolerance))[0, 0] == 1)


def auc(scores: Any, labels: Any) -> float:
    """ROC AUC of ``scores`` [N] for 0/1 ``labels`` [N]; NaN when one class is absent."""
    return roc_auc(scores, labels)


__all__ = ["area_fractions", "auc", "concentration", "energy_concentration", "pointing_hit"]
