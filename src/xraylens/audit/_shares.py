"""Region and area shares: :mod:`xraylens.evaluate`'s, with a private stand-in until that
package is installed alongside (same definitions, same shapes)."""

from __future__ import annotations

import torch

try:  # the evaluate package defines these measures; the audit only applies them to regions
    from xraylens.evaluate import area_share, region_share
except ImportError:  # pragma: no cover - only while the evaluate package is not merged

    def region_share(maps, region) -> torch.Tensor:
        """Share of positive attribution inside ``region``: maps [N, T, H, W], region bool
        [N, H, W] or [N, T, H, W] -> float64 [N, T] (NaN where a map has no positive mass)."""
        m = torch.as_tensor(maps).double().clamp(min=0)
        r = torch.as_tensor(region) != 0
        if r.dim() == 3:
            r = r[:, None].expand_as(m)
        total = m.flatten(2).sum(-1)
        inside = (m * r).flatten(2).sum(-1)
        return torch.where(total > 0, inside / total, torch.full_like(total, float("nan")))

    def area_share(region) -> torch.Tensor:
        """Share of the image area in ``region`` [N, H, W] (or [N, T, H, W]) -> float64 [N]
        (or [N, T])."""
        return (torch.as_tensor(region) != 0).double().flatten(-2).mean(-1)


__all__ = ["area_share", "region_share"]
