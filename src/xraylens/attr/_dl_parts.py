"""Pieces of the DeepLIFT rules (:mod:`._dl_mode`): the autograd functions that carry the
multipliers, and how a call's tensor arguments are found, replaced and judged in-place."""

from __future__ import annotations

import inspect
from typing import Any

import torch

from xraylens.surgery import maxpool as mp
from xraylens.surgery.steps import _InputGradConv

T = torch.Tensor


class _Multiply(torch.autograd.Function):
    """Output ``y``; backward ``grad * m`` to ``x`` (an elementwise multiplier)."""

    @staticmethod
    def forward(ctx, x, y, m):
        ctx.save_for_backward(m)
        return y.clone()

    @staticmethod
    def backward(ctx, grad):
        (m,) = ctx.saved_tensors
        return grad * m, None, None


class _Swap(torch.autograd.Function):
    """Output ``y`` (the op's true value); backward: the gradient of the linear surrogate ``s``
    (``Δy = s(x) - s(x0)`` exactly; its gradient is the DeepLIFT multiplier)."""

    @staticmethod
    def forward(ctx, y, s):
        return y.clone()

    @staticmethod
    def backward(ctx, grad):
        return None, grad


class _PoolRule(torch.autograd.Function):
    """Output ``y``; backward folds ``grad`` through the exact window multipliers."""

    @staticmethod
    def forward(ctx, x, y, mult, geom):
        ctx.save_for_backward(mult)
        ctx.geom = geom
        return y.clone()

    @staticmethod
    def backward(ctx, grad):
        (mult,) = ctx.saved_tensors
        return mp.fold_multipliers(grad, mult, ctx.geom), None, None, None


#: custom autograd Functions allowed on the path (ours; surgery's fast input gradient)
ALLOWED_FUNCTIONS: set[type] = {_Multiply, _Swap, _PoolRule, _InputGradConv}


def _name(func) -> str:
    qual = getattr(func, "__qualname__", None) or getattr(func, "__name__", None) or repr(func)
    mod = getattr(func, "__module__", None) or ""
    if qual.startswith("TensorBase.") or qual.startswith("_TensorBase."):
        return "Tensor." + qual.split(".", 1)[1]
    if qual.startswith("_VariableFunctionsClass."):
        return "torch." + qual.split(".", 1)[1]
    return f"{mod}.{qual}" if mod and not mod.startswith("torch._C") else qual


_INPLACE_POS: dict[Any, int | None] = {}


def _inplace(func, args, kwargs) -> bool:
    name = getattr(func, "__name__", "")
    if name.endswith("_") and not name.endswith("__"):
        return True
    if name in ("__iadd__", "__isub__", "__imul__", "__itruediv__", "__ipow__"):
        return True
    if kwargs.get("inplace"):
        return True
    if func not in _INPLACE_POS:
        try:
            params = list(inspect.signature(func).parameters)
            _INPLACE_POS[func] = params.index("inplace") if "inplace" in params else None
        except (TypeError, ValueError):
            _INPLACE_POS[func] = None
    pos = _INPLACE_POS[func]
    return pos is not None and len(args) > pos and bool(args[pos])


def _flat(args, kwargs) -> list[tuple[Any, torch.Tensor]]:
    """(location, tensor) of every tensor argument (top level, in lists/tuples, kwargs)."""
    out = []
    for i, a in enumerate(args):
        if isinstance(a, torch.Tensor):
            out.append(((i, None), a))
        elif isinstance(a, (list, tuple)):
            out.extend(((i, j), t) for j, t in enumerate(a) if isinstance(t, torch.Tensor))
    out.extend((("kw", k), v) for k, v in kwargs.items() if isinstance(v, torch.Tensor))
    return out


def _replace(args, kwargs, new: dict):
    """``args, kwargs`` with the tensors at the locations in ``new`` replaced."""
    args, kwargs = list(args), dict(kwargs)
    for (i, j), t in new.items():
        if i == "kw":
            kwargs[j] = t
        elif j is None:
            args[i] = t
        else:
            seq = list(args[i])
            seq[j] = t
            args[i] = type(args[i])(seq) if isinstance(args[i], tuple) else seq
    return tuple(args), kwargs


def _detach(v):
    return v.detach() if isinstance(v, torch.Tensor) else v


def _denominator(func, args, kwargs) -> bool:
    """Whether the denominator of a division call is a tensor."""
    den = args[0] if func is T.__rtruediv__ else (args[1] if len(args) > 1 else kwargs.get("other"))
    return isinstance(den, torch.Tensor)
