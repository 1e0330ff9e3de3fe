"""Every Captum-backed attributor equals Captum called once per label.

One xraylens call explains several images and labels; each map is compared with Captum's
``attribute(x, target=label)`` on the same model and input. Guided backprop, deconvolution,
guided Grad-CAM and DeepLIFT are compared on Captum's terms: the model after the structural
surgery (every ReLU its own module, which Captum needs as well), and for DeepLIFT a model
without max pooling (Captum's max-pool rule is not exact, ours is: see test_surgery_maxpool).

Tolerances, relative to the largest absolute value of the reference, on float64 models: 1e-6
for the maps (they are returned as float32) and 1e-9 for the deltas (kept in the model's
dtype). float32 models (batch norm folded into convolutions, an equivalent input-gradient of
the stem, other summation orders): 1e-3 in relative L2 norm.
"""

from __future__ import annotations

import copy
import warnings

import captum.attr as ca
import numpy as np
import pytest
import torch
from model_guard import backbone, small_classifier, tiny_input
from torch import nn

import xraylens as xl
from xraylens.surgery import Surgery

LABELS = [1, 3, 4]
STRUCTURAL = ["unshare", "no_inplace", "split_reused", "functional_to_modules"]


def _structural_copy(clf: xl.Classifier) -> nn.Module:
    inner = copy.deepcopy(clf.module)
    Surgery(STRUCTURAL).apply(inner)
    return inner


def _seed(seed: int = 0) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)


def captum_maps(method: str, clf: xl.Classifier, x: torch.Tensor, params: dict, labels):
    """Captum's maps [N, T, C, H, W] and deltas [N, T] (or None), one call per label."""
    module = clf.forward_module()
    structural = clf.forward_module(_structural_copy(clf))
    inner = structural.model if hasattr(structural, "model") else structural
    layer = params.get("layer") or clf.cam_layer
    nt = params.get("noise_tunnel")
    nt_kw = {"nt_type": nt, "nt_samples": params.get("nt_samples"), "stdevs": params.get("stdevs")}

    def one(t):
        _seed(0)
        if method == "saliency":
            if nt:
                sal = ca.NoiseTunnel(ca.Saliency(module))
                return sal.attribute(x, target=t, abs=params.get("abs", True), **nt_kw), None
            return ca.Saliency(module).attribute(x, target=t, abs=params.get("abs", True)), None
        if method == "input_x_gradient":
            return ca.InputXGradient(module).attribute(x, target=t), None
        if method == "guided_backprop":
            return ca.GuidedBackprop(structural).attribute(x, target=t), None
        if method == "deconvolution":
            return ca.Deconvolution(structural).attribute(x, target=t), None
        if method == "integrated_gradients":
            kw = dict(baselines=params["baseline"], target=t, n_steps=params["n_steps"],
                      method=params["method"], return_convergence_delta=True)  # fmt: skip
            ig = ca.IntegratedGradients(module)
            if nt:
                a, d = ca.NoiseTunnel(ig).attribute(x, **nt_kw, **kw)
                return a, d.view(len(x), -1).mean(1)
            return ig.attribute(x, **kw)
        if method == "deeplift":
            dl = ca.DeepLift(structural)
            return dl.attribute(x, params["baseline"], target=t, return_convergence_delta=True)
        if method == "deeplift_shap":
            dls = ca.DeepLiftShap(structural)
            a, d = dls.attribute(x, params["baselines"], target=t, return_convergence_delta=True)
            return a, d.view(len(x), -1).mean(1)
        if method == "gradient_shap":
            a, d = ca.GradientShap(module).attribute(
                x, baselines=params["baselines"], n_samples=params["n_samples"],
                stdevs=params["stdevs"], target=t, return_convergence_delta=True)  # fmt: skip
            return a, d.view(len(x), -1).mean(1)
        if method == "grad_cam":
            cam = ca.LayerGradCam(module, module_layer(module, layer)).attribute(
                x, target=t, relu_attributions=params["relu"])  # fmt: skip
            up = ca.LayerAttribution.interpolate(cam, x.shape[-2:], params["interpolate"])
            return up.expand_as(x), None
        if method == "guided_grad_cam":
            return ca.GuidedGradCam(structural, inner.get_submodule(layer)).attribute(
                x, target=t, interpolate_mode=params["interpolate"]), None  # fmt: skip
        raise ValueError(method)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = [one(t) for t in labels]
    maps = torch.stack([a.detach() for a, _ in out], 1)
    deltas = None if out[0][1] is None else torch.stack([d.detach() for _, d in out], 1)
    return maps, deltas


def module_layer(module: nn.Module, name: str) -> nn.Module:
    inner = module.model if hasattr(module, "model") else module
    return inner.get_submodule(name)


def _compare(method, clf, x, params, rtol, labels=LABELS, seed_ours=False):
    att = xl.get_attributor(method, **params)
    if seed_ours:
        _seed(0)
    res = att.attribute(clf, x, labels)
    ref, ref_delta = captum_maps(method, clf, x, att.params, labels)
    scale = ref.abs().max()
    assert scale > 0
    tol = max(rtol, 1e-6) * float(scale)  # the maps are float32
    torch.testing.assert_close(res.values.double(), ref.double(), rtol=0, atol=tol)
    if ref_delta is not None:
        torch.testing.assert_close(res.delta.double(), ref_delta.double(), rtol=0,
                                   atol=rtol * max(1.0, float(ref_delta.abs().max())))  # fmt: skip
    else:
        assert res.delta is None


