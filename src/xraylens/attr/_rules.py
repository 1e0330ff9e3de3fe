"""Backward rules attached to a prepared model: guided backprop and deconvolution (hooks on
ReLU modules) and, by the same interface, DeepLIFT (:mod:`._dl_mode`, every function call).

Guided backprop / deconvolution: a forward hook on every ReLU module replaces its output by the
same values from a custom autograd function whose backward applies the rule; the ordinary
backward of the module is bypassed. Rules are label-independent, so one forward serves the
backward of every label.

Safety: a ReLU module called twice in one forward, or left in-place, is an error; during the
forward every functional ReLU (the taxonomy's ReLU functions) that runs outside a ReLU module
(e.g. an ``F.relu`` that surgery could not convert) is an error naming the module.

``RuleHooks(model, "deeplift")`` returns a :class:`._dl_mode.DeepLiftRules` (same use).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from xraylens.errors import InputError
from xraylens.surgery import taxonomy

#: functional ReLUs (from the taxonomy): run outside a ReLU module they would miss the rule
_RELU_FUNCS = set(taxonomy.ACTIVATIONS[0].functions)


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
    """Rules of one kind (``"guided"``, ``"deconv"``; ``"deeplift"``: see the module docstring)
    on a prepared model.

    Use as a context manager; inside it, run ``with rules.main(): model(inputs)``.
    ``audit=False`` skips the check for functional ReLUs (tests that demonstrate what goes wrong
    without surgery).
    """

    def __new__(cls, model: nn.Module, kind: str, **kwargs):
        if kind == "deeplift" and cls is RuleHooks:
            from xraylens.attr._dl_mode import DeepLiftRules

            return DeepLiftRules(model, kind, **kwargs)
        return super().__new__(cls)

    def __init__(self, model: nn.Module, kind: str, *, eps: float = 1e-10, audit: bool = True):
        if kind not in ("guided", "deconv"):
            raise InputError(f"unknown rule kind {kind!r}")
        self.model, self.kind, self.eps, self.audit = model, kind, eps, audit
        self.state = RuleState()
        self.phase: str | None = None
        self.called: set[nn.Module] = set()
        self.depth = 0
        self.stack: list[str] = []
        self.audited = _RELU_FUNCS
        self._handles: list = []
        self._names = {m: n for n, m in model.named_modules()}

    def __enter__(self) -> RuleHooks:
        for m in self.model.modules():
            if type(m) is nn.ReLU:
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

    @contextlib.contextmanager
    def main(self) -> Iterator[None]:
        """The pass whose backward carries the rules (audited for functional ReLUs)."""
        self.phase, self.called, self.depth, self.stack = "main", set(), 0, []
        try:
            with _Audit(self) if self.audit else contextlib.nullcontext():
                yield
        finally:
            self.phase = None

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
        return _ModifiedRelu.apply(args[0], output.detach(), self.state, self.kind == "deconv")
