"""Every method except DeepLIFT equals its reference on every zoo model (models we did not write).

- Gradient methods: Captum called once per label on the caller's model; guided backprop,
  deconvolution and guided Grad-CAM on Captum's terms (the structural surgery copy, every
  ReLU its own non-inplace module).
- Grad-CAM: Captum's ``LayerGradCam`` at several layers per model, chosen to break naive
  hooking: a convolution followed by a batch norm (merging the BN would change the output),
  a batch norm, a ReLU module (in-place in torchvision), and layers whose output is changed
  in place later (ResNet's ``out += identity`` after ``bn2``, DenseNet's functional
  ``F.relu(features, inplace=True)``).
- Token and channels-last layers (ViT, Swin), where Captum's ``LayerGradCam`` has no notion of
  layout: pytorch-grad-cam with the ``reshape_transform`` its documentation gives for them.

Tolerance: 1e-6 of the reference's largest value (float64 models, float32 maps).
"""

from __future__ import annotations

import captum.attr as ca
import pytest
import torch
import torch.nn.functional as F
from model_guard import assert_untouched
from test_attr_captum import captum_maps, module_layer
from torch import nn
from zoo import ZOO, zoo_input, zoo_model

import xraylens as xl

LABELS = [0, 3]

METHODS = {
    "saliency": {"abs": False},
    "input_x_gradient": {},
    "integrated_gradients": {"n_steps": 4, "baseline": 0.25},
    "gradient_shap": {"n_samples": 3, "stdevs": 0.1, "seed": None},
    "guided_backprop": {},
    "deconvolution": {},
    "guided_grad_cam": {"interpolate": "nearest"},
}

#: models where a guided method refuses (InputError) rather than give a wrong map; Captum runs
#: there but silently: its hooks never see these ReLUs, so its "guided" map is partly plain
GUIDED_REFUSES = {
    "activations": "F.relu called from a loop over functions: surgery cannot make it a module",
}

#: per model: (layer, what it tests); all equal Captum's LayerGradCam
CNN_LAYERS = {
    "activations": [("stem", "conv"), ("mods.0", "ReLU module")],
    "resnet18_tv": [
        ("layer3", "default CAM layer at 32 px"),
        ("layer3.1.conv2", "conv followed by BatchNorm"),
        ("layer3.1.bn2", "BatchNorm followed by in-place +="),
        ("relu", "in-place ReLU module"),
        ("layer4", "1x1 map"),
    ],
    "mobilenet_v3_small": [
        ("features.9.block.0.0", "conv followed by BatchNorm"),
        ("features.9.block.0.1", "BatchNorm"),
        ("features.9.block.0.2", "Hardswish module"),
    ],
    "efficientnet_b0": [("features.6.0.block.0", "Conv-BN-SiLU block")],
    "regnet_y_400mf": [("trunk_output.block4.block4-0.f.a", "block"), ("stem.1", "BatchNorm")],
    "ghostnet_050": [("blocks.7.0.ghost1", "ghost module")],
    "convnext_small_cfg": [("features.3", "stage")],
    "densenet_small": [
        ("features", "followed by F.relu(inplace=True)"),
        ("features.norm5", "BatchNorm, then F.relu(inplace=True)"),
        ("features.denseblock2.denselayer2.conv2", "conv"),
    ],
    "vit_tv": [("conv_proj", "patch embedding conv")],
}

#: per model: (layer, pytorch-grad-cam reshape_transform)
TOKEN_LAYERS = {
    "vit_tv": ("encoder.layers.encoder_layer_0", "cls"),
    "vit_timm_fused": ("blocks.0", "cls"),
    "vit_timm_unfused": ("blocks.1.norm1", "cls"),
    "swin_small_cfg": ("features.3", "nhwc"),
}

