"""Input checks shared by the evaluation measures: maps and regions to one geometry."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from xraylens.errors import InputError


def as_maps(maps: Any, name: str = "maps", *, allow_nan: bool = False) -> torch.Tensor:
    """float32/64 CPU tensor [N, T, H, W] from maps [N, T, H, W], [N, T, C, H, W] (channels
    summed) or an :class:`~xraylens.Attribution` (its ``values``)."""
    from xraylens.core.attribution import Attribution

    values = maps.values if isinstance(maps, Attribution) else maps
    if isinstance(values, np.ndarray):
        values = torch.from_numpy(values)
    if not torch.is_tensor(values):
        raise InputError(
            f"{name} must be a tensor, array or Attribution, got {type(maps).__name__}"
        )
    if values.is_complex() or values.dtype == torch.bool:
        raise InputError(f"{name} must hold real numbers, got {values.dtype}")
    if values.dim() == 5:
        values = values.sum(dim=2)
    if values.dim() != 4:
        raise InputError(
            f"{name} must be [N, T, H, W] or [N, T, C, H, W], got {list(values.shape)}"
        )
    if 0 in values.shape:
        raise InputError(f"{name} is empty: shape {list(values.shape)}")
    values = values.detach().cpu()
    if values.dtype != torch.float64:
        values = values.float()  # float32 storage; reductions accumulate in float64
    # one float sum first (NaN and infinities make it non-finite); the element-wise check,
    # which allocates a bool copy of every map, only when it is not (or overflowed)
    if not allow_nan and not torch.isfinite(values.sum()) and not torch.isfinite(values).all():
        bad = (~torch.isfinite(values)).flatten(2).any(-1).nonzero()[0].tolist()
        raise InputError(
            f"{name} contains NaN or infinite values (first at image {bad[0]}, slot {bad[1]})"
        )
    return values


def as_region(region: Any, shape: tuple[int, int, int, int], name: str = "region") -> torch.Tensor:
    """bool [N, T, H, W] from a region [N, H, W] (one per image, shared by its T maps) or
    [N, T, H, W] (one per map), checked against the maps' ``shape`` [N, T, H, W]."""
    n, t, h, w = shape
    if isinstance(region, np.ndarray):
        region = torch.from_numpy(region)
    if not torch.is_tensor(region):
        raise InputError(f"{name} must be a bool tensor or array, got {type(region).__name__}")
    if region.is_floating_point() and not torch.isfinite(region).all():
        raise InputError(f"{name} contains NaN or infinite values")
    region = region.detach().cpu() != 0
    if region.dim() == 3:
        region = region[:, None].expand(-1, t, -1, -1)
    if region.dim() != 4:
        raise InputError(f"{name} must be [N, H, W] or [N, T, H, W], got {list(region.shape)}")
    if region.shape[0] != n:
        raise InputError(f"{name} holds {region.shape[0]} masks for {n} images")
    if region.shape[1] != t:
        raise InputError(f"{name} holds {region.shape[1]} masks per image for {t} maps per image")
    if tuple(region.shape[2:]) != (h, w):
        raise InputError(
            f"{name} is {tuple(region.shape[2:])} pixels, the maps are {(h, w)}; bring masks to "
            "the maps' geometry with xraylens.data.preprocess_mask(mask, size)"
        )
    return region


def as_region_only(region: Any, name: str = "region") -> torch.Tensor:
    """bool [N, H, W] or [N, T, H, W] without maps to compare against."""
    if isinstance(region, np.ndarray):
        region = torch.from_numpy(region)
    if not torch.is_tensor(region):
        raise InputError(f"{name} must be a bool tensor or array, got {type(region).__name__}")
    if region.dim() not in (3, 4):
        raise InputError(f"{name} must be [N, H, W] or [N, T, H, W], got {list(region.shape)}")
    if 0 in region.shape:
        raise InputError(f"{name} is empty: shape {list(region.shape)}")
    return region.detach().cpu() != 0
