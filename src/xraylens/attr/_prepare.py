"""The model an attributor works on: a deep copy of the caller's, never the caller's.

The copy is moved to the engine's device, put in eval mode, is wrapped with the classifier's
input normalisation (and a sigmoid for ``output="probs"``), and gets a surgery pipeline
(:mod:`xraylens.surgery`). The caller's module is only read.

Copying (:func:`copy_module`): every module object is new (with its own ``__dict__``, hook
dictionaries and other containers), buffers are cloned, and parameters become new
``Parameter`` objects with ``requires_grad=False`` sharing the caller's storage: nothing writes
to them (surgery builds new tensors; tests check the caller's values afterwards), and a
``copy.deepcopy`` costs up to a tenth of a saliency call. Modules with their own
``__deepcopy__`` (e.g. torch.fx ``GraphModule``) are deep-copied.
"""

from __future__ import annotations

import collections
import copy
import types
from collections.abc import Callable, Iterable

import attrs
import torch
from torch import nn

from xraylens.core.attributor import Attributor
from xraylens.core.classifier import Classifier
from xraylens.core.engine import Engine
from xraylens.errors import InputError
from xraylens.surgery import PIPELINES, Surgery


@attrs.define(eq=False)
class Prepared:
    """A prepared copy.

    Attributes:
        model: [0, 1] input [R, C, H, W] -> outputs [R, L] (logits or probabilities).
        inner: the copy of ``clf.module`` inside ``model`` (layer names resolve here).
        device: where it lives.
        surgery: the applied pipeline.
    """

    model: nn.Module
    inner: nn.Module
    device: torch.device
    surgery: Surgery

    def layer(self, name: str) -> nn.Module:
        """The copy's submodule ``name`` (as in ``clf.module.named_modules()``)."""
        try:
            return self.inner.get_submodule(name)
        except AttributeError:
            raise InputError(f"layer {name!r} is not a module of the classifier") from None


def copy_module(module: nn.Module) -> nn.Module:
    """A structural copy of ``module`` (see the module docstring); tied parameters and shared
    submodules stay tied/shared in the copy."""
    return _copy(module, {})


_STATE_DICTS = ("_parameters", "_buffers", "_modules")


def _copy(module: nn.Module, memo: dict[int, object]):
    if id(module) in memo:
        return memo[id(module)]
    if "__deepcopy__" in vars(type(module)) or any(
        "__deepcopy__" in vars(c)
        for c in type(module).__mro__[1:]
        if c is not nn.Module and c is not object
    ):
        new = copy.deepcopy(module, memo)
        memo[id(module)] = new
        return new
    new = type(module).__new__(type(module))
    memo[id(module)] = new
    state = {}
    for key, value in module.__dict__.items():
        if isinstance(value, types.MethodType) and isinstance(value.__self__, nn.Module):
            # e.g. a patched ``forward``: bind it to the copy, as copy.deepcopy does
            value = types.MethodType(value.__func__, _copy(value.__self__, memo))
        elif isinstance(value, (dict, list, set)) and key not in _STATE_DICTS:
            value = _shallow(value)
        state[key] = value
    state["_parameters"] = {k: _param(p, memo) for k, p in module._parameters.items()}
    state["_buffers"] = {k: _buffer(b, memo) for k, b in module._buffers.items()}
    state["_modules"] = {
        k: None if m is None else _copy(m, memo) for k, m in module._modules.items()
    }
    new.__dict__.update(state)
    return new


def _shallow(value):
    """``copy.copy(value)``; hook dictionaries (``OrderedDict``) directly: ``copy.copy`` takes
    ``__reduce_ex__`` for them and recomputes their slot names each time (~0.1 ms, a tenth of a
    second per copy of a 300-module model)."""
    if type(value) is collections.OrderedDict:
        return collections.OrderedDict(value)
    return copy.copy(value)


def _param(p, memo):
    if p is None:
        return None
    if id(p) not in memo:
        memo[id(p)] = nn.Parameter(p.detach(), requires_grad=False)
    return memo[id(p)]


def _buffer(b, memo):
    if b is None:
        return None
    if id(b) not in memo:
        memo[id(b)] = b.detach().clone()
    return memo[id(b)]


def prepare(
    clf: Classifier,
    output: str,
    pipeline: str,
    engine: Engine,
    inspect: Callable[[nn.Module, nn.Module, torch.device], Iterable[str]] | None = None,
) -> Prepared:
    """Copy ``clf.module`` to the engine's device and apply the surgery ``pipeline``.

    ``inspect(model, inner, device)``, when given, sees the copy before surgery and returns
    the pipeline's steps to leave out (Grad-CAM: no ``merge_batchnorm`` when the hooked layer
    is a convolution or batch norm, whose output merging would change).
    """
    device = engine.resolve_device(clf.module)
    inner = copy_module(clf.module)
    inner.to(device)
    inner.eval()
    model = Attributor.output_module(clf, output, inner)
    model.eval()
    skip = set(inspect(model, inner, device)) if inspect is not None else set()
    surgery = Surgery([s for s in PIPELINES[pipeline] if s not in skip] if skip else pipeline)
    surgery.apply(model)
    return Prepared(model, inner, device, surgery)
