"""Surgery steps: each one alone, composed into pipelines, reversible, on every backbone."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from model_guard import backbone, tiny_input
from torch import nn

import xraylens as xl
from xraylens.attr._rules import RuleHooks
from xraylens.errors import InputError
from xraylens.surgery import (
    PIPELINES,
    RULED_TYPES,
    Step,
    Surgery,
    get_step,
    list_steps,
    register_step,
    snapshot,
)

BACKBONES = xl.list_classifiers()


def _calls_per_module(model: nn.Module, x: torch.Tensor) -> dict[str, int]:
    counts: dict[str, int] = {}
    names = {m: n for n, m in model.named_modules()}

    def count(module, _args):
        counts[names[module]] = counts.get(names[module], 0) + 1

    handles = [
        m.register_forward_pre_hook(count) for m in model.modules() if type(m) in RULED_TYPES
    ]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return counts


def _guided_pass(model: nn.Module, x: torch.Tensor) -> None:
    """DeepLIFT's reference pass: raises InputError for any non-linearity without a rule."""
    with RuleHooks(model, "guided") as rules, torch.no_grad(), rules.main():
        model(x)


def test_registry():
    assert {"unshare", "no_inplace", "split_reused", "functional_to_modules",
            "merge_batchnorm", "fast_input_grad"} <= set(list_steps())  # fmt: skip
    for steps in PIPELINES.values():
        assert set(steps) <= set(list_steps())
    with pytest.raises(InputError, match="unknown surgery step"):
        get_step("nope")
    with pytest.raises(InputError, match="unknown surgery pipeline"):
        Surgery("nope")
    with pytest.raises(InputError, match="already registered"):
        register_step("no_inplace")(type("Other", (Step,), {}))


@pytest.mark.parametrize("name", BACKBONES)
def test_deeplift_pipeline_on_backbone(name):
    clf = backbone(name, torch.float64)
    model = copy.deepcopy(clf.module)
    x = tiny_input(clf, n=2)
    with torch.no_grad():
        before = model(x)
    snap = snapshot(model)
    surgery = Surgery("guided")
    surgery.apply(model)
    # same function
    with torch.no_grad():
        after = model(x)
    torch.testing.assert_close(after, before, rtol=1e-9, atol=1e-9)
    # every non-linearity: a module, called once, not in-place
    assert not [n for n, m in model.named_modules() if getattr(m, "inplace", False)]
    calls = _calls_per_module(model, x)
    assert calls and max(calls.values()) == 1
    _guided_pass(model, x)
    # and back to the original, exactly
    surgery.remove()
    snap.assert_unchanged(model)


@pytest.mark.parametrize(
    "name, missing, message",
    [
        ("resnet18", "split_reused", "more than once"),
        ("resnet18", "no_inplace", "in-place"),
        ("densenet161", "functional_to_modules", "relu"),
        ("inception_v3", "functional_to_modules", "relu"),
    ],
)
def test_each_step_is_needed(name, missing, message):
    clf = backbone(name, torch.float64)
    model = copy.deepcopy(clf.module)
    Surgery([s for s in PIPELINES["guided"] if s != missing]).apply(model)
    with pytest.raises(InputError, match=message):
        _guided_pass(model, tiny_input(clf, n=1))


def test_unshare_and_remove():
    relu = nn.ReLU()
    model = nn.Sequential(nn.Linear(3, 3), relu, nn.Linear(3, 3), relu)
    step = get_step("unshare")
    step.apply(model)
    assert model[1] is relu and model[3] is not relu and isinstance(model[3], nn.ReLU)
    step.remove()
    assert model[3] is relu
    with pytest.raises(InputError, match="already applied"):
        step.apply(model) and step.apply(model)


class _Block(nn.Module):
    """Reused ReLU module, functional and method-call non-linearities, an in-place ReLU whose
    input is read again afterwards."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 3, 3, padding=1)
        self.act = nn.ReLU(inplace=True)
        self.fc = nn.Linear(3 * 4 * 4, 2)

    def forward(self, x):
        y = self.act(self.conv(x))
        y = self.act(y - 0.1)
        z = y - 0.2
        F.relu(z, inplace=True)  # result unused: z itself was modified
        z = F.max_pool2d(z.sigmoid() + z, 2)
        return self.fc(torch.tanh(z).relu().flatten(1))


def test_split_and_functional_steps_on_a_custom_block():
    torch.manual_seed(0)
    model = _Block().double()
    x = torch.randn(3, 1, 8, 8, dtype=torch.float64)
    with torch.no_grad():
        before = model(x)
    snap = snapshot(model)
    surgery = Surgery(["no_inplace", "split_reused", "functional_to_modules"])
    surgery.apply(model)
    kinds = sorted(type(m).__name__ for m in model.children())
    assert kinds.count("ReLU") == 4 and "MaxPool2d" in kinds and "Sigmoid" in kinds
    assert "Tanh" in kinds and type(model) is _Block
    with torch.no_grad():
        torch.testing.assert_close(model(x), before, rtol=0, atol=0)
    assert max(_calls_per_module(model, x).values()) == 1
    _guided_pass(model, x)
    surgery.remove()
    snap.assert_unchanged(model)


class _Untraceable(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        x = x.flatten(1)[:, :4]
        if bool(x.detach().sum() > -1e9):  # data-dependent control flow: fx cannot trace it
            x = F.relu(x)
        return self.fc(x)


def test_untraceable_module_warns_and_guided_backprop_refuses():
    model = _Untraceable().double()
    with pytest.warns(UserWarning, match="cannot trace"):
        Surgery(["functional_to_modules"]).apply(model)
    clf = xl.Classifier(_Untraceable().double(), labels=["a", "b"], min_input_size=2)
    x = torch.rand(1, 1, 2, 2, dtype=torch.float64)
    with pytest.warns(UserWarning, match="cannot trace"), pytest.raises(InputError, match="relu"):
        xl.get_attributor("guided_backprop").attribute(clf, x)
    # DeepLIFT needs no surgery; the detach on the input-dependent path is refused
    with pytest.raises(InputError, match=r"Tensor\.detach inside the model"):
        xl.get_attributor("deeplift").attribute(clf, x)


def test_merge_batchnorm_same_function_fewer_layers():
    clf = backbone("resnet18", torch.float64)
    model = copy.deepcopy(clf.module)
    x = tiny_input(clf)
    with torch.no_grad():
        before = model(x)
    step = get_step("merge_batchnorm")
    step.apply(model)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    with torch.no_grad():
        torch.testing.assert_close(model(x), before, rtol=1e-10, atol=1e-10)
    step.remove()
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == 20


@pytest.mark.parametrize(
    "in_channels, kernel, stride, padding, dilation",
    [(1, 7, 2, 3, 1), (3, 3, 2, 0, 1), (2, (3, 5), 1, (1, 2), 2)],
)
def test_fast_input_grad_equals_autograd(in_channels, kernel, stride, padding, dilation):
    torch.manual_seed(0)
    conv = nn.Conv2d(in_channels, 8, kernel, stride, padding, dilation).double()
    conv.requires_grad_(False)
    x = torch.randn(2, in_channels, 15, 17, dtype=torch.float64, requires_grad=True)
    g = torch.randn_like(conv(x))
    (expected,) = torch.autograd.grad(conv(x), x, g)
    step = get_step("fast_input_grad")
    step.apply(conv)
    assert "forward" in vars(conv)
    (got,) = torch.autograd.grad(conv(x), x, g)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
    step.remove()
    assert "forward" not in vars(conv)
