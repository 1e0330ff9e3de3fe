"""Exact DeepLIFT on any model: every torch function call, ruled by the taxonomy.

A :class:`~torch.overrides.TorchFunctionMode` sees every function and Tensor method the model
calls, in the **reference** pass (the baselines, no gradients) and in the **main** pass (the
inputs; input-dependent tensors are those with ``requires_grad``). Calls are matched by their
order among the ruled calls (function and shapes checked). Per kind
(:mod:`xraylens.surgery.taxonomy`):

- linear / neutral: run as they are (autograd's gradient of an affine map is exact);
- elementwise ``y = f(x)``: rescale rule ``m = Δy / Δx``, the derivative where ``|Δx| < eps``;
- product of two input-dependent tensors (``a * b``, ``matmul``, ``bmm``, ``einsum``):
  ``Δ(a∘b) = Δa∘(b + b0)/2 + (a + a0)/2∘Δb``, exact for any bilinear ``∘``;
- division ``a / b``: ``Δ(1/b) = -Δb / (b b0)`` and the product rule;
- softmax: ``e = exp(x - c)`` (``c`` one shift for both passes, it cancels), ``y = e / Σe``
  with the rules above; log-softmax likewise;
- layer / group / RMS norm, ``scaled_dot_product_attention`` and
  ``multi_head_attention_forward``: decomposed into ruled primitives (:mod:`._dl_decompose`);
- max pooling: the exact window rule of :mod:`xraylens.surgery.maxpool`.

Each rule satisfies ``Δy = Σ m_k Δx_k`` exactly, so the chain rule over them is exact
(summation-to-delta) by induction. Anything else that touches an input-dependent tensor
(``torch.sort``, comparisons, a custom ``autograd.Function``) raises :class:`InputError`
naming the op and the module path, during the first forward, before any backward.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import BackwardCFunction
from torch.overrides import TorchFunctionMode

from xraylens.attr import _dl_decompose as dec
from xraylens.attr._dl_parts import (
    ALLOWED_FUNCTIONS,
    _denominator,
    _detach,
    _flat,
    _inplace,
    _Multiply,
    _name,
    _PoolRule,
    _replace,
    _Swap,
)
from xraylens.errors import InputError
from xraylens.surgery import maxpool as mp
from xraylens.surgery import taxonomy as tx

T = torch.Tensor
_RECORDED = (tx.ELEMENTWISE, tx.PRODUCT, tx.DIVISION, tx.SOFTMAX, tx.POOLING)
_OUT_OF_PLACE = {T.mul_: torch.mul, T.__imul__: torch.mul, T.div_: torch.div,
                 T.__itruediv__: torch.div}  # fmt: skip
_DROPOUTS = {F.dropout, F.dropout1d, F.dropout2d, F.dropout3d, F.alpha_dropout,
             F.feature_alpha_dropout, torch.dropout}  # fmt: skip
_LOG_SOFTMAX = (torch.nn.functional.log_softmax, torch.log_softmax, T.log_softmax)


class _Mode(TorchFunctionMode):
    def __init__(self, rules: DeepLiftRules):
        super().__init__()
        self.rules = rules

    def __torch_function__(self, func, types, args=(), kwargs=None):
        return self.rules.call(func, args, kwargs or {})


class DeepLiftRules:
    """DeepLIFT's rules on a prepared model (same interface as :class:`._rules.RuleHooks`):
    ``with rules: (with rules.reference(): model(refs)); (with rules.main(): model(x))``."""

    kind = "deeplift"

    def __init__(self, model: nn.Module, kind: str = "deeplift", *, eps: float = 1e-10,
                 audit: bool = True):  # fmt: skip
        self.model, self.eps = model, eps
        self.phase: str | None = None
        self.records: list[tuple[Any, tuple[torch.Tensor, ...]]] = []
        self.pos = 0
        self.stack: list[str] = []
        self._handles: list = []
        prefix, m = "", model
        while type(m).__name__ in ("SigmoidOutput", "NormalizedModel"):
            prefix, m = prefix + "model.", m.model
        self._names = {mod: n[len(prefix) :] if n.startswith(prefix) else ""
                       for n, mod in model.named_modules()}  # fmt: skip

    # context managers ------------------------------------------------------------------
    def __enter__(self) -> DeepLiftRules:
        for m in self.model.modules():
            self._handles.append(m.register_forward_pre_hook(self._enter))
            self._handles.append(m.register_forward_hook(self._leave, always_call=True))
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()
        self.records = []

    @contextlib.contextmanager
    def _phase(self, phase: str) -> Iterator[None]:
        self.phase, self.pos, self.stack = phase, 0, []
        try:
            with _Mode(self):
                yield
            if phase == "main" and self.pos != len(self.records):
                raise InputError(
                    f"deeplift: the main pass made {self.pos} ruled calls, the reference pass "
                    f"{len(self.records)}: the forward depends on the input's values"
                )
        finally:
            self.phase = None
            if phase == "main":
                self.records = []

    def reference(self) -> contextlib.AbstractContextManager:
        """The reference pass: records the baselines' inputs of every ruled call."""
        self.records = []
        return self._phase("reference")

    def main(self) -> contextlib.AbstractContextManager:
        """The main pass: every ruled call on an input-dependent tensor gets its rule."""
        return self._phase("main")

    # module path -------------------------------------------------------------------------
    def _enter(self, module, args) -> None:
        if self.phase is not None:
            self.stack.append(self._names.get(module, type(module).__name__))

    def _leave(self, module, args, output) -> None:
        if self.phase is None:
            return
        if self.phase == "main" and isinstance(output, torch.Tensor):
            self._check_function(output)
        if self.stack:
            self.stack.pop()

    def where(self) -> str:
        path = self.stack[-1] if self.stack else ""
        if not path:
            return "the model"
        mod = self.model.get_submodule(self._full(path))
        return f"module {path!r} ({type(mod).__name__})"

    def _full(self, path: str) -> str:
        for m, n in self._names.items():
            if n == path:
                for full, mm in self.model.named_modules():
                    if mm is m:
                        return full
        return path

    def refuse(self, what: str) -> InputError:
        return InputError(
            f"deeplift: {what} inside {self.where()} on an input-dependent tensor has no exact "
            "DeepLIFT rule, so the attribution would be wrong; refused (see docs/methods.md, "
            "'DeepLIFT: what is exact')"
        )

    def _check_function(self, t: torch.Tensor) -> None:
        fn = t.grad_fn
        if isinstance(fn, BackwardCFunction) and fn._forward_cls not in ALLOWED_FUNCTIONS:
            raise self.refuse(f"the custom autograd.Function {fn._forward_cls.__qualname__}")

    # dispatch ----------------------------------------------------------------------------
    def dependent(self, t) -> bool:
        return (
            self.phase == "main"
            and isinstance(t, torch.Tensor)
            and t.requires_grad
            and torch.is_grad_enabled()
        )

    def call(self, func, args, kwargs):
        """Run one function call of the model with its rule (the mode is off in here)."""
        kind = tx.function_kind(func)
        if kind == tx.NEUTRAL or self.phase is None:
            return func(*args, **kwargs)
        flat = _flat(args, kwargs)
        dep = [k for k, (_, t) in enumerate(flat) if self.dependent(t)]
        for k in dep:
            self._check_function(flat[k][1])
        if kind == tx.LINEAR:
            if dep and func in _DROPOUTS and _training_dropout(args, kwargs):
                raise self.refuse(f"{_name(func)} in training mode (random)")
            return func(*args, **kwargs)
        if kind == tx.MULTILINEAR:
            if len(dep) > 1:
                raise self.refuse(f"{_name(func)} with several input-dependent tensors")
            return func(*args, **kwargs)
        if kind in (tx.NORMALISATION, tx.ATTENTION):
            return dec.decompose(self, func, args, kwargs)
        if kind in _RECORDED:
            return self._recorded(kind, func, args, kwargs, flat, dep)
        if dep:
            raise self.refuse(_name(func))
        return func(*args, **kwargs)

    def _recorded(self, kind, func, args, kwargs, flat, dep):
        if (
            kind == tx.PRODUCT
            and len(flat) < 2
            or kind == tx.DIVISION
            and not _denominator(func, args, kwargs)
        ):
            return func(*args, **kwargs)  # times / over a constant number: linear
        if not flat:
            return func(*args, **kwargs)
        if self.phase == "reference":
            with torch.no_grad():
                self.records.append((func, tuple(t.detach().clone() for _, t in flat)))
            return func(*args, **kwargs)
        if self.pos >= len(self.records):
            raise InputError(
                f"deeplift: {_name(func)} inside {self.where()} has no matching call in the "
                "reference pass (the forward depends on the input's values)"
            )
        rfunc, refs = self.records[self.pos]
        self.pos += 1
        if rfunc is not func or [r.shape for r in refs] != [t.shape for _, t in flat]:
            raise InputError(
                f"deeplift: the main pass called {_name(func)} inside {self.where()} where the "
                f"reference pass called {_name(rfunc)} (or other shapes): the forward depends "
                "on the input's values"
            )
        if not dep:
            return func(*args, **kwargs)
        if kind == tx.ELEMENTWISE:
            if dep != [0] or flat[0][0] != (0, None):
                raise self.refuse(f"{_name(func)} with an input-dependent parameter")
            return self._unary(func, args, kwargs, refs[0])
        if kind == tx.PRODUCT:
            return self._product(func, args, kwargs, flat, refs, dep)
        if kind == tx.DIVISION:
            return self._division(func, args, kwargs, flat, refs)
        if kind == tx.SOFTMAX:
            return self._softmax(func, args, kwargs, refs[0])
        return self._pool(func, args, kwargs, refs[0])

    # rules -------------------------------------------------------------------------------
    def _unary(self, func, args, kwargs, x0):
        x, rest = args[0], args[1:]
        inplace = _inplace(func, args, kwargs)
        with torch.no_grad():
            xd = x.detach()
            y = func(xd.clone() if inplace else xd, *rest, **kwargs)
            y0 = func(x0.clone() if inplace else x0, *rest, **kwargs)
            dx = xd - x0
            small = dx.abs() < self.eps
            m = (y - y0) / torch.where(small, torch.ones_like(dx), dx)
        if bool(small.any()):
            with torch.enable_grad():
                xx = xd.detach().requires_grad_(True)
                yy = func(xx.clone() if inplace else xx, *rest, **kwargs)
                g = torch.autograd.grad(yy.sum(), xx)[0]
            m = torch.where(small, g, m)
        out = _Multiply.apply(x, y, m)
        if inplace:
            x.copy_(out)
            return x
        return out

    def _product(self, func, args, kwargs, flat, refs, dep):
        if len(dep) == 1:
            return func(*args, **kwargs)  # one factor depends on the input: linear
        if len(dep) > 2:
            raise self.refuse(f"{_name(func)} of more than two input-dependent tensors")
        i, j = dep
        (la, a), (lb, b) = flat[i], flat[j]
        with torch.no_grad():
            am = (a.detach() + refs[i]) / 2
            bm = (b.detach() + refs[j]) / 2
        f = _OUT_OF_PLACE.get(func, func)
        with torch.no_grad():
            y = f(*_replace(args, kwargs, {la: a.detach(), lb: b.detach()})[0],
                  **_replace(args, kwargs, {la: a.detach(), lb: b.detach()})[1])  # fmt: skip
        a1, k1 = _replace(args, kwargs, {lb: bm})
        a2, k2 = _replace(args, kwargs, {la: am})
        s = f(*a1, **k1) + f(*a2, **k2)
        return self._finish(func, args, kwargs, y, s)

    def _finish(self, func, args, kwargs, y, s):
        out = _Swap.apply(y, s)
        if func in _OUT_OF_PLACE:  # ``a *= b``: the result lives in ``a``
            args[0].copy_(out)
            return args[0]
        return out

    def _division(self, func, args, kwargs, flat, refs):
        if kwargs.get("rounding_mode") is not None:
            raise self.refuse(f"{_name(func)} with rounding_mode")
        num, den = (args[1], args[0]) if func is T.__rtruediv__ else (args[0], args[1])
        ref = {id(t): r for (_, t), r in zip(flat, refs, strict=True)}
        if not self.dependent(den):
            return func(*args, **kwargs)
        with torch.no_grad():
            y = _OUT_OF_PLACE.get(func, torch.div)(_detach(num), den.detach())
            r, r0 = 1 / den.detach(), 1 / ref[id(den)]
            mr = -(r * r0)  # (1/d - 1/d0) / (d - d0), exactly
        if self.dependent(num):
            with torch.no_grad():
                rm, nm = (r + r0) / 2, (num.detach() + ref[id(num)]) / 2
            s = num * rm + nm * (mr * den)
        else:
            s = _detach(num) * (mr * den)
        return self._finish(func, args, kwargs, y, s)

    def _softmax(self, func, args, kwargs, x0):
        x = args[0]
        dim = kwargs.get("dim", args[1] if len(args) > 1 else None)
        if dim is None:
            raise self.refuse(f"{_name(func)} without dim")
        dtype = kwargs.get("dtype")
        xc = x if dtype is None else x.to(dtype)
        x0 = x0 if dtype is None else x0.to(dtype)
        with torch.no_grad():
            y = func(*_replace(args, kwargs, {(0, None): x.detach()})[0], **kwargs)
            xd = xc.detach()
            c = torch.maximum(xd.amax(dim, keepdim=True), x0.amax(dim, keepdim=True))
            c = torch.where(torch.isfinite(c), c, torch.zeros_like(c))
            e, e0 = torch.exp(xd - c), torch.exp(x0 - c)
            dx = xd - x0
            small = dx.abs() < self.eps
            me = (e - e0) / torch.where(small, torch.ones_like(dx), dx)
            me = torch.where(small, e, me)
            me = torch.where(torch.isfinite(dx) | small, me, torch.zeros_like(me))  # masked
            ssum, ssum0 = e.sum(dim, keepdim=True), e0.sum(dim, keepdim=True)
        le = me * xc  # linear in x: its change is Δe
        total = le.sum(dim, keepdim=True)
        if func in _LOG_SOFTMAX:
            with torch.no_grad():
                ds = ssum - ssum0
                near = ds.abs() <= self.eps * ssum
                ml = (ssum.log() - ssum0.log()) / torch.where(near, torch.ones_like(ds), ds)
                ml = torch.where(near, 1 / ssum, ml)
            s = xc - ml * total
        else:
            with torch.no_grad():
                r, r0 = 1 / ssum, 1 / ssum0
                rm, em, mr = (r + r0) / 2, (e + e0) / 2, -(r * r0)
            s = rm * le + em * (mr * total)
        return _Swap.apply(y, s)

    def _pool(self, func, args, kwargs, x0):
        x = args[0]
        adaptive = func is torch.nn.functional.adaptive_max_pool2d
        names = (("input", "output_size", "return_indices") if adaptive else
                 ("input", "kernel_size", "stride", "padding", "dilation", "ceil_mode",
                  "return_indices"))  # fmt: skip
        bound = dict(zip(names, args, strict=False)) | kwargs
        if bound.get("return_indices") or x.dim() != 4:
            raise self.refuse(f"{_name(func)} with return_indices or a non-4-d input")
        with torch.no_grad():
            y = func(x.detach(), *args[1:], **kwargs)
            size = tuple(x.shape[-2:])
            if adaptive:
                geom = mp.adaptive_geometry(size, bound["output_size"])
            else:
                geom = mp.pool_geometry(
                    size, tuple(y.shape[-2:]), bound["kernel_size"], bound.get("stride"),
                    bound.get("padding", 0), bound.get("dilation", 1),
                )  # fmt: skip
            mp.check_window_count(geom)
            mult = mp.window_multipliers(x.detach(), x0, geom, self.eps)
        return _PoolRule.apply(x, y, mult, geom)


def _training_dropout(args, kwargs) -> bool:
    """Whether a dropout call (input, p, training) drops anything."""
    bound = dict(zip(("input", "p", "training"), args, strict=False)) | kwargs
    training = bound.get("training", bound.get("train", True))
    return bool(training) and float(bound.get("p", 0.5)) > 0
