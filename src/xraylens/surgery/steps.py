"""Surgery steps: small, reversible, composable changes to a model (after Zennit's canonizers).

A :class:`Step` changes a model in place with ``apply(model)`` and undoes exactly that with
``remove()``. A :class:`Surgery` applies several steps in order and removes them in reverse.
Steps are registered by name (:func:`register_step`) and combined into named pipelines
(:data:`PIPELINES`). The attributors always run surgery on a deep copy of the caller's model;
the steps themselves work on whatever model they are given.

Built-in steps (this module, :mod:`~xraylens.surgery.modularize` and
:mod:`~xraylens.surgery.batchnorm`):

- ``unshare``: a module registered at several places gets its own copy at each place.
- ``no_inplace``: every ``inplace=True`` flag is set to False (DeepLIFT needs a layer's input
  after the layer ran).
- ``split_reused``: an activation module called at several places of a forward gets one copy
  per call site (torchvision's BasicBlock calls ``self.relu`` twice).
- ``functional_to_modules``: ``F.relu``, ``torch.sigmoid``, ``F.max_pool2d``, ... called in a
  forward become submodules, so that hooks (DeepLIFT rules, guided backprop) see them.
- ``merge_batchnorm``: eval-mode batch norms folded into the convolution before them.
- ``fast_input_grad``: convolutions with few input channels (the greyscale stem) compute the
  gradient with respect to their input by one matrix product and ``fold``, several times
  faster on CPU than the generic convolution backward for one input channel. Values equal
  the generic backward up to float rounding; no weight gradients (the copy's parameters do
  not require them).
"""

from __future__ import annotations

import copy
import types
from collections.abc import Callable, Iterable
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from xraylens.errors import InputError
from xraylens.surgery import taxonomy

#: Elementwise activation modules and max pooling modules (from the taxonomy).
ACTIVATION_TYPES = taxonomy.ACTIVATION_TYPES
MAXPOOL_TYPES = taxonomy.MAXPOOL_TYPES
#: Non-linearity modules that surgery makes distinct and non-in-place (guided backprop hooks
#: the ReLUs among them).
RULED_TYPES = ACTIVATION_TYPES + MAXPOOL_TYPES


def is_ruled(module: nn.Module) -> bool:
    """Whether ``module`` is an elementwise activation or max pooling (taxonomy)."""
    return type(module) in RULED_TYPES


class Step:
    """One reversible change. Subclasses set ``name`` and implement ``_apply``; every change
    they make is recorded with :meth:`_undo` callbacks so that :meth:`remove` restores it."""

    name: ClassVar[str] = ""

    def __init__(self) -> None:
        self._undo_stack: list[Callable[[], None]] = []
        self.applied = False

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    def apply(self, model: nn.Module) -> nn.Module:
        """Change ``model`` in place; returns it."""
        if self.applied:
            raise InputError(f"surgery step {self.name!r} is already applied; remove() it first")
        self.applied = True
        try:
            self._apply(model)
        except Exception:
            self.remove()
            raise
        return model

    def remove(self) -> None:
        """Undo every change of :meth:`apply`, newest first."""
        while self._undo_stack:
            self._undo_stack.pop()()
        self.applied = False

    def _undo(self, fn: Callable[[], None]) -> None:
        self._undo_stack.append(fn)

    def _apply(self, model: nn.Module) -> None:
        raise NotImplementedError

    # helpers for subclasses -------------------------------------------------------------
    def _set_child(self, parent: nn.Module, name: str, new: nn.Module) -> None:
        old = parent._modules[name]
        parent._modules[name] = new
        self._undo(lambda: parent._modules.__setitem__(name, old))

    def _add_child(self, parent: nn.Module, name: str, new: nn.Module) -> None:
        if name in parent._modules or hasattr(parent, name):
            raise InputError(f"surgery: {type(parent).__name__} already has an attribute {name!r}")
        parent.add_module(name, new)
        self._undo(lambda: parent._modules.pop(name, None))

    def _set_attr(self, obj: object, name: str, value) -> None:
        had = name in obj.__dict__
        old = obj.__dict__.get(name)
        object.__setattr__(obj, name, value)

        def undo():
            if had:
                object.__setattr__(obj, name, old)
            else:
                obj.__dict__.pop(name, None)

        self._undo(undo)


STEPS: dict[str, type[Step]] = {}


def register_step(name: str) -> Callable[[type[Step]], type[Step]]:
    """Class decorator: register a :class:`Step` under ``name``."""

    def deco(cls: type[Step]) -> type[Step]:
        if name in STEPS and STEPS[name] is not cls:
            raise InputError(f"surgery step {name!r} is already registered")
        cls.name = name
        STEPS[name] = cls
        return cls

    return deco


def get_step(name: str) -> Step:
    """A fresh instance of the step registered as ``name``."""
    if name not in STEPS:
        raise InputError(f"unknown surgery step {name!r}; steps: {sorted(STEPS)}")
    return STEPS[name]()


def list_steps() -> list[str]:
    """Sorted names of the registered steps."""
    return sorted(STEPS)