#: the default CAM layer (no layer given, no cam_layer on the classifier), at 32 px
DEFAULT_LAYERS = {
    "resnet18_tv": "layer3",
    "densenet_small": "features",
    "convnext_small_cfg": "features",
    "swin_small_cfg": "permute",
    "mobilenet_v3_small": "features.9.block.0",
}


def _compare(method, clf, x, params, seed=False):
    att = xl.get_attributor(method, **params)
    if seed:
        torch.manual_seed(0)
    with assert_untouched(clf.module):
        res = att.attribute(clf, x, LABELS)
    ref, _ = captum_maps(method, clf, x, att.params, LABELS)
    scale = float(ref.abs().max())
    assert scale > 0
    torch.testing.assert_close(res.values.double(), ref.double(), rtol=0, atol=1e-6 * scale)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("name", ZOO)
def test_method_equals_captum_per_label(name, method):
    clf = zoo_model(name)
    x = zoo_input(clf)
    params = dict(METHODS[method])
    if method == "gradient_shap":
        params["baselines"] = zoo_input(clf, n=3, seed=7)
    if method == "guided_grad_cam":
        params["layer"] = (CNN_LAYERS.get(name) or [(ZOO[name].cam_layers[0], "")])[0][0]
        if name in TOKEN_LAYERS and name not in CNN_LAYERS:
            pytest.skip(
                "Captum's GuidedGradCam fails on a token layer (its interpolate needs "
                "[N, K, h, w]) and misreads Swin's [N, h, w, K]: compared with guided backprop "
                "x pytorch-grad-cam in test_guided_grad_cam_on_token_layers"
            )
    if name in GUIDED_REFUSES and method in ("guided_backprop", "deconvolution", "guided_grad_cam"):
        with pytest.raises(xl.InputError, match="relu"):
            xl.get_attributor(method, **params).attribute(clf, x, LABELS)
        return
    _compare(method, clf, x, params, seed=method == "gradient_shap")


#: our layers plus the zoo's own ``cam_layers`` of the convolutional models (the zoo's token
#: layers are last blocks, whose patch tokens the head never reads: an all-zero CAM)
CNN_CASES = list(
    dict.fromkeys(
        [(m, layer) for m, layers in CNN_LAYERS.items() for layer, _ in layers]
        + [(m, layer) for m, e in ZOO.items() if m not in TOKEN_LAYERS for layer in e.cam_layers]
    )
)


@pytest.mark.parametrize(("name", "layer"), CNN_CASES)
def test_grad_cam_equals_captum_at_layer(name, layer):
    clf = zoo_model(name)
    x = zoo_input(clf)
    _compare("grad_cam", clf, x, {"layer": layer, "relu": False, "interpolate": "bilinear"})


GUIDED_CASES = [
    ("resnet18_tv", "relu"),  # crashed inside autograd before (the rules replace its output)
    ("resnet18_tv", "layer3.1.bn2"),
    ("mobilenet_v3_small", "features.9.block.0.0"),  # conv followed by BatchNorm
    ("densenet_small", "features"),
]


@pytest.mark.parametrize(("name", "layer"), GUIDED_CASES)
def test_guided_grad_cam_equals_captum_at_layer(name, layer):
    clf = zoo_model(name)
    _compare("guided_grad_cam", clf, zoo_input(clf), {"layer": layer, "interpolate": "nearest"})


def _reshape_transform(kind: str, grid: int):
    if kind == "nhwc":
        return lambda t: t.permute(0, 3, 1, 2)
    return lambda t: t[:, 1:].reshape(t.shape[0], grid, grid, t.shape[2]).permute(0, 3, 1, 2)


