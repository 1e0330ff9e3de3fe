"""A zoo of models xraylens did not write, for "every method right on any model" tests.

Each entry builds a random-init torchvision / timm model at a small size (a few layers, small
inputs) wrapped as an :class:`xraylens.Classifier` with 5 labels and 3 input channels. The
families cover what breaks attribution rules: squeeze-and-excitation gates (products of two
input-dependent tensors), Hardswish/Hardsigmoid, SiLU, GELU, LayerNorm, attention (fused via
``F.scaled_dot_product_attention`` and unfused), Swin's channels-last blocks, a DenseNet with a
functional in-place ReLU after its features, and elementwise activations as modules and as
functions. BatchNorm statistics are randomised (see :func:`model_guard.randomize_batchnorm`) so
that every non-linearity is active somewhere.

``ZOO`` maps a name to a :class:`ZooEntry`; :func:`zoo_model` builds (and caches) one.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import attrs
import torch
import torch.nn.functional as F
from model_guard import randomize_batchnorm
from torch import nn

import xraylens as xl

N_LABELS = 5


@attrs.frozen
class ZooEntry:
    """How to build one zoo model: ``build() -> nn.Module`` taking [N, 3, size, size]."""

    build: Callable[[], nn.Module]
    size: int
    family: str
    cam_layers: tuple[str, ...] = ()  # layers worth testing Grad-CAM on (names in the module)


class ActivationZoo(nn.Module):
    """Every elementwise activation, as modules and as functions, between 1x1 convolutions."""

    MODULES = (
        nn.ReLU,
        nn.ReLU6,
        nn.LeakyReLU,
        nn.ELU,
        nn.SELU,
        nn.CELU,
        nn.GELU,
        nn.SiLU,
        nn.Mish,
        nn.Sigmoid,
        nn.Tanh,
        nn.Softplus,
        nn.Hardtanh,
        nn.Hardswish,
        nn.Hardsigmoid,
    )
    FUNCTIONS = (
        F.relu,
        F.gelu,
        lambda t: F.gelu(t, approximate="tanh"),
        F.silu,
        F.mish,
        F.softplus,
        F.elu,
        lambda t: F.leaky_relu(t, 0.1),
        torch.sigmoid,
        torch.tanh,
        F.hardswish,
        F.hardsigmoid,
    )

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.mods = nn.ModuleList(m() for m in self.MODULES)
        self.mixers = nn.ModuleList(
            nn.Conv2d(8, 8, 1) for _ in range(len(self.MODULES) + len(self.FUNCTIONS))
        )
        self.head = nn.Linear(8, N_LABELS)

    def forward(self, x):
        x = self.stem(x)
        mixers = iter(self.mixers)
        for act in self.mods:
            x = next(mixers)(act(x))
        for fn in self.FUNCTIONS:
            x = next(mixers)(fn(x))
        return self.head(x.mean((2, 3)))


def _tv(name: str, **kw) -> Callable[[], nn.Module]:
    def build():
        import torchvision

        return torchvision.models.get_model(name, weights=None, num_classes=N_LABELS, **kw)

    return build


def _timm(name: str, **kw) -> Callable[[], nn.Module]:
    def build():
        import timm

        return timm.create_model(name, pretrained=False, num_classes=N_LABELS, **kw)

    return build


def _convnext() -> nn.Module:
    from torchvision.models.convnext import CNBlockConfig, ConvNeXt

    return ConvNeXt([CNBlockConfig(16, 32, 1), CNBlockConfig(32, None, 1)], num_classes=N_LABELS)


def _tv_vit() -> nn.Module:
    from torchvision.models.vision_transformer import VisionTransformer

    return VisionTransformer(
        image_size=32,
        patch_size=8,
        num_layers=2,
        num_heads=2,
        hidden_dim=32,
        mlp_dim=64,
        num_classes=N_LABELS,
    )


def _timm_vit(fused: bool) -> Callable[[], nn.Module]:
    def build():
        import timm

        model = timm.create_model(
            "vit_tiny_patch16_224",
            pretrained=False,
            num_classes=N_LABELS,
            img_size=32,
            patch_size=8,
            depth=2,
            embed_dim=32,
            num_heads=2,
        )
        for m in model.modules():
            if hasattr(m, "fused_attn"):
                m.fused_attn = fused
        return model

    return build


def _swin() -> nn.Module:
    from torchvision.models.swin_transformer import SwinTransformer

    return SwinTransformer(
        patch_size=[4, 4],
        embed_dim=16,
        depths=[1, 1],
        num_heads=[2, 2],
        window_size=[4, 4],
        num_classes=N_LABELS,
    )


def _densenet() -> nn.Module:
    from torchvision.models import DenseNet

    # torchvision's DenseNet.forward runs F.relu(features, inplace=True) after `features`
    return DenseNet(growth_rate=8, block_config=(2, 2), num_init_features=16, num_classes=N_LABELS)


ZOO: dict[str, ZooEntry] = {
    "activations": ZooEntry(ActivationZoo, 16, "elementwise", ("stem", "mods.0")),
    "resnet18_tv": ZooEntry(_tv("resnet18"), 32, "relu", ("layer4", "layer3.1.bn2", "relu")),
    "mobilenet_v3_small": ZooEntry(
        _tv("mobilenet_v3_small"), 32, "se_hardswish", ("features.12", "features.12.0")
    ),
    "efficientnet_b0": ZooEntry(_tv("efficientnet_b0"), 32, "se_silu", ("features.8",)),
    "regnet_y_400mf": ZooEntry(_tv("regnet_y_400mf"), 32, "se_relu", ("trunk_output",)),
    "ghostnet_050": ZooEntry(_timm("ghostnet_050"), 32, "se_ghost", ("blocks.9",)),
    "convnext_small_cfg": ZooEntry(_convnext, 32, "layernorm_gelu", ("features.3",)),
    "densenet_small": ZooEntry(_densenet, 32, "densenet_inplace", ("features", "features.norm5")),
    "vit_tv": ZooEntry(_tv_vit, 32, "attention_mha", ("encoder.layers.encoder_layer_1",)),
    "vit_timm_fused": ZooEntry(_timm_vit(True), 32, "attention_sdpa", ("blocks.1",)),
    "vit_timm_unfused": ZooEntry(_timm_vit(False), 32, "attention_unfused", ("blocks.1",)),
    "swin_small_cfg": ZooEntry(_swin, 32, "swin_nhwc", ("features.3",)),
}


@functools.cache
def zoo_model(name: str, dtype: torch.dtype = torch.float64) -> xl.Classifier:
    """The zoo model ``name`` as a Classifier (random init, randomised BatchNorm; eval mode).

    Cached per session: do not modify the returned classifier.
    """
    entry = ZOO[name]
    torch.manual_seed(0)
    module = entry.build().to(dtype).eval()
    example = torch.rand(
        4, 3, entry.size, entry.size, dtype=dtype, generator=torch.Generator().manual_seed(1)
    )
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():  # zero-initialised heads (torchvision ViT) would make every map 0
        for p in module.parameters():
            if p.dim() > 1 and not p.any():
                p.copy_(torch.randn(p.shape, generator=g, dtype=dtype) * 0.1)
    randomize_batchnorm(module, 0, example)
    return xl.Classifier(
        module,
        labels=[f"l{i}" for i in range(N_LABELS)],
        in_channels=3,
        min_input_size=entry.size,
        name=name,
    )


def zoo_input(clf: xl.Classifier, n: int = 2, seed: int = 0) -> torch.Tensor:
    """``n`` random images [n, 3, size, size] in [0, 1] for a zoo classifier."""
    s = clf.min_input_size
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, s, s, generator=g, dtype=clf.dtype)
