"""NAP energy outside the lungs: does a layer's group profile live where the anatomy is not?"""

from __future__ import annotations

from typing import Any

import numpy as np

from xraylens.errors import InputError
from xraylens.evaluate.activation import energy_share


def nap_outside_lungs(nap: Any, lungs: Any, groups=None) -> list[dict[str, Any]]:
    """Per layer and group: the share of NAP energy ``sum_c |NAP|`` outside ``lungs`` (a bool
    mask [H, W] at input resolution, e.g. the union or majority of the images' lung masks,
    resampled to each layer's grid by area), its area share and their ratio. Rows: layer,
    group, share, area, ratio. Layers without a spatial grid are skipped."""
    mask = np.asarray(lungs) > 0
    if mask.ndim != 2 or not mask.any():
        raise InputError("nap_outside_lungs: lungs must be a non-empty bool mask [H, W]")
    outside = ~mask
    rows = []
    for layer in nap.layers:
        if len(nap.shape(layer)) != 3:
            continue
        for group in groups or nap.groups:
            e = energy_share(nap.nap[layer][group], outside)
            rows.append(
                {
                    "layer": layer,
                    "group": group,
                    "share": e["share"],
                    "area": e["chance"],
                    "ratio": e["ratio"],
                }
            )
    return rows