def pytorch_grad_cam_maps(clf, x, layer: str, kind: str, relu: bool) -> torch.Tensor:
    """pytorch-grad-cam's unscaled Grad-CAM per label, upsampled bilinearly: [N, T, C, H, W]."""
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    module = clf.forward_module()
    target = module_layer(module, layer)
    grid = clf.min_input_size // 8  # zoo ViTs: patch size 8 (Swin layers are NHWC: unused)
    maps = []
    for t in LABELS:
        cam = GradCAM(module, [target], reshape_transform=_reshape_transform(kind, grid))
        out = cam.activations_and_grads(x)
        cam.model.zero_grad()
        sum(ClassifierOutputTarget(t)(o) for o in out).backward()
        act = cam.activations_and_grads.activations[0]
        grad = cam.activations_and_grads.gradients[0]
        raw = cam.get_cam_image(x, target, None, act.numpy(), grad.numpy())
        raw = torch.as_tensor(raw)[:, None]
        cam.activations_and_grads.release()
        if relu:
            raw = raw.clamp_min(0)
        up = F.interpolate(raw, size=x.shape[-2:], mode="bilinear")
        maps.append(up.expand(-1, x.shape[1], -1, -1))
    return torch.stack(maps, 1)


#: more token / NHWC layers per model (norms, attention outputs, Swin's patch embedding)
MORE_TOKEN_LAYERS = [
    ("vit_tv", "encoder.layers.encoder_layer_1.ln_1", "cls"),
    ("vit_timm_fused", "blocks.1.norm1", "cls"),
    ("vit_timm_unfused", "blocks.0.attn", "cls"),
    ("swin_small_cfg", "features.1", "nhwc"),
    ("swin_small_cfg", "features.0", "nhwc"),
]
TOKEN_CASES = [(m, layer, kind) for m, (layer, kind) in TOKEN_LAYERS.items()] + MORE_TOKEN_LAYERS


@pytest.mark.parametrize(("name", "layer", "kind"), TOKEN_CASES)
def test_grad_cam_on_token_and_channels_last_layers_equals_pytorch_grad_cam(name, layer, kind):
    clf = zoo_model(name)
    x = zoo_input(clf)
    att = xl.get_attributor("grad_cam", layer=layer, relu=False)  # layout auto-detected
    with assert_untouched(clf.module):
        res = att.attribute(clf, x, LABELS)
    ref = pytorch_grad_cam_maps(clf, x, layer, kind, relu=False)
    scale = float(ref.abs().max())
    assert scale > 0
    torch.testing.assert_close(res.values.double(), ref.double(), rtol=0, atol=1e-6 * scale)
    explicit = {"cls": {"reshape": "tokens", "prefix_tokens": 1}, "nhwc": {"reshape": "nhwc"}}
    again = xl.get_attributor("grad_cam", layer=layer, relu=False, **explicit[kind])
    torch.testing.assert_close(again.attribute(clf, x, LABELS).values, res.values)


@pytest.mark.parametrize("name", TOKEN_LAYERS)
def test_guided_grad_cam_on_token_layers(name):
    """Guided Grad-CAM = guided backprop x the ReLU-ed CAM (pytorch-grad-cam's, upsampled)."""
    clf = zoo_model(name)
    x = zoo_input(clf)
    layer, kind = TOKEN_LAYERS[name]
    res = xl.get_attributor("guided_grad_cam", layer=layer).attribute(clf, x, LABELS)
    guided = xl.get_attributor("guided_backprop").attribute(clf, x, LABELS).values
    ref = guided.double() * pytorch_grad_cam_maps(clf, x, layer, kind, relu=True)
    scale = float(ref.abs().max())
    assert scale > 0
    torch.testing.assert_close(res.values.double(), ref, rtol=0, atol=1e-6 * scale)


def test_captum_layer_grad_cam_misreads_a_channels_last_layer():
    """Why the layout matters: Captum averages Swin's [N, h, w, K] over the wrong axes."""
    clf = zoo_model("swin_small_cfg")
    x = zoo_input(clf)
    ours = xl.get_attributor("grad_cam", layer="features.3", relu=False).attribute(clf, x, [0])
    module = clf.forward_module()
    naive = ca.LayerGradCam(module, module_layer(module, "features.3")).attribute(x, target=0)
    assert naive.shape[1:] == (1, 4, 32)  # "channels" = rows, "width" = channels
    assert ours.values.shape == (2, 1, 3, 32, 32)


