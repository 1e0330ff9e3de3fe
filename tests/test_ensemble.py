"""``xl.Ensemble``: a classifier that every attributor and profiler explains.

Members at small size, in float64: an xraylens ResNet18, a random-init torchvision MobileNetV2
(not written here; greyscale through ``channels="fold"``) and a small net with max pooling.
"""

from __future__ import annotations

import functools
from pathlib import Path

import captum.attr as ca
import pytest
import torch
import torchvision
from model_guard import SmallNet, assert_untouched, randomize_batchnorm
from test_attr_captum import _compare, module_layer
from torch import nn

import xraylens as xl

LABELS = ("a", "b", "c", "d", "e")
DT = torch.float64


def _x(n=2, size=32, seed=0):
    return torch.rand(n, 1, size, size, generator=torch.Generator().manual_seed(seed), dtype=DT)


@functools.cache
def members(maxpool: bool = True) -> tuple[xl.Classifier, ...]:
    torch.manual_seed(0)
    res = xl.get_classifier("resnet18", labels=LABELS, dtype=DT)
    if not maxpool:  # Captum's DeepLIFT max-pool rule is not exact (ours is)
        res.module.maxpool = nn.Identity()
    randomize_batchnorm(res.module, 0, _x(8, seed=1))
    mnet = torchvision.models.mobilenet_v2(weights=None, num_classes=5).to(DT)
    randomize_batchnorm(mnet, 1, _x(8, seed=2).repeat(1, 3, 1, 1))
    # labels in another order, and one named differently: the ensemble matches them by name
    mob = xl.Classifier(mnet, ("e", "d", "c", "b", "A"), channels="fold", name="mobilenet_v2")
    small = SmallNet(1, 5, "max" if maxpool else "avg").to(DT)
    net = xl.Classifier(small, LABELS, min_input_size=8, cam_layer="conv2", name="small")
    net.input_mean, net.input_std = (0.4,), (0.3,)  # a member with its own normalisation
    return res, mob, net


def ensemble(combine="mean_logits", maxpool=True, weights=(1, 2, 3)) -> xl.Ensemble:
    return xl.Ensemble(members(maxpool), combine, weights, label_map=[None, {"a": "A"}, None])


def member_logits(x) -> torch.Tensor:
    """[M, N, L] in the ensemble's label order, computed from each member directly."""
    out = []
    for clf in members():
        z = clf(x).detach()
        order = [clf.labels.index({"a": "A"}.get(v, v) if clf.name == "mobilenet_v2" else v)
                 for v in LABELS]  # fmt: skip
        out.append(z[:, order])
    return torch.stack(out)


def test_forward_is_the_weighted_mean_of_logits_or_probabilities():
    x = _x()
    z = member_logits(x)
    w = torch.tensor([1, 2, 3], dtype=DT)[:, None, None] / 6
    ens = ensemble()
    assert ens.labels == LABELS and ens.weights == pytest.approx((1 / 6, 2 / 6, 3 / 6))
    torch.testing.assert_close(ens(x), (w * z).sum(0), rtol=0, atol=1e-12)
    torch.testing.assert_close(ens.member_logits(x), z, rtol=0, atol=1e-12)
    probs = ensemble("mean_probs")
    torch.testing.assert_close(probs.predict_proba(x), (w * torch.sigmoid(z)).sum(0), rtol=0,
                               atol=1e-12)  # fmt: skip
    assert ens.min_input_size == 32 and ens.in_channels == 1
    assert "members.0.layer4" in ens.nap_layers and ens.cam_layer is None
    assert ens.member_cam_layers == ("members.0.layer4", None, "members.2.conv2")


@pytest.mark.parametrize("combine", ["mean_logits", "mean_probs"])
@pytest.mark.parametrize("output", ["logits", "probs"])
def test_deeplift_is_complete(combine, output):
    ens = ensemble(combine)
    x, x0 = _x(), _x(1, seed=7)
    with assert_untouched(ens.module):
        res = xl.get_attributor("deeplift", baseline=x0).attribute(ens, x, [0, 3], output=output)
    f = ens.forward_module()
    with torch.no_grad():
        diff = f(x) - f(x0)
        if output == "probs":
            diff = torch.sigmoid(f(x)) - torch.sigmoid(f(x0))
    diff = diff[:, [0, 3]]
    total = res.values.double().sum(dim=(2, 3, 4))
    scale = float(diff.abs().max())
    assert scale > 0
    assert float((total - diff).abs().max()) <= 1e-6 * scale
    assert float(res.delta.abs().max()) <= 1e-6 * scale


