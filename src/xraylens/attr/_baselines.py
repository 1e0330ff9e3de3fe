"""Baselines: one reference per image (IG, DeepLIFT) or a distribution (the SHAP methods)."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from xraylens.errors import InputError


def per_image(value: float | torch.Tensor, x: torch.Tensor, name: str = "baseline") -> torch.Tensor:
    """The baseline of every image, [N, C, H, W] (broadcast view), on ``x``'s device/dtype."""
    n, c, h, w = x.shape
    if not isinstance(value, torch.Tensor):
        return torch.full((1, 1, 1, 1), float(value), dtype=x.dtype, device=x.device).expand(
            n, c, h, w
        )
    b = value.detach().to(device=x.device, dtype=x.dtype)
    if b.dim() == 3:
        b = b[None]
    if b.dim() == 0:
        b = b.reshape(1, 1, 1, 1)
    try:
        if b.shape[0] not in (1, n):
            raise RuntimeError("batch")
        return b.expand(n, c, h, w) if b.shape[0] == 1 else torch.broadcast_to(b, (n, c, h, w))
    except RuntimeError:
        raise InputError(
            f"{name} of shape {tuple(value.shape)} does not broadcast to the input "
            f"{tuple(x.shape)}; give [C, H, W], [1, C, H, W] or [N, C, H, W]"
        ) from None


def distribution(
    spec: str | float | torch.Tensor,
    n_baselines: int,
    x: torch.Tensor,
    gen: torch.Generator | None,
) -> torch.Tensor:
    """Baselines of every image, [N, B, C, H, W] (broadcast where shared); random ones drawn
    from ``gen`` (None: the global generator)."""
    n, c, h, w = x.shape
    if isinstance(spec, str) and spec == "uniform":
        dist = torch.rand((n_baselines, c, h, w), generator=gen, device=x.device, dtype=x.dtype)
        return dist[None].expand(n, -1, -1, -1, -1)
    if isinstance(spec, str) and spec == "blur":
        sigmas = np.geomspace(max(h, w) / 64, max(h, w) / 4, n_baselines)
        return torch.stack([blur(x, float(s)) for s in sigmas], dim=1)
    if not isinstance(spec, torch.Tensor):
        return torch.full((1, 1, c, h, w), float(spec), dtype=x.dtype, device=x.device).expand(
            n, 1, c, h, w
        )
    b = spec.detach().to(device=x.device, dtype=x.dtype)
    if b.dim() == 0:
        b = b.reshape(1, 1, 1, 1)
    if b.dim() == 3:
        b = b[None]
    try:
        b = torch.broadcast_to(b, (b.shape[0], c, h, w))
    except RuntimeError:
        raise InputError(
            f"baselines of shape {tuple(spec.shape)} do not match the input {tuple(x.shape)}; "
            "give [B, C, H, W]"
        ) from None
    return b[None].expand(n, -1, -1, -1, -1)


def blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of [N, C, H, W] (reflect padding where the kernel fits)."""
    radius = max(1, int(math.ceil(3 * sigma)))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    c = x.shape[1]
    out = x
    for dim in (2, 3):
        size = out.shape[dim]
        pad = [0, 0, 0, 0]
        r = min(radius, size - 1)
        if dim == 3:
            pad[0] = pad[1] = r
        else:
            pad[2] = pad[3] = r
        padded = F.pad(out, pad, mode="reflect") if r > 0 else out
        if r < radius:  # kernel wider than the image: pad the rest with the edge values
            extra = [p and radius - r for p in pad]
            padded = F.pad(padded, extra, mode="replicate")
        kernel = k.view(1, 1, -1, 1) if dim == 2 else k.view(1, 1, 1, -1)
        out = F.conv2d(padded, kernel.expand(c, 1, *kernel.shape[2:]), groups=c)
    return out


def numpy_rng(seed: int | None):
    """NumPy's global generator (``np.random``, as Captum) when ``seed`` is None, else a new
    seeded ``Generator``; both offer ``choice`` and ``uniform``."""
    return np.random if seed is None else np.random.default_rng(seed)