#: Every non-linearity a distinct, non-inplace module, then the speed-ups.
_STRUCTURAL = (
    "unshare",
    "no_inplace",
    "split_reused",
    "functional_to_modules",
    "merge_batchnorm",
    "fast_input_grad",
)

#: Named step sequences used by the attributors.
PIPELINES: dict[str, tuple[str, ...]] = {
    # DeepLIFT / DeepLiftShap: the rules see every function call (attr._dl_mode), so only
    # the speed-ups.
    "deeplift": ("merge_batchnorm", "fast_input_grad"),
    # Guided backprop, deconvolution, guided Grad-CAM: rules hook every ReLU module.
    "guided": _STRUCTURAL,
    # Plain gradients: only the speed-ups.
    "gradient": ("merge_batchnorm", "fast_input_grad"),
}


class Surgery:
    """Several steps applied in order and removed in reverse (a context manager too).

    ``Surgery("deeplift")`` takes a pipeline name, ``Surgery(["no_inplace", ...])`` step names,
    or step instances.
    """

    def __init__(self, steps: str | Iterable[str | Step]):
        if isinstance(steps, str):
            if steps not in PIPELINES:
                raise InputError(
                    f"unknown surgery pipeline {steps!r}; pipelines: {sorted(PIPELINES)}"
                )
            steps = PIPELINES[steps]
        self.steps: list[Step] = [get_step(s) if isinstance(s, str) else s for s in steps]
        self.model: nn.Module | None = None

    def __repr__(self) -> str:
        return f"Surgery({[s.name for s in self.steps]})"

    def apply(self, model: nn.Module) -> nn.Module:
        """Apply every step to ``model`` (in place); returns it."""
        done: list[Step] = []
        try:
            for step in self.steps:
                step.apply(model)
                done.append(step)
        except Exception:
            for step in reversed(done):
                step.remove()
            raise
        self.model = model
        return model

    def remove(self) -> None:
        """Undo every step, last first."""
        for step in reversed(self.steps):
            step.remove()
        self.model = None

    def __enter__(self) -> Surgery:
        return self

    def __exit__(self, *exc) -> None:
        self.remove()


@register_step("unshare")
class UnshareModules(Step):
    """Give a module registered at several places its own deep copy at each later place."""

    def _apply(self, model: nn.Module) -> None:
        seen: set[int] = set()
        # Walk with duplicates: named_modules() would hide the repeated registrations.
        stack = [model]
        while stack:
            parent = stack.pop()
            for name, child in list(parent._modules.items()):
                if child is None:
                    continue
                if id(child) in seen:
                    child = copy.deepcopy(child)
                    self._set_child(parent, name, child)
                seen.add(id(child))
                stack.append(child)


@register_step("no_inplace")
class NoInplace(Step):
    """Set ``inplace=False`` on every module that has the flag set."""

    def _apply(self, model: nn.Module) -> None:
        for m in model.modules():
            if getattr(m, "inplace", False) is True:
                self._set_attr(m, "inplace", False)


class _InputGradConv(torch.autograd.Function):
    """conv2d whose backward computes only the input gradient, by matmul + fold."""

    @staticmethod
    def forward(ctx, x, weight, bias, stride, padding, dilation):
        ctx.save_for_backward(weight)
        ctx.geometry = (tuple(x.shape[-2:]), stride, padding, dilation)
        return F.conv2d(x, weight, bias, stride, padding, dilation)

    @staticmethod
    def backward(ctx, grad):
        (weight,) = ctx.saved_tensors
        size, stride, padding, dilation = ctx.geometry
        n, c_out = grad.shape[:2]
        cols = torch.matmul(weight.reshape(c_out, -1).t(), grad.reshape(n, c_out, -1))
        gx = F.fold(
            cols, size, weight.shape[-2:], dilation=dilation, padding=padding, stride=stride
        )
        return gx, None, None, None, None, None


def _fast_conv_forward(self: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    if not (torch.is_grad_enabled() and x.requires_grad) or self.weight.requires_grad:
        return type(self).forward(self, x)
    return _InputGradConv.apply(x, self.weight, self.bias, self.stride, self.padding, self.dilation)


@register_step("fast_input_grad")
class FastInputGrad(Step):
    """Faster input gradients through convolutions with at most ``max_in_channels`` inputs.

    Applies to ``nn.Conv2d`` with ``groups=1``, zero padding given as numbers, and weights
    that do not require gradients (it computes no weight gradient). On CPU the generic
    backward of a 1-channel 7x7 stride-2 convolution is ~15x slower than its forward; this
    one costs about twice the forward.
    """

    max_in_channels = 3

    def _apply(self, model: nn.Module) -> None:
        for m in model.modules():
            if (
                type(m) is nn.Conv2d
                and m.in_channels <= self.max_in_channels
                and m.groups == 1
                and m.padding_mode == "zeros"
                and not isinstance(m.padding, str)
                and "forward" not in m.__dict__
            ):
                self._set_attr(m, "forward", types.MethodType(_fast_conv_forward, m))
