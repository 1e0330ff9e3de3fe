"""The model guard: a snapshot notices every kind of change and nothing else."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from xraylens.surgery import snapshot


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.ReLU(inplace=True),
                         nn.Flatten(), nn.Linear(8, 2))  # fmt: skip


def _bump_weight(m):
    with torch.no_grad():
        m[0].weight[0, 0, 0, 0] += 1e-7


def _bump_buffer(m):
    m[1].running_mean[0] += 1


def _replace_module(m):
    m[2] = nn.ReLU(inplace=True)


def _inplace(m):
    m[2].inplace = False


def _train(m):
    m[1].train()


def _hook(m):
    m[4].register_forward_hook(lambda *a: None)


def _attribute(m):
    m[2].input = torch.zeros(1)


def _forward(m):
    m[0].forward = lambda x: x


def _grad(m):
    m[4].weight.grad = torch.zeros_like(m[4].weight)


def _requires_grad(m):
    m[0].bias.requires_grad_(False)


def _dtype(m):
    m[4].double()


def _global_hook(m):
    return nn.modules.module.register_module_forward_hook(lambda *a: None)


CHANGES = [_bump_weight, _bump_buffer, _replace_module, _inplace, _train, _hook, _attribute,
           _forward, _grad, _requires_grad, _dtype, _global_hook]  # fmt: skip


@pytest.mark.parametrize("change", CHANGES, ids=[c.__name__.strip("_") for c in CHANGES])
def test_snapshot_notices(change):
    model = _model().eval()
    snap = snapshot(model)
    handle = change(model)
    try:
        assert snap.diff(model)
        with pytest.raises(AssertionError, match="model changed"):
            snap.assert_unchanged(model)
    finally:
        if handle is not None:
            handle.remove()


def test_snapshot_quiet_when_nothing_changed():
    model = _model().train()
    snap = snapshot(model)
    copy.deepcopy(model)(torch.rand(2, 1, 4, 4))  # a copy may do anything
    with torch.no_grad():
        model.eval()(torch.rand(2, 1, 4, 4))
    model.train()
    assert snap.diff(model) == []