@pytest.mark.parametrize("name", DEFAULT_LAYERS)
def test_default_cam_layer_is_the_last_spatial_module(name):
    clf = zoo_model(name)
    assert clf.cam_layer is None
    x = zoo_input(clf)
    default = xl.get_attributor("grad_cam").attribute(clf, x, LABELS).values
    explicit = xl.get_attributor("grad_cam", layer=DEFAULT_LAYERS[name]).attribute(clf, x, LABELS)
    assert default.abs().max() > 0
    torch.testing.assert_close(default, explicit.values)


def test_no_default_cam_layer_on_a_token_model_is_an_error():
    clf = zoo_model("vit_timm_fused")
    with pytest.raises(xl.InputError, match="layer=") as err:
        xl.get_attributor("grad_cam").attribute(clf, zoo_input(clf), LABELS)
    assert "spatial 4-D" in str(err.value)


class _Cube(nn.Module):
    """A layer output [N, 4, 4, 4]: NCHW and NHWC both fit a 16 px input."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 4, stride=4)
        self.mix = nn.Identity()  # layout-agnostic: no tie-break
        self.head = nn.Linear(64, 5)

    def forward(self, x):
        return self.head(self.mix(self.conv(x)).flatten(1))


def _cube() -> xl.Classifier:
    torch.manual_seed(0)
    module = _Cube().double().eval()
    return xl.Classifier(
        module, labels=[f"l{i}" for i in range(5)], in_channels=3, min_input_size=16
    )


def test_an_ambiguous_layout_is_an_error_and_reshape_resolves_it():
    clf = _cube()
    x = torch.rand(2, 3, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    with assert_untouched(clf.module), pytest.raises(xl.InputError, match="reshape='nchw' or"):
        xl.get_attributor("grad_cam", layer="mix").attribute(clf, x, LABELS)
    # the convolution itself is NCHW by definition: no ambiguity
    conv = xl.get_attributor("grad_cam", layer="conv", relu=False).attribute(clf, x, LABELS)
    mix = xl.get_attributor("grad_cam", layer="mix", relu=False, reshape="nchw")
    torch.testing.assert_close(mix.attribute(clf, x, LABELS).values, conv.values)
    _compare("grad_cam", clf, x, {"layer": "mix", "relu": False, "reshape": "nchw"})


def test_layout_errors_name_the_layer_and_the_cause():
    clf = zoo_model("vit_tv")
    x = zoo_input(clf)
    layer = TOKEN_LAYERS["vit_tv"][0]
    with pytest.raises(xl.InputError, match="needs a 4-D output"):
        xl.get_attributor("grad_cam", layer=layer, reshape="nhwc").attribute(clf, x, LABELS)
    with pytest.raises(xl.InputError, match="17 tokens are no h x w grid"):
        xl.get_attributor("grad_cam", layer=layer, prefix_tokens=2).attribute(clf, x, LABELS)
    with pytest.raises(xl.InputError, match="prefix_tokens must be"):
        xl.get_attributor("grad_cam", prefix_tokens=-1)
    with pytest.raises(xl.InputError, match="reshape"):
        xl.get_attributor("grad_cam", reshape="nwhc")


def test_a_layer_that_runs_twice_is_refused():
    clf = zoo_model("resnet18_tv")
    x = zoo_input(clf)
    for method in ("grad_cam", "guided_grad_cam"):  # BasicBlock calls self.relu twice
        with (
            assert_untouched(clf.module),
            pytest.raises(xl.InputError, match=r"'layer2.1.relu' \(ReLU\) runs 2 times"),
        ):
            xl.get_attributor(method, layer="layer2.1.relu").attribute(clf, x, LABELS)
