"""Backward rules attached to a prepared model with hooks: DeepLIFT, guided backprop, deconv.

A forward hook on every non-linearity module replaces its output by the same values from a
custom autograd function whose backward applies the rule; the ordinary backward of the module
is bypassed. Rules are label-independent, so one forward serves the backward of every label.

DeepLIFT runs two passes per chunk: a **reference** pass (no gradients) records each
non-linearity's input for the baselines, then the **main** pass computes each multiplier once:

- elementwise activations (rescale rule, as Captum): ``m = Δy / Δx``, or the ordinary
  derivative where ``|Δx| < eps``;
- max pooling: the exact window multipliers of :mod:`xraylens.surgery.maxpool`.

Only the input rows carry gradients (Captum backpropagates through input and baseline rows).

Safety (what makes DeepLIFT exact or refuse): a rule module called twice in one forward, or
left in-place, is an error; during the reference pass every functional non-linearity that runs
outside a ruled module (e.g. an ``F.relu`` that surgery could not convert) is an error naming
the module. Guided backprop and deconvolution check ReLUs the same way in their forward.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from xraylens.errors import InputError
from xraylens.surgery import ACTIVATION_TYPES, MAXPOOL_TYPES
from xraylens.surgery import maxpool as mp

_RELU_FUNCS = {F.relu, torch.relu, F.relu_, torch.relu_, torch.Tensor.relu, torch.Tensor.relu_}
_NONLINEAR_FUNCS = _RELU_FUNCS | {
    F.relu6,
    F.elu,
    F.selu,
    torch.selu,
    F.celu,
    F.gelu,
    F.silu,
    F.mish,
    F.softplus,
    F.leaky_relu,
    F.hardtanh,
    F.hardswish,
    F.hardsigmoid,
    torch.sigmoid,
    F.sigmoid,
    torch.Tensor.sigmoid,
    torch.Tensor.sigmoid_,
    torch.tanh,
    F.tanh,
    torch.Tensor.tanh,
    F.max_pool1d,
    F.max_pool2d,
    F.max_pool3d,
    torch.max_pool1d,
    torch.max_pool2d,
    torch.max_pool3d,
    F.adaptive_max_pool1d,
    F.adaptive_max_pool2d,
    F.adaptive_max_pool3d,
    F.softmax,
    F.log_softmax,
    torch.softmax,
    torch.Tensor.softmax,
}


class _Multiply(torch.autograd.Function):
    """Output ``y``; backward ``grad * m`` to ``x`` (DeepLIFT's multiplier)."""

    @staticmethod
    def forward(ctx, x, y, m):
        ctx.save_for_backward(m)
        return y.clone()

    @staticmethod
    def backward(ctx, grad):
        (m,) = ctx.saved_tensors
        return grad * m, None, None


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


class _ModifiedRelu(torch.autograd.Function):
    """Output ``y = relu(x)``; backward: guided backprop ``relu(g) * [x > 0]`` or deconvolution
    ``relu(g)`` while ``state.active``, the ordinary ``g * [x > 0]`` otherwise."""

    @staticmethod
    def forward(ctx, x, y, state, deconv):
        ctx.save_for_backward(y > 0)
        ctx.state, ctx.deconv = state, deconv
        return y.clone()

    @staticmethod
    def backward(ctx, grad):
        (mask,) = ctx.saved_tensors
        if not ctx.state.active:
            return grad * mask, None, None, None
        if ctx.deconv:
            return grad.clamp_min(0), None, None, None
        return grad.clamp_min(0) * mask, None, None, None


def _local_derivative(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """d module(x) / dx elementwise (the module's own forward, without hooks)."""
    if type(module) is nn.ReLU:
        return (x > 0).to(x.dtype)
    with torch.enable_grad():
        xx = x.detach().requires_grad_(True)
        yy = type(module).forward(module, xx)
        return torch.autograd.grad(yy.sum(), xx)[0]


def _pool_geometry(module: nn.Module, x: torch.Tensor, y: torch.Tensor) -> mp.PoolGeometry:
    size, out = tuple(x.shape[-2:]), tuple(y.shape[-2:])
    if x.dim() != 4:
        raise InputError(f"max pool rule: expected a 4-d input, got {tuple(x.shape)}")
    if isinstance(module, nn.AdaptiveMaxPool2d):
        geom = mp.adaptive_geometry(size, module.output_size)
    else:
        if module.return_indices:
            raise InputError("max pool rule: return_indices=True is not supported")
        geom = mp.pool_geometry(
            size, out, module.kernel_size, module.stride, module.padding, module.dilation
        )
    mp.check_window_count(geom)
    return geom


class RuleState:
    """Switch of the modified backward (guided Grad-CAM needs both backwards of one forward)."""

    def __init__(self) -> None:
        self.active = True


class _Audit(TorchFunctionMode):
    """Errors on a functional non-linearity that runs outside every ruled module."""

    def __init__(self, rules: RuleHooks):
        super().__init__()
        self.rules = rules

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in self.rules.audited and self.rules.depth == 0:
            owner = self.rules.stack[-1] if self.rules.stack else "the model"
            name = getattr(func, "__qualname__", None) or getattr(func, "__name__", repr(func))
            raise InputError(
                f"{self.rules.kind}: {name} runs inside {owner!r} as a function, so its rule "
                "would be missing and the result wrong; surgery could not turn it into a "
                "module (see xraylens.surgery)"
            )
        return func(*args, **(kwargs or {}))


class RuleHooks:
    """Rules of one kind (``"deeplift"``, ``"guided"``, ``"deconv"``) on a prepared model.

    Use as a context manager; inside it, run ``with rules.reference(): model(refs)`` (DeepLIFT
    only) and ``with rules.main(): model(inputs)``. ``audit=False`` skips the check for
    functional non-linearities (tests that demonstrate what goes wrong without surgery).
    """

    def __init__(self, model: nn.Module, kind: str, *, eps: float = 1e-10, audit: bool = True):
        if kind not in ("deeplift", "guided", "deconv"):
            raise InputError(f"unknown rule kind {kind!r}")
        self.model, self.kind, self.eps, self.audit = model, kind, eps, audit
        self.state = RuleState()
        self.phase: str | None = None
        self.records: dict[nn.Module, torch.Tensor] = {}
        self.called: set[nn.Module] = set()
        self.depth = 0
        self.stack: list[str] = []
        self.audited = _NONLINEAR_FUNCS if kind == "deeplift" else _RELU_FUNCS
        self._handles: list = []
        self._names = {m: n for n, m in model.named_modules()}

    def _ruled(self, m: nn.Module) -> bool:
        if self.kind == "deeplift":
            return type(m) in ACTIVATION_TYPES + MAXPOOL_TYPES
        return type(m) is nn.ReLU

    def __enter__(self) -> RuleHooks:
        for m in self.model.modules():
            if self._ruled(m):
                self._handles.append(m.register_forward_pre_hook(self._pre))
                self._handles.append(m.register_forward_hook(self._post))
            elif self.audit:
                self._handles.append(m.register_forward_pre_hook(self._enter))
                self._handles.append(m.register_forward_hook(self._leave))
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()
        self.records.clear()

    @contextlib.contextmanager
    def _phase(self, phase: str, audit: bool) -> Iterator[None]:
        self.phase, self.called, self.depth, self.stack = phase, set(), 0, []
        try:
            with _Audit(self) if (audit and self.audit) else contextlib.nullcontext():
                yield
        finally:
            self.phase = None

    def reference(self) -> contextlib.AbstractContextManager:
        """DeepLIFT's reference pass: record the baselines' inputs of every non-linearity."""
        self.records.clear()
        return self._phase("reference", audit=True)

    def main(self) -> contextlib.AbstractContextManager:
        """The pass whose backward carries the rules (guided/deconv audit it too)."""
        return self._phase("main", audit=self.kind != "deeplift")

    # hooks ---------------------------------------------------------------------------
    def _enter(self, module, args) -> None:
        self.stack.append(self._names.get(module, type(module).__name__))

    def _leave(self, module, args, output) -> None:
        if self.stack:
            self.stack.pop()

    def _pre(self, module, args) -> None:
        if self.phase is None:
            return
        name = self._names.get(module, type(module).__name__)
        if module in self.called:
            raise InputError(
                f"{self.kind}: module {name!r} runs more than once in one forward pass; its rule "
                "needs one module per call site (surgery step 'split_reused')"
            )
        if getattr(module, "inplace", False):
            raise InputError(f"{self.kind}: module {name!r} is in-place (surgery 'no_inplace')")
        self.called.add(module)
        self.depth += 1

    def _post(self, module, args, output):
        if self.phase is None:
            return None
        self.depth -= 1
        x = args[0]
        if self.kind != "deeplift":
            return _ModifiedRelu.apply(x, output.detach(), self.state, self.kind == "deconv")
        if self.phase == "reference":
            self.records[module] = x.detach()
            return None
        x0 = self.records.pop(module, None)
        if x0 is None or x0.shape != x.shape:
            raise InputError(
                f"deeplift: module {self._names.get(module)!r} saw no matching reference input"
            )
        with torch.no_grad():
            xd = x.detach()
            if type(module) in MAXPOOL_TYPES:
                geom = _pool_geometry(module, xd, output)
                mult = mp.window_multipliers(xd, x0, geom, self.eps)
            else:
                dx = xd - x0
                dy = output.detach() - type(module).forward(module, x0)
                small = dx.abs() < self.eps
                mult = dy / torch.where(small, torch.ones_like(dx), dx)
                if bool(small.any()):
                    mult = torch.where(small, _local_derivative(module, xd), mult)
        if type(module) in MAXPOOL_TYPES:
            return _PoolRule.apply(x, output.detach(), mult, geom)
        return _Multiply.apply(x, output.detach(), mult)
