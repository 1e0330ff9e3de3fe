"""DeepLIFT is exact on every backbone, and the surgery is what makes it so.

Setup: random weights, randomised BatchNorm (active and inactive ReLUs), float64, a random
baseline image, all 14 labels. Completeness: |Σ attribution - (f(x) - f(x0))| <=
1e-3 * max(1, |f(x) - f(x0)|) (the acceptance bound) on the float32 values; the delta computed
in float64 inside is held to 1e-9 * max(1, |f(x) - f(x0)|).
"""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from model_guard import backbone, tiny_input

import xraylens as xl
from xraylens.surgery import PIPELINES, Surgery

BACKBONES = xl.list_classifiers()


def _case(name: str):
    clf = backbone(name, torch.float64)
    x = tiny_input(clf, n=2, seed=1)
    x0 = tiny_input(clf, n=1, seed=2)
    return clf, x, x0


def _relative_error(total: torch.Tensor, diff: torch.Tensor) -> torch.Tensor:
    return (total - diff).abs() / diff.abs().clamp_min(1)


@pytest.mark.parametrize(
    "name, output",
    [(n, "logits") for n in BACKBONES] + [("resnet18", "probs"), ("inception_v3", "probs")],
)
def test_completeness_on_every_backbone(name, output):
    clf, x, x0 = _case(name)
    res = xl.get_attributor("deeplift", baseline=x0).attribute(clf, x, "all", output=output)
    shape = (2, clf.num_classes, 1, *x.shape[-2:])
    assert res.values.shape == shape and res.values.dtype == torch.float32
    with torch.no_grad():
        f = clf(x) if output == "logits" else clf.predict_proba(x)
        f0 = clf(x0) if output == "logits" else clf.predict_proba(x0)
    diff = f - f0  # [2, L]
    assert diff.abs().max() > 1e-2  # the network is not trivially flat
    err = _relative_error(res.values.double().sum((2, 3, 4)), diff)
    assert err.max() <= 1e-3, f"{name}: completeness error {err.max():.2e}"
    assert (res.delta.abs() / diff.abs().clamp_min(1)).max() <= 1e-9


def _captum_deeplift(module, x, x0, labels):
    from captum.attr import DeepLift

    dl = DeepLift(module)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.stack(
            [dl.attribute(x, x0.expand_as(x), target=t, return_convergence_delta=True)[1]
             for t in labels], 1)  # fmt: skip


@pytest.mark.parametrize("name", BACKBONES)
def test_without_surgery_captum_fails(name):
    """No surgery: Captum refuses the ResNets (one ReLU module called twice) and silently
    breaks completeness on DenseNet and the Inceptions (functional ReLUs, max pools)."""
    clf, x, x0 = _case(name)
    x = x[:1]
    module = clf.forward_module(copy.deepcopy(clf.module))
    if name.removeprefix("xrv_").startswith("resnet"):  # xrv_resnet50: a torchvision ResNet50
        with pytest.raises(RuntimeError, match="more than once"):
            _captum_deeplift(module, x, x0, [0])
        return
    delta = _captum_deeplift(module, x, x0, [0, 1])
    with torch.no_grad():
        diff = (clf(x) - clf(x0))[:, :2]
    assert (delta.abs() / diff.abs().clamp_min(1)).max() > 1e-3


@pytest.mark.parametrize("name", BACKBONES)
def test_surgery_without_the_max_pool_rule_is_not_enough(name):
    """All structural steps, but Captum's max-pool rule: completeness still breaks (every
    backbone has max pooling), so the exact rule is necessary too."""
    clf, x, x0 = _case(name)
    x = x[:1]
    inner = copy.deepcopy(clf.module)
    Surgery(["unshare", "no_inplace", "split_reused", "functional_to_modules"]).apply(inner)
    delta = _captum_deeplift(clf.forward_module(inner), x, x0, [0, 1])
    with torch.no_grad():
        diff = (clf(x) - clf(x0))[:, :2]
    assert (delta.abs() / diff.abs().clamp_min(1)).max() > 1e-3


@pytest.mark.parametrize("name", ["resnet18", "densenet161"])
def test_exact_without_any_surgery(name, monkeypatch):
    """The rules see every function call: functional and in-place ReLUs, functional max
    pooling and a ReLU module called twice need no structural surgery (what Captum needs)."""
    monkeypatch.setitem(PIPELINES, "deeplift", ())
    clf, x, x0 = _case(name)
    res = xl.get_attributor("deeplift", baseline=x0).attribute(clf, x[:1], [0, 1, 2])
    with torch.no_grad():
        diff = (clf(x[:1]) - clf(x0))[:, :3]
    assert (res.delta.abs() / diff.abs().clamp_min(1)).max() <= 1e-9


def test_deeplift_shap_completeness_against_mean_baseline_output():
    clf = backbone("resnet18", torch.float64)
    x = tiny_input(clf, n=2, seed=3)
    dist = tiny_input(clf, n=3, seed=4)
    res = xl.get_attributor("deeplift_shap", baselines=dist).attribute(clf, x, [0, 5])
    with torch.no_grad():
        diff = clf(x)[:, [0, 5]] - clf(dist)[:, [0, 5]].mean(0)
    assert _relative_error(res.values.double().sum((2, 3, 4)), diff).max() <= 1e-3
    assert (res.delta.abs() / diff.abs().clamp_min(1)).max() <= 1e-9
