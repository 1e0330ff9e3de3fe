"""LIME, KernelSHAP and feature ablation: equal to Captum per label given the same feature mask
and the same samples, every label from one set of forwards."""

from __future__ import annotations

import pytest
import torch
from captum._utils.models.linear_model import SkLearnLinearModel, SkLearnLinearRegression
from captum.attr import FeatureAblation as CaptumFeatureAblation
from captum.attr import KernelShap as CaptumKernelShap
from captum.attr import Lime as CaptumLime
from captum.attr._core.lime import get_exp_kernel_similarity_function
from model_guard import assert_untouched
from torch import nn

import xraylens as xl
from xraylens.attr import features
from xraylens.errors import InputError

LABELS = ("a", "b", "c", "d", "e")
TOL = {"rtol": 1e-4, "atol": 1e-5}


def net(in_channels: int = 1) -> nn.Module:
    torch.manual_seed(1)
    model = nn.Sequential(
        nn.Conv2d(in_channels, 8, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(3),
        nn.Flatten(),
        nn.Linear(72, len(LABELS)),
    )
    with torch.no_grad():  # logits that vary enough for the lasso to keep features
        model[-1].weight.mul_(20)
    return model


def clf_of(module: nn.Module, in_channels: int = 1) -> xl.Classifier:
    return xl.Classifier(module, LABELS, in_channels=in_channels, min_input_size=4)


def given(z: torch.Tensor):
    """A Captum perturb_func (a generator in the interpretable space) yielding ``z``'s rows."""

    def perturb(_inputs, **_kw):
        for row in z:
            yield row[None].long()

    return perturb


def captum_maps(cls, module, x, mask, z, target, **kw):
    """Captum's map [C, H, W] for one image and one label with the samples ``z``."""
    method = cls(module, **kw)
    method.perturb_func = given(z)
    return method.attribute(
        x, target=target, feature_mask=mask[None, None], n_samples=len(z), baselines=0.0
    )[0]


def grid_mask(n: int, size: int = 12) -> torch.Tensor:
    return features.segment(torch.zeros(1, 1, size, size), features="grid", n_features=n)[0]


@pytest.mark.parametrize("n_features", [9, 16])
def test_lime_matches_captum_every_label(n_features):
    module, x = net(), torch.rand(2, 1, 12, 12)
    clf, mask = clf_of(module), grid_mask(n_features)
    att = xl.get_attributor("lime", features=mask, n_samples=60)
    z = att.samples_for([n_features])[0]  # the seeded draw, given to Captum too
    with assert_untouched(module):
        res = att.attribute(clf, x)
    assert res.values.shape == (2, 5, 1, 12, 12)
    for i in range(2):
        for t in range(5):
            expected = captum_maps(CaptumLime, module, x[i : i + 1], mask, z, t)
            torch.testing.assert_close(res.values[i, t], expected, **TOL)
    assert (res.values != 0).sum() > 0.5 * res.values.numel()  # the lasso kept features


@pytest.mark.parametrize(
    ("params", "captum_kw"),
    [
        ({"surrogate": "linear"}, {"interpretable_model": SkLearnLinearRegression()}),
        (
            {"surrogate": "ridge", "alpha": 0.3},
            {"interpretable_model": SkLearnLinearModel("linear_model.Ridge", alpha=0.3)},
        ),
        (
            {"distance": "euclidean", "kernel_width": 2.0},
            {"similarity_func": get_exp_kernel_similarity_function("euclidean", 2.0)},
        ),
    ],
)
def test_lime_options_match_captum(params, captum_kw):
    module, x = net(), torch.rand(1, 1, 12, 12)
    mask = grid_mask(9)
    att = xl.get_attributor("lime", features=mask, n_samples=40, seed=3, **params)
    z = att.samples_for([9])[0]
    res = att.attribute(clf_of(module), x, [0, 4])
    for s, t in enumerate([0, 4]):
        expected = captum_maps(CaptumLime, module, x, mask, z, t, **captum_kw)
        torch.testing.assert_close(res.values[0, s], expected, **TOL)


def test_kernel_shap_matches_captum_every_label_and_is_efficient():
    module, x = net(), torch.rand(2, 1, 12, 12)
    clf, mask = clf_of(module), grid_mask(9)
    att = xl.get_attributor("kernel_shap", features=mask, n_samples=50)
    z = att.samples_for([9])[0]
    res = att.attribute(clf, x)
    for i in range(2):
        for t in range(5):
            expected = captum_maps(CaptumKernelShap, module, x[i : i + 1], mask, z, t)
            torch.testing.assert_close(res.values[i, t], expected, rtol=1e-4, atol=1e-4)
    # the end-point weights pin sum of the Shapley values = f(x) - f(baseline)
    coef = torch.stack([res.values[:, :, 0][:, :, mask == f][..., 0] for f in range(9)], -1)
    gap = module(x) - module(torch.zeros_like(x))
    torch.testing.assert_close(coef.sum(-1), gap.detach(), rtol=1e-3, atol=1e-3)


def test_kernel_shap_draws_follow_the_shapley_kernel():
    att = xl.get_attributor("kernel_shap", n_samples=20_000, seed=5)
    z = att.draw(6, torch.Generator().manual_seed(5))
    assert z[0].all() and not z[1].any()
    sizes = z[2:].sum(1)
    k = torch.arange(1, 6, dtype=torch.float64)
    expected = (5 / (k * (6 - k))) / (5 / (k * (6 - k))).sum()
    freq = torch.bincount(sizes, minlength=7)[1:6].double() / len(sizes)
    torch.testing.assert_close(freq, expected, atol=0.01, rtol=0)
    # within one size, every feature equally likely
    share = z[2:][sizes == 2].double().mean(0)
    torch.testing.assert_close(share, torch.full((6,), 2 / 6, dtype=torch.float64), atol=0.02,
                               rtol=0)  # fmt: skip


def test_feature_ablation_matches_captum_with_baselines():
    module, x = net(), torch.rand(2, 1, 12, 12)
    ids = torch.stack([grid_mask(9), grid_mask(16)])  # one mask per image
    base = torch.rand(2, 1, 12, 12)
    res = xl.get_attributor("feature_ablation", features=ids, baseline=base).attribute(
        clf_of(module), x
    )
    for t in range(5):
        expected = torch.cat([
            CaptumFeatureAblation(module).attribute(
                x[i : i + 1], target=t, feature_mask=ids[i][None, None], baselines=base[i : i + 1]
            )
            for i in range(2)
        ])  # fmt: skip
        torch.testing.assert_close(res.values[:, t], expected, **TOL)


def test_per_image_masks_follow_the_images_with_targets():
    """Image 1 has no target: the per-image masks of images 0 and 2 must still be theirs."""
    module, x = net(), torch.rand(3, 1, 12, 12)
    ids = torch.stack([grid_mask(4), grid_mask(9), grid_mask(16)])
    region = torch.ones(3, 12, 12, dtype=torch.bool)
    region[2, :6] = False
    targets = torch.tensor([[1, 0, 0, 0, 0], [0, 0, 0, 0, 0], [0, 0, 1, 0, 0]])
    att = xl.get_attributor("feature_ablation", features=ids, region=region)
    res = att.attribute(clf_of(module), x, targets)
    full = att.attribute(clf_of(module), x, "all")
    torch.testing.assert_close(res.values[0, 0], full.values[0, 0])
    torch.testing.assert_close(res.values[2, 0], full.values[2, 2])
    assert (res.values[2, 0, 0, :6] == 0).all() and len(torch.unique(res.values[0, 0])) <= 4


def test_rgb_input_and_a_model_from_torchvision():
    from torchvision.models import resnet18

    torch.manual_seed(0)
    module = resnet18(num_classes=5).eval()
    x = torch.rand(1, 3, 32, 32)
    mask = grid_mask(9, 32)
    clf = clf_of(module, in_channels=3)
    att = xl.get_attributor("kernel_shap", features=mask, n_samples=30)
    z = att.samples_for([9])[0]
    res = att.attribute(clf, x, [1, 3])
    assert torch.equal(res.values[0, 0, 0], res.values[0, 0, 2])  # a feature spans channels
    for s, t in enumerate([1, 3]):
        method = CaptumKernelShap(module)
        method.perturb_func = given(z)
        expected = method.attribute(x, target=t, feature_mask=mask.expand(1, 3, -1, -1),
                                    n_samples=30, baselines=0.0)  # fmt: skip
        torch.testing.assert_close(res.values[:, s], expected, rtol=1e-3, atol=1e-4)


def test_region_leaves_the_outside_alone():
    module, x = net(), torch.rand(1, 1, 12, 12)
    region = torch.zeros(12, 12, dtype=torch.bool)
    region[2:9, 3:10] = True
    ids = features.segment(x, features="grid", n_features=16, region=region)[0]
    assert (ids[~region] == -1).all() and (ids[region] >= 0).all()
    for name in ("lime", "kernel_shap", "feature_ablation"):
        params = {} if name == "feature_ablation" else {"n_samples": 30}
        res = xl.get_attributor(name, features="grid", n_features=16, region=region, **params)
        values = res.attribute(clf_of(module), x).values
        assert (values[0, :, 0][:, ~region] == 0).all()
        assert (values[0, :, 0][:, region] != 0).any()
    # feature ablation restricted = Captum with the outside as a feature of its own, inside
    captum_ids = torch.where(ids >= 0, ids, int(ids.max()) + 1)
    ablation = CaptumFeatureAblation(module)
    expected = ablation.attribute(x, target=2, feature_mask=captum_ids[None, None])
    torch.testing.assert_close(values[0, 2, 0][region], expected[0, 0][region], **TOL)


def test_seeded_reproducible_and_independent_of_the_batch():
    module, x = net(), torch.rand(3, 1, 12, 12)
    clf = clf_of(module)
    att = xl.get_attributor("lime", features="grid", n_features=9, n_samples=30, seed=7)
    first = att.attribute(clf, x, [0, 2]).values
    again = att.attribute(clf, x, [0, 2]).values
    torch.testing.assert_close(first, again, rtol=0, atol=0)
    alone = att.attribute(clf, x[2:], [0, 2]).values
    torch.testing.assert_close(alone[0], first[2], rtol=1e-5, atol=1e-7)
    other = xl.get_attributor("lime", features="grid", n_features=9, n_samples=30, seed=8)
    assert not torch.allclose(other.attribute(clf, x, [0, 2]).values, first)


def test_one_set_of_forwards_serves_every_label():
    calls: list[int] = []
    module = net()
    module.register_forward_pre_hook(lambda _m, args: calls.append(args[0].shape[0]))
    x = torch.rand(2, 1, 12, 12)
    att = xl.get_attributor("lime", features="grid", n_features=9, n_samples=25)
    att.attribute(clf_of(module), x, "all")
    assert sum(calls) == 1 + 2 * 25  # the memory probe, then 25 samples per image
    assert att.engine.last_plan.n_items == 50


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"features": "watershed"}, "features"),
        ({"features": torch.rand(4, 4)}, "integer"),
        ({"n_samples": 0}, "n_samples"),
        ({"surrogate": "elastic"}, "surrogate"),
        ({"distance": "l1"}, "distance"),
        ({"kernel_width": 0.0}, "kernel_width"),
        ({"samples": torch.full((3, 4), 2)}, "samples"),
        ({"baseline": "black"}, "baseline"),
        ({"feature_params": 3}, "feature_params"),
    ],
)
def test_bad_parameters(params, match):
    with pytest.raises(InputError, match=match):
        xl.get_attributor("lime", **params)


@pytest.mark.parametrize(
    ("name", "params", "match"),
    [
        ("lime", {"features": torch.zeros(5, 5, dtype=torch.long)}, "features mask"),
        ("lime", {"region": torch.ones(3, 3, dtype=torch.bool)}, "region"),
        ("lime", {"region": torch.zeros(12, 12, dtype=torch.bool)}, "no feature"),
        ("lime", {"features": "grid", "samples": torch.ones(4, 3)}, "samples have 3"),
        ("kernel_shap", {"features": torch.zeros(12, 12, dtype=torch.long)}, "2 features"),
        ("kernel_shap", {"features": "grid", "n_samples": 1}, "n_samples >= 2"),
        ("feature_ablation", {"baseline": torch.zeros(3, 1, 12, 12)}, "baseline"),
    ],
)
def test_bad_parameters_for_the_input(name, params, match):
    with pytest.raises(InputError, match=match):
        xl.get_attributor(name, **params).attribute(clf_of(net()), torch.rand(2, 1, 12, 12))
