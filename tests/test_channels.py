"""Greyscale input for 3-channel modules: ``channels="repeat"`` and ``channels="fold"``."""

from __future__ import annotations

import pytest
import timm
import torch
import torchvision
from model_guard import assert_untouched, randomize_batchnorm
from torch import nn

import xraylens as xl
from xraylens.core.channels import adapt_channels, find_stem

LABELS = [f"c{i}" for i in range(4)]


def _rgb_model(name: str) -> nn.Module:
    torch.manual_seed(0)
    if name == "resnet18":
        model = torchvision.models.resnet18(weights=None, num_classes=4)
    else:
        model = timm.create_model(name, pretrained=False, num_classes=4)
    randomize_batchnorm(
        model, 0, torch.rand(4, 3, 48, 48, generator=torch.Generator().manual_seed(1))
    )
    return model.eval()


def _grey(n=2, size=48, seed=0, dtype=torch.float32):
    return torch.rand(n, 1, size, size, generator=torch.Generator().manual_seed(seed), dtype=dtype)


@pytest.mark.parametrize("arch", ["resnet18", "efficientnet_b0"])
def test_repeat_and_fold_equal_the_rgb_model_on_a_repeated_grey_image(arch):
    model = _rgb_model(arch).double()  # float32 rounding is amplified by the random nets
    x = _grey(dtype=torch.float64)
    with torch.no_grad():
        ref = model(x.repeat(1, 3, 1, 1))
    with assert_untouched(model):
        rep = xl.Classifier(model, LABELS, channels="repeat")
        fold = xl.Classifier(model, LABELS, channels="fold")
        with torch.no_grad():
            out_rep, out_fold = rep(x), fold(x)
    assert rep.module is not model and fold.module is not model
    torch.testing.assert_close(out_rep, ref, rtol=0, atol=0)
    # fold sums the kernel over the channels: equal up to float rounding
    torch.testing.assert_close(out_fold, ref, rtol=0, atol=1e-9 * float(ref.abs().max()))
    stem = fold.module.get_submodule(find_stem(model))
    assert stem.in_channels == 1
    # layer names are the module's own; parameters outside the stem are shared, not copied
    assert [n for n, _ in rep.module.named_modules()] == [n for n, _ in model.named_modules()]
    shared = {id(p) for p in model.parameters()}
    assert sum(id(p) not in shared for p in fold.module.parameters()) == 1  # the folded kernel


def test_fold_equals_repeat_for_gradients_and_deeplift():
    model = _rgb_model("resnet18").double()
    x = _grey(1, 32, dtype=torch.float64)
    rep = xl.Classifier(model, LABELS, channels="repeat")
    fold = xl.Classifier(model, LABELS, channels="fold")
    for method, params in (("saliency", {"abs": False}), ("deeplift", {"baseline": 0.1})):
        att = xl.get_attributor(method, **params)
        a, b = att.attribute(rep, x, [0, 3]), att.attribute(fold, x, [0, 3])
        assert a.values.shape == (1, 2, 1, 32, 32)
        scale = float(a.values.abs().max())
        assert scale > 0
        torch.testing.assert_close(b.values, a.values, rtol=0, atol=1e-6 * scale)
    # the grey image's gradient is the sum of the RGB gradients of the repeated image
    xr = x.repeat(1, 3, 1, 1).requires_grad_(True)
    model(xr)[:, 3].sum().backward()
    ref = xr.grad.sum(1, keepdim=True)
    sal = xl.get_attributor("saliency", abs=False).attribute(fold, x, [3]).values[:, 0]
    torch.testing.assert_close(sal.double(), ref, rtol=0, atol=1e-6 * float(ref.abs().max()))
    assert float(b.delta.abs().max()) <= 1e-6 * float(b.values.abs().sum(dim=(2, 3, 4)).max())


class _TwoStems(nn.Module):
    def __init__(self, scale_first: bool = False):
        super().__init__()
        self.scale_first = scale_first
        self.a = nn.Conv2d(3, 4, 3)
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        if self.scale_first:
            x = x * 2 - 1
        return self.head(self.a(x).mean(dim=(2, 3)))


def test_fold_refuses_what_it_cannot_do_exactly():
    model = _TwoStems()
    model.b = nn.Conv2d(3, 4, 3)  # a second 3-channel conv: which one is the stem?
    with pytest.raises(xl.InputError, match="cannot tell the stem.*stem="):
        xl.Classifier(model, ["p", "q"], channels="fold")
    assert adapt_channels(model, "fold", stem="a").a.in_channels == 1
    with pytest.raises(xl.InputError, match="does not receive the model's input"):
        xl.Classifier(_TwoStems(scale_first=True), ["p", "q"], channels="fold")
    with pytest.raises(xl.InputError, match="not a submodule"):
        adapt_channels(model, "fold", stem="nope")
    with pytest.raises(xl.InputError, match="channels must be one of"):
        xl.Classifier(model, ["p", "q"], channels="rgb")
    with pytest.raises(xl.InputError, match="in_channels must be 1"):
        xl.Classifier(model, ["p", "q"], channels="repeat", in_channels=3)


def test_repeat_leaves_the_module_without_hooks_and_keeps_its_layer_names():
    model = _rgb_model("resnet18")
    clf = xl.Classifier(model, LABELS, channels="repeat", cam_layer="layer4", nap_layers=["layer3"])
    assert not model._forward_pre_hooks and len(clf.module._forward_pre_hooks) == 1
    res = xl.get_attributor("grad_cam").attribute(clf, _grey(1), [1])
    assert res.values.shape == (1, 1, 1, 48, 48) and res.values.abs().sum() > 0
    with pytest.raises(RuntimeError):  # the original module still wants 3 channels
        model(_grey(1))
