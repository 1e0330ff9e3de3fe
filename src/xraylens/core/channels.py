"""Greyscale X-rays [N, 1, H, W] into modules made for 3-channel (RGB) input.

Two ways, both exact (a convolution is linear in its input channels, so a kernel summed over
the channels sees the grey image exactly as the original kernel sees it repeated):

- ``"repeat"``: the grey channel is repeated before the module runs (a forward pre-hook on a
  shallow copy of the module). Works for any module, whatever its first layer.
- ``"fold"``: the stem convolution's kernel is summed over its input channels, so the module
  takes one channel (a third of the stem's work; gradients flow through one channel). Needs
  the stem: the only ``Conv2d`` taking ``module_channels`` channels, or ``stem=`` by name.

``xl.Classifier(module, labels, channels="repeat")`` (or ``"fold"``) calls
:func:`adapt_channels`; layer names stay those of ``module``. The returned module is a new
object that shares every parameter and submodule with ``module`` except what it changes (the
folded stem); ``module`` itself is not modified. Input normalisation (``input_mean``) is
applied to the grey channel, before the adapter.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from xraylens.core.classifier import eval_mode
from xraylens.errors import InputError

MODES = ("repeat", "fold")

_STATE = ("_parameters", "_buffers", "_modules")


def _shallow(module: nn.Module) -> nn.Module:
    """A new module object with new containers (children, parameters, hooks) holding the same
    children and tensors: changing the copy's structure or hooks leaves ``module`` alone."""
    new = copy.copy(module)
    for key, value in module.__dict__.items():
        if isinstance(value, (dict, list, set)):
            new.__dict__[key] = copy.copy(value)
    return new


def _repeat_hook(channels: int):
    def hook(_module, args):
        x = args[0]
        if isinstance(x, torch.Tensor) and x.dim() == 4 and x.shape[1] == 1:
            return (x.repeat(1, channels, 1, 1), *args[1:])
        return None

    return hook


def find_stem(module: nn.Module, module_channels: int = 3) -> str:
    """Name of the only ``Conv2d`` of ``module`` taking ``module_channels`` input channels."""
    found = [
        name
        for name, m in module.named_modules()
        if isinstance(m, nn.Conv2d) and m.in_channels == module_channels and m.groups == 1
    ]
    if len(found) != 1:
        what = f"{len(found)} ({found[:4]})" if found else "none"
        raise InputError(
            f"fold: cannot tell the stem of {type(module).__name__}: Conv2d layers taking "
            f"{module_channels} channels: {what}; pass stem='name' to "
            "xraylens.core.channels.adapt_channels, or use channels='repeat'"
        )
    return found[0]


def _folded(conv: nn.Conv2d) -> nn.Conv2d:
    new = nn.Conv2d(
        1,
        conv.out_channels,
        conv.kernel_size,
        conv.stride,
        conv.padding,
        conv.dilation,
        1,
        conv.bias is not None,
        conv.padding_mode,
        device=conv.weight.device,
        dtype=conv.weight.dtype,
    )
    with torch.no_grad():
        new.weight.copy_(conv.weight.sum(dim=1, keepdim=True))
        if conv.bias is not None:
            new.bias = conv.bias  # shared: the bias does not depend on the channels
    return new


def _replace(module: nn.Module, path: str, new: nn.Module) -> nn.Module:
    """A shallow copy of ``module`` whose submodule ``path`` is ``new`` (copies along the path)."""
    head, _, rest = path.partition(".")
    root = _shallow(module)
    child = module._modules[head]
    root._modules[head] = new if not rest else _replace(child, rest, new)
    return root


def _check_stem_gets_input(module: nn.Module, stem: str, channels: int, size: int) -> None:
    """The stem must receive the module's input unchanged, else folding would be wrong."""
    seen = {}
    conv = module.get_submodule(stem)
    first = next(iter(module.parameters()), None)
    kw = {} if first is None else {"device": first.device, "dtype": first.dtype}
    x = torch.zeros(1, channels, size, size, **kw)

    def hook(_m, args):
        seen.setdefault("input", args[0])

    handle = conv.register_forward_pre_hook(hook)
    try:
        with torch.no_grad(), eval_mode(module):
            module(x)
    finally:
        handle.remove()
    if seen.get("input") is not x:
        raise InputError(
            f"fold: the stem {stem!r} of {type(module).__name__} does not receive the model's "
            "input as it is (something runs before it), so folding it would change the "
            "results; use channels='repeat'"
        )


def adapt_channels(
    module: nn.Module,
    mode: str,
    *,
    in_channels: int = 1,
    module_channels: int = 3,
    stem: str | None = None,
    check_size: int | None = None,
) -> nn.Module:
    """``module`` (input [N, module_channels, H, W]) adapted to [N, 1, H, W] input.

    Args:
        mode: ``"repeat"`` or ``"fold"`` (see the module docstring).
        in_channels: channels of the input given (only 1 is supported).
        stem: ``"fold"``: name of the stem convolution (default: found by :func:`find_stem`).
        check_size: ``"fold"``: side of a probe image proving that the stem receives the input
            unchanged (one forward pass); None: no probe.
    Returns:
        a new module sharing ``module``'s parameters; ``module`` is unchanged.
    """
    if mode not in MODES:
        raise InputError(f"channels must be one of {MODES} (or None), got {mode!r}")
    if in_channels != 1:
        raise InputError(f"channels={mode!r} adapts greyscale input: in_channels must be 1")
    if not isinstance(module_channels, int) or module_channels < 2:
        raise InputError(f"module_channels must be an int >= 2, got {module_channels!r}")
    if mode == "repeat":
        new = _shallow(module)
        new.register_forward_pre_hook(_repeat_hook(module_channels))
        return new
    stem = find_stem(module, module_channels) if stem is None else stem
    try:
        conv = module.get_submodule(stem)
    except AttributeError:
        raise InputError(f"fold: {stem!r} is not a submodule of {type(module).__name__}") from None
    if not isinstance(conv, nn.Conv2d) or conv.in_channels != module_channels or conv.groups != 1:
        raise InputError(
            f"fold: {stem!r} must be a Conv2d taking {module_channels} channels (groups=1), "
            f"got {conv!r}"
        )
    if check_size is not None:
        _check_stem_gets_input(module, stem, module_channels, check_size)
    return _replace(module, stem, _folded(conv))
