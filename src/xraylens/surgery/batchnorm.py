"""Surgery step ``merge_batchnorm``: fold eval-mode batch norms into the convolution before
them (Zennit's ``MergeBatchNorm``).

The model computes the same function with one layer less in every forward and backward pass
(~5 % of a ResNet's backward). Pairs are found in ``nn.Sequential`` containers (consecutive
``Conv2d``, ``BatchNorm2d``) and, through the local fx graph of other modules (shared with
:mod:`xraylens.surgery.modularize`), where a convolution's output feeds nothing but a batch
norm. Timm's fused ``BatchNormAct2d`` is left alone (its activation is inside).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from xraylens.surgery.modularize import _cached, _is_custom, _trace
from xraylens.surgery.steps import Step, register_step


def _conv_bn_pairs(module: nn.Module) -> tuple[tuple[str, str], ...]:
    """(conv, bn) child names where the convolution's output feeds only the batch norm."""
    if isinstance(module, nn.Sequential):
        kids = list(module._modules.items())
        return tuple(
            (a, b)
            for (a, ma), (b, mb) in zip(kids, kids[1:])
            if type(ma) is nn.Conv2d and type(mb) is nn.BatchNorm2d
        )
    if not _is_custom(module):
        return ()
    kids = module._modules.values()
    if not (
        any(type(m) is nn.Conv2d for m in kids) and any(type(m) is nn.BatchNorm2d for m in kids)
    ):
        return ()
    return _cached("merge_batchnorm", module, lambda: _traced_pairs(module))


def _traced_pairs(module: nn.Module) -> tuple[tuple[str, str], ...]:
    try:
        graph = _trace(module)
    except Exception:  # not traceable: nothing merged here (only slower, never wrong)
        return ()
    pairs = []
    for node in graph.nodes:
        if node.op != "call_module" or "." in str(node.target):
            continue
        if type(module._modules.get(node.target)) is not nn.Conv2d or len(node.users) != 1:
            continue
        (user,) = node.users
        if (
            user.op == "call_module"
            and "." not in str(user.target)
            and type(module._modules.get(user.target)) is nn.BatchNorm2d
            and len(user.all_input_nodes) == 1
        ):
            pairs.append((node.target, user.target))
    return tuple(pairs)


def _merged_conv(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """A copy of ``conv`` computing ``bn(conv(x))`` (eval-mode statistics)."""
    new = copy.copy(conv)
    new._parameters = dict(conv._parameters)
    with torch.no_grad():
        std = torch.sqrt(bn.running_var + bn.eps)
        gamma = bn.weight if bn.weight is not None else torch.ones_like(std)
        beta = bn.bias if bn.bias is not None else torch.zeros_like(std)
        scale = gamma / std
        bias = conv.bias if conv.bias is not None else torch.zeros_like(std)
        shape = (-1,) + (1,) * (conv.weight.dim() - 1)
        new.weight = nn.Parameter(conv.weight * scale.reshape(shape), requires_grad=False)
        new.bias = nn.Parameter(beta + (bias - bn.running_mean) * scale, requires_grad=False)
    return new


@register_step("merge_batchnorm")
class MergeBatchNorm(Step):
    """Fold eval-mode batch norms into the convolution before them (Zennit's MergeBatchNorm):
    the same function with one layer less in every forward and backward. Only where the
    convolution's output feeds nothing but the batch norm, and only for modules in eval mode
    with running statistics."""

    def _apply(self, model: nn.Module) -> None:
        for module in list(model.modules()):
            for conv_name, bn_name in _conv_bn_pairs(module):
                conv, bn = module._modules[conv_name], module._modules[bn_name]
                if bn.training or conv.training or bn.running_var is None:
                    continue
                self._set_child(module, conv_name, _merged_conv(conv, bn))
                self._set_child(module, bn_name, nn.Identity())
