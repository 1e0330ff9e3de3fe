"""An exact DeepLIFT rule for max pooling (summation-to-delta holds by construction).

Captum's DeepLIFT rule for ``MaxPool2d`` does not satisfy summation-to-delta: with a random
baseline the completeness error can exceed the output difference itself. Here the max over a
window ``v_1 .. v_K`` (row-major order) is written as a fixed chain of linear steps and ReLUs,

    m_1 = v_1,    m_k = m_{k-1} + relu(v_k - m_{k-1}),    max = m_K,

and DeepLIFT's rescale rule is applied to every ReLU of the chain. With ``r_k`` the rescale
multiplier of step k (``Δrelu(a_k) / Δa_k``, in [0, 1]), differences propagate as
``Δm_k = (1 - r_k) Δm_{k-1} + r_k Δv_k``, so

    Δmax = Σ_k c_k Δv_k,    c_1 = Π_{j>1} (1 - r_j),    c_k = r_k Π_{j>k} (1 - r_j)

exactly (telescoping; up to ``eps`` where ``|Δa_k| < eps`` takes the gradient instead). The
``c_k`` are the window multipliers; overlapping windows add up in the backward (``fold``).
Forward values are the real ``max_pool2d`` output; the chain only defines the multipliers.
"""

from __future__ import annotations

import attrs
import torch
import torch.nn.functional as F

from xraylens.errors import InputError


def _pair(v) -> tuple[int, int]:
    return (int(v[0]), int(v[1])) if isinstance(v, (tuple, list)) else (int(v), int(v))


@attrs.frozen
class PoolGeometry:
    """Window layout of a 2-d max pool over an input of size ``size`` (H, W)."""

    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]
    size: tuple[int, int]
    out: tuple[int, int]

    @property
    def padded(self) -> tuple[int, int]:
        """Extent covered by the windows, from the top-left padding corner."""
        return tuple(  # type: ignore[return-value]
            (o - 1) * s + d * (k - 1) + 1
            for o, s, d, k in zip(self.out, self.stride, self.dilation, self.kernel)
        )

    def pad(self, x: torch.Tensor, value: float | torch.Tensor) -> torch.Tensor:
        """``x`` [N, C, H, W] placed in the window extent; padding filled with ``value``."""
        (ph, pw), (eh, ew) = self.padding, self.padded
        out = x.new_empty((*x.shape[:2], eh, ew))
        out.copy_(torch.as_tensor(value, dtype=x.dtype, device=x.device).expand_as(out))
        h, w = min(self.size[0], eh - ph), min(self.size[1], ew - pw)
        out[..., ph : ph + h, pw : pw + w] = x[..., :h, :w]
        return out

    def crop(self, xp: torch.Tensor) -> torch.Tensor:
        """The inverse of :meth:`pad` for gradients: [N, C, eh, ew] -> [N, C, H, W]."""
        (ph, pw), (eh, ew) = self.padding, self.padded
        out = xp.new_zeros((*xp.shape[:2], *self.size))
        h, w = min(self.size[0], eh - ph), min(self.size[1], ew - pw)
        out[..., :h, :w] = xp[..., ph : ph + h, pw : pw + w]
        return out


def pool_geometry(
    size: tuple[int, int],
    out: tuple[int, int],
    kernel_size,
    stride=None,
    padding=0,
    dilation=1,
) -> PoolGeometry:
    """The :class:`PoolGeometry` of ``max_pool2d`` arguments (``out``: its output size)."""
    kernel = _pair(kernel_size)
    stride = (
        kernel
        if stride is None or (isinstance(stride, (list, tuple)) and not stride)
        else (_pair(stride))
    )
    return PoolGeometry(kernel, stride, _pair(padding), _pair(dilation), tuple(size), tuple(out))


def adaptive_geometry(size: tuple[int, int], output_size) -> PoolGeometry:
    """Geometry of ``adaptive_max_pool2d`` when it is a regular pool (sizes divide evenly)."""
    out = _pair([s if o is None else o for o, s in zip(_pair_none(output_size), size)])
    if any(s % o for s, o in zip(size, out)):
        raise InputError(
            f"adaptive max pooling from {tuple(size)} to {out} has uneven windows; the exact "
            "DeepLIFT rule supports output sizes that divide the input size"
        )
    kernel = tuple(s // o for s, o in zip(size, out))
    return pool_geometry(size, out, kernel, kernel)


def _pair_none(v):
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


def window_multipliers(
    x: torch.Tensor, x0: torch.Tensor, geom: PoolGeometry, eps: float = 1e-10
) -> torch.Tensor:
    """Multipliers [N, C, K, L] of each window element (K = kernel area, L = output positions)
    such that ``Σ_k c_k (x_k - x0_k) = max(x) - max(x0)`` in every window.

    Args:
        x, x0: pool input and its reference [N, C, H, W] (same shape).
    """
    if x.shape != x0.shape:
        raise InputError(f"max pool rule: input {tuple(x.shape)} and reference {tuple(x0.shape)}")
    n, c = x.shape[:2]
    # A padding value below every real value never wins a max and has a zero difference.
    low = torch.minimum(x.min(), x0.min()) - 1
    kk = geom.kernel[0] * geom.kernel[1]

    def cols(t: torch.Tensor) -> torch.Tensor:
        u = F.unfold(geom.pad(t, low), geom.kernel, dilation=geom.dilation, stride=geom.stride)
        return u.view(n, c, kk, -1)

    v, v0 = cols(x), cols(x0)
    m, m0 = v[:, :, 0], v0[:, :, 0]
    rescale = []
    for k in range(1, kk):
        a, a0 = v[:, :, k] - m, v0[:, :, k] - m0
        ra, ra0 = a.clamp_min(0), a0.clamp_min(0)
        da = a - a0
        small = da.abs() < eps
        r = torch.where(small, (a > 0).to(x.dtype), (ra - ra0) / torch.where(small, 1.0, da))
        rescale.append(r)
        m, m0 = m + ra, m0 + ra0
    out = torch.empty_like(v)
    keep = torch.ones_like(m)
    for k in range(kk - 1, 0, -1):
        r = rescale[k - 1]
        out[:, :, k] = r * keep
        keep = keep * (1 - r)
    out[:, :, 0] = keep
    return out


def fold_multipliers(
    grad_out: torch.Tensor, mult: torch.Tensor, geom: PoolGeometry
) -> torch.Tensor:
    """Backward of the pool under the rule: grad_out [N, C, Ho, Wo] -> grad_in [N, C, H, W]."""
    n, c, kk, length = mult.shape
    cols = (mult * grad_out.reshape(n, c, 1, length)).reshape(n, c * kk, length)
    folded = F.fold(cols, geom.padded, geom.kernel, dilation=geom.dilation, stride=geom.stride)
    return geom.crop(folded)


def check_window_count(geom: PoolGeometry) -> None:
    """Raise when the window layout does not match the output size (a bug guard)."""
    ho = (geom.padded[0] - geom.dilation[0] * (geom.kernel[0] - 1) - 1) // geom.stride[0] + 1
    wo = (geom.padded[1] - geom.dilation[1] * (geom.kernel[1] - 1) - 1) // geom.stride[1] + 1
    if (ho, wo) != tuple(geom.out):
        raise InputError(f"max pool rule: {ho}x{wo} windows for an output of {geom.out}")


__all__ = [
    "PoolGeometry",
    "adaptive_geometry",
    "check_window_count",
    "fold_multipliers",
    "pool_geometry",
    "window_multipliers",
]