@pytest.mark.parametrize(
    "method, params",
    [
        ("saliency", {"abs": False}),
        ("input_x_gradient", {}),
        ("integrated_gradients", {"n_steps": 3, "baseline": 0.2}),
        ("guided_backprop", {}),
        ("deeplift", {"baseline": 0.1}),
        ("occlusion", {"window": 8, "stride": 8}),
    ],
)
def test_maps_are_the_weighted_mean_of_the_members_maps(method, params):
    ens, x = ensemble(), _x()
    att = xl.get_attributor(method, **params)
    got = att.attribute(ens, x, ["b", "e", "a"]).values.double()
    want = torch.zeros_like(got)
    for w, clf in zip(ens.weights, members()):
        targets = ["b", "e", "A" if clf.name == "mobilenet_v2" else "a"]
        want += w * att.attribute(clf, x, targets).values.double()
    scale = float(want.abs().max())
    assert scale > 0
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6 * scale)


@pytest.mark.parametrize(
    "method, params",
    [
        ("saliency", {}),
        ("integrated_gradients", {"n_steps": 3, "baseline": 0.25}),
        ("deeplift", {"baseline": 0.3}),
        ("guided_backprop", {}),
        ("grad_cam", {"layer": "members.0.layer4", "relu": False, "interpolate": "bilinear"}),
    ],
)
def test_equals_captum_on_the_ensemble_module(method, params):
    ens = ensemble()
    if method == "deeplift":  # Captum's rules: no ReLU6 (MobileNetV2), max pooling not exact
        res, _, small = members(maxpool=False)
        ens = xl.Ensemble([res, small], weights=[2, 1])
    # rtol 1e-6 as for ResNet18 in test_attr_captum (Captum's IG step sizes are float32)
    _compare(method, ens, _x(), params, rtol=1e-6)


MEMBER_LAYERS = {0: "layer4", 1: "features.18", 2: "conv2"}


def test_grad_cam_of_one_member_layer_is_that_members_weighted_cam():
    ens, x = ensemble(), _x()
    got = xl.get_attributor("grad_cam", layer="members.2.conv2", relu=False).attribute(ens, x, [1])
    member = xl.get_attributor("grad_cam", relu=False).attribute(members()[2], x, [1])
    torch.testing.assert_close(got.values, ens.weights[2] * member.values, rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize(
    "layer",
    [
        MEMBER_LAYERS,
        ["layer4", "features.18", "conv2"],
        ("members.2.conv2", "members.0.layer4", "members.1.features.18"),
    ],  # fmt: skip
)
def test_grad_cam_with_a_layer_per_member_is_the_weighted_sum_of_the_members_cams(layer, relu):
    ens, x = ensemble(), _x()
    got = xl.get_attributor("grad_cam", layer=layer, relu=relu).attribute(ens, x, ["b", "a"])
    want = 0
    for i, (w, clf) in enumerate(zip(ens.weights, members())):
        targets = ["b", "A" if clf.name == "mobilenet_v2" else "a"]
        att = xl.get_attributor("grad_cam", layer=MEMBER_LAYERS[i], relu=relu)
        want = want + w * att.attribute(clf, x, targets).values.double()
    scale = float(want.abs().max())
    assert scale > 0
    torch.testing.assert_close(got.values.double(), want, rtol=0, atol=1e-6 * scale)


def test_default_cam_layers_of_every_member():
    res, _, small = members()
    ens, x = xl.Ensemble([res, small], weights=[1, 3]), _x()
    got = xl.get_attributor("grad_cam").attribute(ens, x, [0, 2]).values.double()
    want = sum(w * xl.get_attributor("grad_cam").attribute(c, x, [0, 2]).values.double()
               for w, c in zip(ens.weights, (res, small)))  # fmt: skip
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6 * float(want.abs().max()))
    guided = xl.get_attributor("guided_grad_cam").attribute(ens, x, [0]).values
    assert guided.shape == (2, 1, 1, 32, 32) and guided.abs().max() > 0


@pytest.mark.parametrize("method", ["grad_cam_pp", "xgrad_cam", "hires_cam", "layer_cam"])
def test_the_cam_family_sums_a_map_per_member_layer(method):
    ens, x = ensemble(), _x()
    got = xl.get_attributor(method, layer=MEMBER_LAYERS).attribute(ens, x, ["c"]).values
    one = [xl.get_attributor(method, layer=f"members.{i}.{v}").attribute(ens, x, ["c"]).values
           for i, v in MEMBER_LAYERS.items()]  # fmt: skip
    want = sum(v.double() for v in one)
    torch.testing.assert_close(got.double(), want, rtol=0, atol=1e-6 * float(want.abs().max()))
    if method == "hires_cam":  # linear in the gradient: w_i times the member's own map
        own = xl.get_attributor(method, layer="conv2").attribute(members()[2], x, ["c"]).values
        torch.testing.assert_close(one[2], ens.weights[2] * own, rtol=1e-5, atol=1e-9)


