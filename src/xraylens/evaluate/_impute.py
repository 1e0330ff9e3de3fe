"""Substrates for perturbation curves: constant, blurred, and ROAD's noisy linear imputation.

ROAD (Rong et al. 2022) replaces removed pixels by the solution of a linear system: each one
equals the weighted mean of its 8 neighbours (weights 1/6 direct, 1/12 diagonal; neighbours
outside the image left out), plus Gaussian noise. Quantus solves it per image with a sparse
LU; here it is solved for a whole batch at once by conjugate gradients on the 3x3 stencil
(the operator is symmetric positive definite on the removed pixels whenever every removed
region touches a kept pixel), to a relative residual of ``tol``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

_DIAG, _DIRECT = 1.0 / 12, 1.0 / 6


def _stencil(channels: int, like: torch.Tensor) -> torch.Tensor:
    k = torch.tensor(
        [[_DIAG, _DIRECT, _DIAG], [_DIRECT, 0.0, _DIRECT], [_DIAG, _DIRECT, _DIAG]],
        dtype=like.dtype,
        device=like.device,
    )
    return k.expand(channels, 1, 3, 3).contiguous()


def linear_imputation(
    x: torch.Tensor,
    removed: torch.Tensor,
    *,
    tol: float = 1e-8,
    max_iter: int = 2000,
) -> torch.Tensor:
    """ROAD's linear imputation without noise: x [B, C, H, W], removed bool [B, 1, H, W].

    Returns x with each removed pixel replaced so that it equals the weighted mean of its
    neighbours (float64 internally). A removed region with no kept neighbour at all (e.g. every
    pixel removed) has no defined solution and is filled with 0.
    """
    b, c, h, w = x.shape
    orig_dtype = x.dtype
    x = x.double()
    unknown = removed.expand(b, c, h, w).to(x.dtype)
    known = x * (1 - unknown)
    k = _stencil(c, x)
    degree = F.conv2d(
        torch.ones(1, c, h, w, dtype=x.dtype, device=x.device), k, padding=1, groups=c
    )

    def laplacian(z: torch.Tensor) -> torch.Tensor:
        # (sum of weighted neighbours) - (sum of weights) * z; zero padding = no neighbour
        return F.conv2d(z, k, padding=1, groups=c) - degree * z

    def op(z: torch.Tensor) -> torch.Tensor:  # SPD on the unknown pixels
        return -unknown * laplacian(unknown * z)

    rhs = unknown * laplacian(known)  # moves the known neighbours to the right-hand side
    z = torch.zeros_like(x)
    r = rhs.clone()
    p = r.clone()
    rs = (r * r).flatten(1).sum(-1)
    stop = (tol**2) * rs.clamp(min=1e-300)
    for _ in range(max_iter):
        if bool((rs <= stop).all()):
            break
        ap = op(p)
        denom = (p * ap).flatten(1).sum(-1)
        alpha = torch.where(denom > 0, rs / denom.clamp(min=1e-300), 0.0)
        z = z + alpha[:, None, None, None] * p
        r = r - alpha[:, None, None, None] * ap
        rs_new = (r * r).flatten(1).sum(-1)
        beta = torch.where(rs > 0, rs_new / rs.clamp(min=1e-300), 0.0)
        p = r + beta[:, None, None, None] * p
        rs = rs_new
    return (known + unknown * z).to(orig_dtype)


def blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian blur of x [B, C, H, W] with std ``sigma`` pixels (kernel +-3 sigma, reflected
    borders), as RISE's blurred substrate."""
    radius = max(1, int(round(3 * sigma)))
    t = torch.arange(-radius, radius + 1, dtype=torch.float64)
    g = torch.exp(-0.5 * (t / sigma) ** 2)
    g = (g / g.sum()).to(x.dtype).to(x.device)
    c = x.shape[1]
    pad = (radius, radius, radius, radius)
    y = F.pad(x, pad, mode="reflect" if min(x.shape[-2:]) > radius else "replicate")
    y = F.conv2d(y, g.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(y, g.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)