SMALL_CASES = {
    "saliency": {"abs": False},
    "saliency_abs": {},
    "input_x_gradient": {},
    "guided_backprop": {},
    "deconvolution": {},
    "integrated_gradients": {"n_steps": 16, "baseline": 0.25},
    "integrated_gradients_riemann": {"n_steps": 7, "method": "riemann_trapezoid"},
    "deeplift": {"baseline": 0.3},
    "grad_cam": {"relu": False, "interpolate": "bilinear"},
    "grad_cam_relu_nearest": {"relu": True, "interpolate": "nearest"},
    "guided_grad_cam": {"interpolate": "nearest"},
}


@pytest.mark.parametrize("case", SMALL_CASES)
def test_equals_captum_on_a_small_net(case):
    method = case if case in xl.list_attributors() else case.rsplit("_", 1)[0]
    method = {"integrated_gradients_riemann": "integrated_gradients",
              "grad_cam_relu_nearest": "grad_cam"}.get(case, method)  # fmt: skip
    clf = small_classifier()
    x = torch.rand(3, 1, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    _compare(method, clf, x, SMALL_CASES[case], rtol=1e-9)


def test_deeplift_shap_and_gradient_shap_equal_captum_on_a_small_net():
    clf = small_classifier()
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 1, 8, 8, dtype=torch.float64, generator=g)
    dist = torch.rand(4, 1, 8, 8, dtype=torch.float64, generator=g)
    _compare("deeplift_shap", clf, x, {"baselines": dist}, rtol=1e-9)
    params = {"baselines": dist, "n_samples": 6, "stdevs": 0.1, "seed": None}
    _compare("gradient_shap", clf, x, params, rtol=1e-9, seed_ours=True)


@pytest.mark.parametrize("nt", ["smoothgrad", "smoothgrad_sq", "vargrad"])
def test_noise_tunnel_equals_captum(nt):
    clf = small_classifier()
    x = torch.rand(2, 1, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    common = {"noise_tunnel": nt, "nt_samples": 4, "stdevs": 0.2, "seed": None}
    _compare("saliency", clf, x, common | {"abs": False}, rtol=1e-9, seed_ours=True)
    if nt == "smoothgrad":  # with a delta: the mean of Captum's per-sample deltas
        ig = common | {"n_steps": 5, "baseline": 0.0}
        _compare("integrated_gradients", clf, x, ig, rtol=1e-9, seed_ours=True)


RESNET_CASES = {
    "saliency": {},
    "input_x_gradient": {},
    "guided_backprop": {},
    "deconvolution": {},
    "integrated_gradients": {"n_steps": 6},
    "grad_cam": {"relu": True, "interpolate": "bilinear"},
    "guided_grad_cam": {"interpolate": "bilinear"},
}


@pytest.mark.parametrize("method", RESNET_CASES)
def test_equals_captum_on_resnet18(method):
    clf = backbone("resnet18", torch.float64)
    x = tiny_input(clf, n=2, extra=8)
    _compare(method, clf, x, RESNET_CASES[method], rtol=1e-6)


@pytest.mark.parametrize("method", ["saliency", "integrated_gradients", "guided_backprop"])
def test_close_to_captum_in_float32(method):
    """float32: a ReLU or max-pool whose input is within rounding of its kink may switch
    between two equivalent computations (folded batch norm, another batch size), which moves
    a few pixels of a gradient map; the maps agree in relative L2 norm."""
    clf = backbone("resnet18")
    x = tiny_input(clf, n=2, extra=8)
    params = RESNET_CASES[method]
    res = xl.get_attributor(method, **params).attribute(clf, x, LABELS)
    ref, _ = captum_maps(method, clf, x, xl.get_attributor(method, **params).params, LABELS)
    assert float((res.values - ref).norm() / ref.norm()) < 1e-3


def test_deeplift_equals_captum_on_a_pool_free_resnet18():
    base = backbone("resnet18", torch.float64)
    inner = copy.deepcopy(base.module)
    inner.maxpool = nn.Identity()
    clf = xl.Classifier(inner, labels=base.labels, min_input_size=32)
    x = tiny_input(clf, n=2)
    _compare("deeplift", clf, x, {"baseline": tiny_input(clf, n=1, seed=5)}, rtol=1e-9)


def test_per_image_targets_equal_captum():
    clf = small_classifier()
    x = torch.rand(3, 1, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    targets = [[4, 0], ["l2"], [1, 2, 3]]
    res = xl.get_attributor("integrated_gradients", n_steps=8).attribute(clf, x, targets)
    assert res.mask.tolist() == [[True, True, False], [True, False, False], [True, True, True]]
    ig = ca.IntegratedGradients(clf.forward_module())
    for i, row in enumerate([[4, 0], [2], [1, 2, 3]]):
        for slot, t in enumerate(row):
            ref = ig.attribute(x[i : i + 1], target=t, n_steps=8)
            torch.testing.assert_close(res.values[i, slot].double(), ref[0], rtol=0, atol=1e-7)
    assert (res.values[~res.mask] == 0).all()