def test_grad_cam_per_member_equals_captum_summed_over_the_layers_for_mean_probs():
    ens, x = ensemble("mean_probs"), _x()
    got = xl.get_attributor("grad_cam", layer=MEMBER_LAYERS, relu=False).attribute(ens, x, [0, 3])
    module = ens.forward_module()
    want = []
    for t in (0, 3):
        total = 0
        for i, name in MEMBER_LAYERS.items():
            layer = module_layer(module, f"members.{i}.{name}")
            cam = ca.LayerGradCam(module, layer).attribute(x, target=t)
            total = total + ca.LayerAttribution.interpolate(cam, x.shape[-2:], "bilinear")
        want.append(total.detach())
    want = torch.stack(want, 1)
    scale = float(want.abs().max())
    assert scale > 0
    torch.testing.assert_close(got.values.double(), want, rtol=0, atol=1e-6 * scale)


def test_cam_layers_that_cannot_be_used_name_the_member():
    ens, x = ensemble(), _x(1)
    with pytest.raises(xl.InputError, match=r"no default CAM layer for member 1 \(mobilenet_v2\)"):
        xl.get_attributor("grad_cam").attribute(ens, x, [0])
    bad = {0: "layer4", 1: "features.99", 2: "conv2"}
    with pytest.raises(xl.InputError, match=r"member 1 \(mobilenet_v2\) has no module 'feat"):
        xl.get_attributor("grad_cam", layer=bad).attribute(ens, x, [0])
    with pytest.raises(xl.InputError, match="layer key 3 is no member index"):
        xl.get_attributor("grad_cam", layer={3: "conv2"}).attribute(ens, x, [0])
    with pytest.raises(xl.InputError, match="2 entries for the ensemble's 3 members"):
        xl.get_attributor("grad_cam", layer=["layer4", "conv2"]).attribute(ens, x, [0])
    with pytest.raises(xl.InputError, match="is in member 0, given for member 2"):
        xl.get_attributor("grad_cam", layer={2: "members.0.layer4"}).attribute(ens, x, [0])
    with pytest.raises(xl.InputError, match="not an xl.Ensemble"):
        xl.get_attributor("grad_cam", layer={0: "conv2"}).attribute(members()[2], x, [0])
    for method, why in (("eigen_cam", "uses no gradient"), ("ablation_cam", "ablating several")):
        with pytest.raises(xl.InputError, match=f"{method} cannot sum layers of member 0 "
                           rf"\(resnet18\), member 1 .*{why}"):  # fmt: skip
            xl.get_attributor(method, layer=MEMBER_LAYERS).attribute(ens, x, [0])
    # one member's layer still works for them
    one = xl.get_attributor("eigen_cam", layer={2: "conv2"}).attribute(ens, x, [0]).values
    assert one.abs().max() > 0


def test_memory_budget_holds_across_members():
    ens, x = ensemble(), _x(3)
    per_member = []
    for clf in members():
        att = xl.get_attributor("saliency", max_memory="1GB")
        att.attribute(clf, x, [0])
        per_member.append(att.engine.last_plan.item_bytes)
    probe = xl.get_attributor("saliency", max_memory="1GB")
    probe.attribute(ens, x, [0])
    item = probe.engine.last_plan.item_bytes
    # one row of the ensemble runs every member: it saves every member's tensors for backward
    # (the probe's transient term is the largest layer's, not a sum)
    assert item > max(per_member) and item > 0.75 * sum(per_member)
    fixed = 10**9 - probe.engine.last_plan.budget  # on the CPU: one copy of the parameters
    att = xl.get_attributor("saliency", max_memory=int(fixed + item * 2.5))
    res = att.attribute(ens, x, [0, 1])
    plan = att.engine.last_plan
    assert plan.chunk == 2 and plan.chunk * plan.item_bytes <= plan.budget
    torch.testing.assert_close(res.values, probe.attribute(ens, x, [0, 1]).values)
    occ = xl.get_attributor("occlusion", window=16, stride=16, max_memory=1)
    occ.attribute(ens, x[:1], [0])
    assert occ.engine.last_plan.chunk == 1  # nothing fits: one perturbed image at a time


def test_naps_per_member_equal_the_members_own():
    ens, x = ensemble(), _x(4)
    groups = torch.tensor([[1, 0], [0, 1], [1, 1], [0, 1]], dtype=torch.bool)
    default = xl.get_profiler("nap", groups=("g", "h"))
    default.update(ens, x, groups)
    assert {"input", "members.0.layer1", "members.0.layer4"} <= set(default.result().mean)
    layers = {0: "layer4", 1: "features.18", 2: "conv2"}
    prof = xl.get_profiler("nap", layers=[f"members.{i}.{v}" for i, v in layers.items()],
                           groups=("g", "h"))  # fmt: skip
    prof.update(ens, x, groups)
    res = prof.result()
    for i, layer in layers.items():
        own = xl.get_profiler("nap", layers=[layer], groups=("g", "h"))
        own.update(members()[i], x, groups)
        for g in ("g", "h"):
            ref = own.result().mean[layer][g]
            assert ref.std() > 0
            assert abs(res.mean[f"members.{i}.{layer}"][g] - ref).max() <= 1e-12 * abs(ref).max()


