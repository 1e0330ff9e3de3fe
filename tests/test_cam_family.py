"""The CAM family against pytorch-grad-cam, per label, on the same layer.

pytorch-grad-cam clips each CAM at 0, min-max scales it per image and resizes it (cv2). The
raw comparisons patch its scaling to a plain bilinear upsampling (the unscaled map xraylens
returns); one test compares with its real output after applying its normalisation to the
layer-resolution xraylens map. Models: xraylens' greyscale ResNet18 and a torchvision
MobileNetV3 (RGB, Hardswish: negative activations), random weights, float64.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from model_guard import assert_untouched, backbone, randomize_batchnorm, small_classifier

import xraylens as xl
from xraylens.errors import InputError

pgc = pytest.importorskip("pytorch_grad_cam")
cv2 = pytest.importorskip("cv2")  # a dependency of grad-cam
from pytorch_grad_cam import base_cam  # noqa: E402
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget  # noqa: E402
from pytorch_grad_cam.utils.svd_on_activations import (  # noqa: E402
    get_2d_projection_with_sign_correction,
)

REFERENCE = {
    "grad_cam_pp": pgc.GradCAMPlusPlus,
    "xgrad_cam": pgc.XGradCAM,
    "hires_cam": pgc.HiResCAM,
    "layer_cam": pgc.LayerCAM,
    "eigen_cam": pgc.EigenCAM,
}
FAMILY = (*REFERENCE, "ablation_cam")


class Logits(torch.nn.Module):
    """``clf(x)`` as a module: pytorch-grad-cam sees the same [0, 1] input (greyscale too)."""

    def __init__(self, clf: xl.Classifier):
        super().__init__()
        self.clf = clf
        self.net = clf.module

    def forward(self, x):
        return self.clf(x)


@pytest.fixture
def raw(monkeypatch):
    """pytorch-grad-cam without its min-max scaling: the clipped CAM, upsampled bilinearly."""

    def upsample(cam, target_size=None):
        if target_size is None:
            return cam
        t = torch.from_numpy(np.ascontiguousarray(cam))[:, None]
        return F.interpolate(t, size=target_size[::-1], mode="bilinear")[:, 0].numpy()

    monkeypatch.setattr(base_cam, "scale_cam_image", upsample)


def reference(cls, clf, layer, x, labels, **kw) -> torch.Tensor:
    """pytorch-grad-cam, one call per label: [N, T, H, W]; ``labels`` [T] or per image [N][T]."""
    model = Logits(clf)
    cam = cls(model, [model.net.get_submodule(layer)], **kw)
    per_image = labels if isinstance(labels[0], list) else [labels] * len(x)
    out = []
    for t in range(len(per_image[0])):
        targets = [ClassifierOutputTarget(row[t]) for row in per_image]
        out.append(torch.from_numpy(cam(x, targets)).double())
    return torch.stack(out, dim=1)


def assert_close_to(got: torch.Tensor, ref: torch.Tensor, rel: float = 1e-5) -> None:
    """``got`` [N, T, C, H, W] (every channel) equals ``ref`` [N, T, H, W] relative to its max."""
    scale = float(ref.abs().max())
    assert scale > 0
    for c in range(got.shape[2]):
        err = float((got[:, :, c].double() - ref).abs().max())
        assert err <= rel * scale, f"max |difference| {err:.3g} of max |ref| {scale:.3g}"


@pytest.fixture(scope="module")
def resnet():
    return backbone("resnet18", torch.float64)


@pytest.fixture(scope="module")
def mobilenet():
    torch.manual_seed(0)
    net = torchvision.models.mobilenet_v3_small(num_classes=4).double()
    randomize_batchnorm(net, 0, torch.rand(4, 3, 64, 64, dtype=torch.float64))
    return xl.Classifier(net, labels=list("abcd"), in_channels=3, cam_layer="features.12")


def _x(c, n=2, size=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, c, size, size, dtype=torch.float64, generator=g)


@pytest.mark.parametrize("layer", ["layer4", "layer3"])
@pytest.mark.parametrize("method", list(REFERENCE))
def test_equals_pytorch_grad_cam_on_resnet18(method, layer, resnet, raw):
    x, labels = _x(1), [0, 5, 13]
    got = xl.get_attributor(method, layer=layer).attribute(resnet, x, labels).values
    assert_close_to(got, reference(REFERENCE[method], resnet, layer, x, labels))


@pytest.mark.parametrize("layer", ["features.12", "features.4"])
@pytest.mark.parametrize("method", list(REFERENCE))
def test_equals_pytorch_grad_cam_on_a_torchvision_model(method, layer, mobilenet, raw):
    x, labels = _x(3), [2, 0]
    got = xl.get_attributor(method, layer=layer).attribute(mobilenet, x, labels).values
    assert got.shape == (2, 2, 3, 64, 64)
    assert_close_to(got, reference(REFERENCE[method], mobilenet, layer, x, labels))


@pytest.mark.parametrize("method", ["grad_cam_pp", "layer_cam", "eigen_cam"])
def test_per_image_targets_equal_pytorch_grad_cam(method, resnet, raw):
    x = _x(1, n=3)
    labels = [[0, 5], [13, 2], [7, 3]]
    got = xl.get_attributor(method, layer="layer3").attribute(resnet, x, labels).values
    assert_close_to(got, reference(REFERENCE[method], resnet, "layer3", x, labels))


def test_after_pytorch_grad_cams_normalisation(resnet):
    """Its real output: the layer map (nearest upsampling, sampled back), min-max scaled,
    resized with cv2 and min-max scaled again (its multi-layer mean) as pytorch-grad-cam does,
    equals it."""
    x, labels, size = _x(1), [0, 13], 64
    got = xl.get_attributor("grad_cam_pp", layer="layer3", interpolate="nearest")
    values = got.attribute(resnet, x, labels).values[:, :, 0].numpy()
    ref = reference(pgc.GradCAMPlusPlus, resnet, "layer3", x, labels).numpy()
    step = size // 4  # layer3 of a 64 px input is 4 x 4
    for i in range(2):
        for t in range(2):
            small = values[i, t, step // 2 :: step, step // 2 :: step].astype(np.float64)
            small = small - small.min()
            small = small / (1e-7 + small.max())
            scaled = cv2.resize(np.float32(small), (size, size))
            scaled = (scaled - scaled.min()) / (1e-7 + (scaled - scaled.min()).max())
            np.testing.assert_allclose(scaled, ref[i, t], atol=2e-6)


def test_ablation_cam_equals_pytorch_grad_cam_on_resnet18(resnet, raw):
    """layer3 ends with a ReLU: pytorch-grad-cam zeroes the ablated channel (32 px: 2 x 2)."""
    x, labels = _x(1, n=1, size=32), [1, 12]
    got = xl.get_attributor("ablation_cam", layer="layer3").attribute(resnet, x, labels).values
    ref = reference(pgc.AblationCAM, resnet, "layer3", x, labels, batch_size=256)
    assert_close_to(got, ref)


def test_ablation_cam_with_negative_activations_equals_pytorch_grad_cam(mobilenet, raw):
    """features.1 has no final activation: minimum - 1e7, pytorch-grad-cam's value for its
    first copy in a batch (so its batch_size=1)."""
    x, labels = _x(3, size=32), [3, 1]  # features.1: [2, 16, 8, 8], unambiguously NCHW
    with torch.no_grad():
        assert float(mobilenet.module.features[:2](x).min()) < 0
    att = xl.get_attributor("ablation_cam", layer="features.1")
    got = att.attribute(mobilenet, x, labels).values
    ref = reference(pgc.AblationCAM, mobilenet, "features.1", x, labels, batch_size=1)
    assert_close_to(got, ref, rel=1e-5)


def test_eigen_cam_is_label_independent_and_its_sign_correction_is_seg_eigen_cams(resnet):
    x = _x(1)
    res = xl.get_attributor("eigen_cam", layer="layer3", relu=False, interpolate="nearest")
    values = res.attribute(resnet, x, [0, 4, 9]).values
    assert (values[:, 1:] == values[:, :1]).all()
    fixed = (
        xl.get_attributor(
            "eigen_cam", layer="layer3", relu=False, interpolate="nearest", sign_correction=True
        )
        .attribute(resnet, x, [0])
        .values
    )
    act = {}
    handle = resnet.module.layer3.register_forward_hook(lambda m, i, o: act.update(a=o))
    with torch.no_grad():
        resnet(x)
    handle.remove()
    ref = get_2d_projection_with_sign_correction(act["a"].numpy())  # [N, 4, 4]
    small = fixed[:, 0, 0, 8::16, 8::16].double()
    np.testing.assert_allclose(small.numpy(), ref, rtol=1e-5, atol=1e-6 * np.abs(ref).max())
    assert (small.amax(dim=(1, 2)) >= small.amin(dim=(1, 2)).abs()).all()
    flipped = (values[:, 0, 0, 8::16, 8::16] * small.float() < 0).all(dim=(1, 2))
    same = torch.isclose(values[:, 0, 0, 8::16, 8::16], small.float(), rtol=1e-4).all(dim=(1, 2))
    assert (flipped | same).all()


def _counting(clf):
    calls = []
    handle = clf.module.register_forward_pre_hook(lambda m, i: calls.append(i[0].shape[0]))
    return calls, handle


@pytest.mark.parametrize("method", FAMILY)
def test_every_label_from_one_forward(method):
    """One forward of the images serves every label; Ablation-CAM's ablated forwards do not
    grow with the number of labels."""
    clf = small_classifier()
    x = torch.rand(2, 1, 8, 8, dtype=torch.float64)
    counts = []
    for labels in ([1], [0, 2, 4]):
        att = xl.get_attributor(method)
        att.engine.chunk = 2  # no memory probe (it runs forwards too)
        calls, handle = _counting(clf)
        try:
            att.attribute(clf, x, labels)
        finally:
            handle.remove()
        counts.append(len(calls))
    assert counts[0] == counts[1]
    if method != "ablation_cam":
        assert counts == [1, 1]


def test_ablation_cam_falls_back_where_the_rest_does_not_broadcast(raw):
    """A concatenation with a tensor from before the layer: the image is repeated instead."""

    class Concat(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = torch.nn.Conv2d(1, 4, 3, padding=1)
            self.conv2 = torch.nn.Conv2d(4, 4, 3, padding=1)
            self.fc = torch.nn.Linear(8, 3)

        def forward(self, x):
            h = torch.relu(self.conv1(x))
            h = torch.cat([torch.relu(self.conv2(h)), h], dim=1)
            return self.fc(h.mean(dim=(2, 3)))

    torch.manual_seed(0)
    clf = xl.Classifier(Concat().double(), labels=list("abc"), cam_layer="conv2", min_input_size=8)
    x = _x(1, size=8)
    with assert_untouched(clf.module):
        got = xl.get_attributor("ablation_cam").attribute(clf, x, [0, 2]).values
    assert_close_to(got, reference(pgc.AblationCAM, clf, "conv2", x, [0, 2], batch_size=1))


def test_ablation_cam_errors():
    clf = small_classifier()
    x = torch.rand(2, 1, 8, 8, dtype=torch.float64)
    clf.module.fc.weight.data[1] = 0
    clf.module.fc.bias.data[1] = 0
    with pytest.raises(InputError, match="exactly 0"):
        xl.get_attributor("ablation_cam").attribute(clf, x, [1])

    class Twice(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(2, 2, 3, padding=1)
            self.fc = torch.nn.Linear(2, 2)

        def forward(self, x):
            return self.fc(self.conv(self.conv(x.expand(-1, 2, -1, -1))).mean(dim=(2, 3)))

    twice = xl.Classifier(Twice().double(), labels=["a", "b"], cam_layer="conv", min_input_size=8)
    with pytest.raises(InputError, match="r[au]ns? 2 times"):
        xl.get_attributor("ablation_cam").attribute(twice, x, [0])

    class BatchMixing(torch.nn.Module):
        """Output rows depend on the other rows of the batch: ablations would be wrong."""

        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(1, 3, 3, padding=1)
            self.fc = torch.nn.Linear(3, 2)

        def forward(self, x):
            h = torch.relu(self.conv(x))
            return self.fc((h - h.mean(dim=0, keepdim=True)).mean(dim=(2, 3))) + 1.0

    torch.manual_seed(0)
    mixing = xl.Classifier(
        BatchMixing().double(), labels=["a", "b"], cam_layer="conv", min_input_size=8
    )
    with pytest.raises(InputError, match="differs from its forward"):
        xl.get_attributor("ablation_cam").attribute(mixing, x, [0])


@pytest.mark.parametrize(
    "method, params, match",
    [
        ("grad_cam_pp", {"eps": -1.0}, "eps"),
        ("xgrad_cam", {"eps": "small"}, "eps"),
        ("ablation_cam", {"batch_size": 0}, "batch_size"),
        ("ablation_cam", {"value": "zero"}, "value"),
        ("layer_cam", {"interpolate": "cubic"}, "interpolate"),
    ],
)
def test_bad_values_are_input_errors(method, params, match):
    with pytest.raises(InputError, match=match):
        xl.get_attributor(method, **params)
