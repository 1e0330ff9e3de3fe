"""Score-CAM: equal to pytorch-grad-cam's ScoreCAM per label after its [0, 1] normalisation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from model_guard import assert_untouched, backbone, tiny_input
from pytorch_grad_cam import ScoreCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn

import xraylens as xl
from xraylens.errors import InputError

LABELS = ("a", "b", "c", "d", "e")


def net(in_channels: int = 1) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(in_channels, 6, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(6, 8, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Linear(32, len(LABELS)),
    )


def normalised(maps: torch.Tensor) -> np.ndarray:
    """pytorch-grad-cam's scale_cam_image on final maps [N, H, W]."""
    maps = maps - maps.amin((1, 2), keepdim=True)
    return (maps / (1e-7 + maps.amax((1, 2), keepdim=True))).numpy()


def grad_cam_maps(module, layer, x, target):
    cam = ScoreCAM(model=module, target_layers=[layer])
    return cam(input_tensor=x, targets=[ClassifierOutputTarget(target)] * len(x))


@pytest.mark.parametrize("layer", ["1", "3"])  # input resolution, half resolution
def test_matches_pytorch_grad_cam_every_label(layer):
    module = net()
    clf = xl.Classifier(module, LABELS, min_input_size=4, cam_layer=layer)
    x = torch.rand(2, 1, 16, 16)
    with assert_untouched(module):
        res = xl.get_attributor("score_cam").attribute(clf, x)
    assert res.values.shape == (2, 5, 1, 16, 16)
    for t in range(5):
        expected = grad_cam_maps(module, module[int(layer)], x, t)
        np.testing.assert_allclose(normalised(res.values[:, t, 0]), expected, atol=1e-5)


def test_torchvision_resnet_rgb_with_normalisation():
    from torchvision.models import resnet18

    torch.manual_seed(0)
    module = resnet18(num_classes=5).eval()
    clf = xl.Classifier(module, LABELS, in_channels=3, min_input_size=32,
                        input_mean=(0.4, 0.5, 0.6), input_std=(0.2, 0.25, 0.3))  # fmt: skip
    x = torch.rand(1, 3, 32, 32)
    res = xl.get_attributor("score_cam", layer="layer3").attribute(clf, x, [1, 4])
    assert torch.equal(res.values[0, 0, 0], res.values[0, 0, 1])
    forward = clf.forward_module()  # the [0, 1] input is masked, then normalised
    for s, t in enumerate([1, 4]):
        expected = grad_cam_maps(forward, module.layer3, x, t)
        np.testing.assert_allclose(normalised(res.values[:, s, 0]), expected, atol=1e-4)


def test_default_layer_of_a_backbone_and_max_channels():
    clf = backbone("resnet18")
    x = tiny_input(clf, n=1)
    few = xl.get_attributor("score_cam", max_channels=3)
    res = few.attribute(clf, x, [0, 5])
    assert few.engine.last_plan.n_items == 3  # three masked forwards for both labels
    everything = xl.get_attributor("score_cam", max_channels=512).attribute(clf, x, [0])
    plain = xl.get_attributor("score_cam", layer="layer4").attribute(clf, x, [0])
    torch.testing.assert_close(everything.values, plain.values)
    assert torch.isfinite(res.values).all()


def test_bad_layer_and_parameters():
    clf = xl.Classifier(net(), LABELS, min_input_size=4)
    x = torch.rand(1, 1, 8, 8)
    with pytest.raises(InputError, match="cam_layer"):
        xl.get_attributor("score_cam").attribute(clf, x)
    with pytest.raises(InputError, match="not a module"):
        xl.get_attributor("score_cam", layer="nope").attribute(clf, x)
    with pytest.raises(InputError, match=r"\[N, K, h, w\]"):
        xl.get_attributor("score_cam", layer="5").attribute(clf, x)
    with pytest.raises(InputError, match="max_channels"):
        xl.get_attributor("score_cam", max_channels=0)
    with pytest.raises(InputError, match="interpolate"):
        xl.get_attributor("score_cam", interpolate="cubic")


def test_out_of_memory_back_off(caplog):
    import logging

    class OOMAbove(nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            if x.shape[0] > 3:
                raise torch.OutOfMemoryError(f"simulated: batch {x.shape[0]}")
            return self.inner(x)

    x = torch.rand(2, 1, 16, 16)
    plain = xl.Classifier(net(), LABELS, min_input_size=4, cam_layer="3")
    expected = xl.get_attributor("score_cam").attribute(plain, x).values
    flaky = xl.Classifier(OOMAbove(net()), LABELS, min_input_size=4, cam_layer="inner.3")
    with caplog.at_level(logging.WARNING, logger="xraylens.engine"):
        got = xl.get_attributor("score_cam").attribute(flaky, x).values
    torch.testing.assert_close(got, expected)
    assert any("out of memory" in r.getMessage() for r in caplog.records)
