"""Substrates for perturbation curves: constant, blurred, and ROAD's noisy linear imputation.

ROAD (Rong et al. 2022) replaces removed pixels by the solution of a linear system: each one
equals the weighted mean of its 8 neighbours (weights 1/6 direct, 1/12 diagonal; neighbours
outside the image left out), plus Gaussian noise. Quantus solves it per image with a sparse
LU; here it is solved for a whole batch at once by conjugate gradients on the 3x3 stencil
(the operator is symmetric positive definite on the removed pixels whenever every removed
region touches a kept pixel), started from a push-pull fill, to a relative residual of
``tol`` (1e-6: about 1e-5 from the exact solution, against ROAD's noise of 1e-2). Images are
solved a few at a time, so that the solver's float64 arrays stay in the CPU's cache.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

#: images per conjugate-gradient solve: about ten float64 arrays of this many images stay in
#: the CPU's cache at 224 px (several times faster per iteration than a large batch)
_SOLVE_BATCH = 2


def _neighbours(z: torch.Tensor) -> torch.Tensor:
    """Weighted sum of each pixel's 8 neighbours (1/6 direct, 1/12 diagonal; zero outside the
    image). The stencil is separable but for its centre: ([1, 2, 1] x [1, 2, 1] - 4 delta) / 12,
    so two passes of shifted slices do it (faster than eight, and than a float64 conv2d)."""
    v = 2 * z
    v[..., 1:, :] += z[..., :-1, :]
    v[..., :-1, :] += z[..., 1:, :]
    u = 2 * v
    u[..., :, 1:] += v[..., :, :-1]
    u[..., :, :-1] += v[..., :, 1:]
    return u.sub_(z, alpha=4).div_(12)


def linear_imputation(
    x: torch.Tensor,
    removed: torch.Tensor,
    *,
    tol: float = 1e-6,
    max_iter: int = 5000,
) -> torch.Tensor:
    """ROAD's linear imputation without noise: x [B, C, H, W], removed bool [B, 1, H, W].

    Returns x with each removed pixel replaced so that it equals the weighted mean of its
    neighbours (float64 internally). A removed region with no kept neighbour at all (e.g. every
    pixel removed) has no defined solution and is filled with 0.
    """
    if x.shape[0] > _SOLVE_BATCH:
        parts = [
            _solve(x[i : i + _SOLVE_BATCH], removed[i : i + _SOLVE_BATCH], tol, max_iter)
            for i in range(0, x.shape[0], _SOLVE_BATCH)
        ]
        return torch.cat(parts)
    return _solve(x, removed, tol, max_iter)


def _solve(x: torch.Tensor, removed: torch.Tensor, tol: float, max_iter: int) -> torch.Tensor:
    b, c, h, w = x.shape
    orig_dtype = x.dtype
    x = x.double()
    unknown = removed.expand(b, c, h, w).to(x.dtype)
    known = x * (1 - unknown)
    degree = _neighbours(torch.ones(1, 1, h, w, dtype=x.dtype, device=x.device))

    def laplacian(z: torch.Tensor) -> torch.Tensor:
        # (sum of weighted neighbours) - (sum of weights) * z; zero padding = no neighbour
        return _neighbours(z).sub_(degree * z)

    def op(z: torch.Tensor) -> torch.Tensor:  # SPD on the unknown pixels
        # -U L U z = U (degree z - N(U z)) for z zero off U (as every CG vector is)
        uz = unknown * z
        return (degree * uz).sub_(_neighbours(uz)).mul_(unknown)

    rhs = unknown * laplacian(known)  # moves the known neighbours to the right-hand side
    # start from a push-pull fill (the kept pixels' mean at coarser and coarser scales): it
    # removes the smooth part of the error that plain CG would spend most iterations on
    z = unknown * _push_pull(known, 1 - unknown)
    r = rhs - op(z)
    p = r.clone()
    rs = torch.einsum("bchw,bchw->b", r, r)
    stop = (tol**2) * rs.clamp(min=1e-300)
    for _ in range(max_iter):
        if bool((rs <= stop).all()):
            break
        ap = op(p)
        denom = torch.einsum("bchw,bchw->b", p, ap)
        alpha = torch.where(denom > 0, rs / denom.clamp(min=1e-300), 0.0)[:, None, None, None]
        z.addcmul_(alpha, p)
        r.addcmul_(alpha, ap, value=-1)
        rs_new = torch.einsum("bchw,bchw->b", r, r)
        beta = torch.where(rs > 0, rs_new / rs.clamp(min=1e-300), 0.0)
        p.mul_(beta[:, None, None, None]).add_(r)
        rs = rs_new
    return (known + unknown * z).to(orig_dtype)


def _push_pull(values: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Fill where ``weight`` is 0 with weighted means from coarser levels (2x2 pooling)."""
    if min(values.shape[-2:]) <= 1 or bool((weight > 0).all()):
        return values / weight.clamp(min=1e-12)
    pad_h, pad_w = values.shape[-2] % 2, values.shape[-1] % 2
    v = F.pad(values, (0, pad_w, 0, pad_h))
    w = F.pad(weight, (0, pad_w, 0, pad_h))
    coarse_v = F.avg_pool2d(v, 2) * 4
    coarse_w = F.avg_pool2d(w, 2) * 4
    filled = _push_pull(coarse_v, coarse_w)
    up = F.interpolate(filled, scale_factor=2, mode="nearest")[
        ..., : values.shape[-2], : values.shape[-1]
    ]
    fine = values / weight.clamp(min=1e-12)
    return torch.where(weight > 0, fine, up)


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