def test_the_recipe_assembles_the_ensembles_naps_from_its_members(monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1]))  # the repository root
    from examples.covid_cxr.profile import ensemble_result

    ens, x = ensemble(), _x(4)
    groups = torch.tensor([[1, 0], [0, 1], [1, 0], [0, 1]], dtype=torch.bool)
    direct = xl.get_profiler("nap", groups=("g", "h"))
    direct.update(ens, x, groups)
    own = []
    for clf in members():
        prof = xl.get_profiler("nap", layers=["input", *clf.nap_layers], groups=("g", "h"))
        prof.update(clf, x, groups)
        own.append(prof.result())
    got, want = ensemble_result(own), direct.result()
    assert set(want.layers) <= set(got.layers)
    for layer in want.layers:
        for g in ("g", "h"):
            ref = want.mean[layer][g]
            assert abs(got.mean[layer][g] - ref).max() <= 1e-12 * max(abs(ref).max(), 1e-300)


def test_bad_members_and_options_are_refused():
    res, mob, net = members()
    with pytest.raises(xl.InputError, match=r"classifiers\[1\] \(mobilenet_v2\) has no label"):
        xl.Ensemble([res, mob])
    with pytest.raises(xl.InputError, match="combine must be one of"):
        xl.Ensemble([res, net], "vote")
    with pytest.raises(xl.InputError, match="weights has 3 values for 2"):
        xl.Ensemble([res, net], weights=[1, 2, 3])
    with pytest.raises(xl.InputError, match="weights must be finite numbers >= 0"):
        xl.Ensemble([res, net], weights=[1, -1])
    with pytest.raises(xl.InputError, match="must not all be 0"):
        xl.Ensemble([res, net], weights=[0, 0])
    with pytest.raises(xl.InputError, match="share one module"):
        xl.Ensemble([res, res])
    with pytest.raises(xl.InputError, match="at least one"):
        xl.Ensemble([])
    rgb = xl.Classifier(nn.Conv2d(3, 5, 1), LABELS, in_channels=3)
    with pytest.raises(xl.InputError, match="3 input channels.*channels='repeat'"):
        xl.Ensemble([res, rgb])
    f32 = xl.Classifier(SmallNet(1, 5), LABELS, min_input_size=8)
    with pytest.raises(xl.InputError, match="one device and dtype"):
        xl.Ensemble([res, f32])
    sub = xl.Ensemble([res, net], labels=["e", "b"])
    assert sub.labels == ("e", "b") and sub(_x(1)).shape == (1, 2)
    assert sub.metadata()["ensemble"]["members"][1]["labels"] == list(LABELS)


def test_the_recipe_explains_the_ensemble_with_cam_methods(monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1]))  # the repository root
    from examples.covid_cxr.ensemble import explains

    ens, small = ensemble(), members()[2]
    both = xl.Ensemble([members()[0], small])
    assert not explains(xl.get_attributor("grad_cam"), ens)  # mobilenet_v2 has no cam_layer
    assert explains(xl.get_attributor("grad_cam"), both)
    assert explains(xl.get_attributor("grad_cam", layer=MEMBER_LAYERS), ens)
    assert explains(xl.get_attributor("grad_cam", layer="members.0.layer4"), ens)
    assert not explains(xl.get_attributor("eigen_cam"), both)
    assert explains(xl.get_attributor("eigen_cam", layer="members.0.layer4"), both)
    assert not explains(xl.get_attributor("score_cam"), both)
    assert explains(xl.get_attributor("grad_cam"), small)
    assert explains(xl.get_attributor("saliency"), ens)


@pytest.mark.parametrize("combine", ["mean_logits", "mean_probs"])
@pytest.mark.parametrize("method", ["saliency", "deeplift", "integrated_gradients"])
def test_an_ensemble_of_one_model_explains_as_that_model(combine, method):
    """The recipe does not score a one-member ensemble's maps twice: they are the member's."""
    res = members()[0]
    one = xl.Ensemble([res], combine)
    x = _x()
    att = xl.get_attributor(method, **({"n_steps": 8} if method == "integrated_gradients" else {}))
    for output in ("logits", "probs"):
        mine = att.attribute(one, x, targets="all", output=output).values
        own = att.attribute(res, x, targets="all", output=output).values
        torch.testing.assert_close(mine, own, rtol=1e-6, atol=1e-6 * float(own.abs().max()))
