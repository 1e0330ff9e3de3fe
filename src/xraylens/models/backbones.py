"""The paper's five ImageNet backbones as classifier plugins.

``resnet18``, ``resnet34``, ``inception_v3`` (with auxiliary logits, as the paper) and
``densenet161`` come from torchvision; ``inception_resnet_v2`` from timm (the architecture the
paper used; with 14 classes its parameter count is the paper's 54,327,982).

Greyscale: with ``in_channels=1`` (the default) the stem convolution takes one channel. Published
3-channel weights are folded into it (kernel summed over RGB), which equals feeding the grey image
repeated three times; the ImageNet normalisation becomes the mean of the RGB statistics.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Sequence

import attrs
import torch
from torch import nn

from xraylens.core.checkpoint import is_local_weights, load_state, read_checkpoint
from xraylens.core.classifier import Classifier
from xraylens.data.labels import PAPER_LABELS
from xraylens.errors import InputError, WeightsError
from xraylens.hookspecs import hookimpl
from xraylens.models import published as pub

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@attrs.frozen
class Backbone:
    """How to build one architecture and where its parts are.

    Attributes:
        build: ``build(num_classes, in_channels) -> nn.Module`` with random weights.
        stem: state_dict key of the first convolution's kernel.
        head: state_dict key prefixes of the classification layers.
        published: ``(name) -> PublishedWeights`` resolving published weight names.
    """

    name: str
    build: Callable[[int, int], nn.Module]
    stem: str
    head: tuple[str, ...]
    min_input_size: int
    nap_layers: tuple[str, ...]
    cam_layer: str
    published: Callable[[str], pub.PublishedWeights]
    input_size: int = 512


BACKBONES: dict[str, Backbone] = {}


def register_backbone(backbone: Backbone) -> Backbone:
    """Add an architecture to the built-in classifier plugin."""
    BACKBONES[backbone.name] = backbone
    return backbone


def _restem(conv: nn.Conv2d, in_channels: int) -> nn.Conv2d:
    """The same convolution taking ``in_channels`` channels (init copied from the RGB kernel)."""
    if conv.in_channels == in_channels:
        return conv
    new = nn.Conv2d(
        in_channels,
        conv.out_channels,
        conv.kernel_size,
        conv.stride,
        conv.padding,
        conv.dilation,
        conv.groups,
        conv.bias is not None,
        conv.padding_mode,
    )
    with torch.no_grad():
        new.weight.copy_(conv.weight[:, torch.arange(in_channels) % conv.in_channels])
        if conv.bias is not None:
            new.bias.copy_(conv.bias)
    return new


def _torchvision(arch: str, stem_attr: str, **kwargs) -> Callable[[int, int], nn.Module]:
    def build(num_classes: int, in_channels: int) -> nn.Module:
        import torchvision

        model = getattr(torchvision.models, arch)(weights=None, num_classes=num_classes, **kwargs)
        parent_name, _, attr = stem_attr.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, attr, _restem(getattr(parent, attr), in_channels))
        return model

    return build


def _timm(arch: str) -> Callable[[int, int], nn.Module]:
    def build(num_classes: int, in_channels: int) -> nn.Module:
        import timm

        return timm.create_model(
            arch, pretrained=False, num_classes=num_classes, in_chans=in_channels
        )

    return build


_RESNET_LAYERS = ("maxpool", "layer1", "layer2", "layer3", "layer4")

for _arch in ("resnet18", "resnet34"):
    register_backbone(
        Backbone(
            name=_arch,
            build=_torchvision(_arch, "conv1"),
            stem="conv1.weight",
            head=("fc.",),
            min_input_size=32,
            nap_layers=_RESNET_LAYERS,
            cam_layer="layer4",
            published=functools.partial(pub.torchvision_weights, _arch),
        )
    )

register_backbone(
    Backbone(
        name="inception_v3",
        build=_torchvision(
            "inception_v3",
            "Conv2d_1a_3x3.conv",
            aux_logits=True,
            transform_input=False,
            init_weights=True,
        ),
        stem="Conv2d_1a_3x3.conv.weight",
        head=("fc.", "AuxLogits.fc."),
        min_input_size=75,
        nap_layers=("maxpool2", "Mixed_5d", "Mixed_6a", "Mixed_6e", "Mixed_7a", "Mixed_7c"),
        cam_layer="Mixed_7c",
        # Google's weights expect (x - 0.5) / 0.5: torchvision's transform_input does that from
        # ImageNet-normalised input, we do it from [0, 1] input directly.
        published=functools.partial(
            pub.torchvision_weights, "inception_v3", mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)
        ),
    )
)

register_backbone(
    Backbone(
        name="inception_resnet_v2",
        build=_timm("inception_resnet_v2"),
        stem="conv2d_1a.conv.weight",
        head=("classif.",),
        min_input_size=75,
        nap_layers=(
            "maxpool_5a",
            "mixed_5b",
            "repeat",
            "mixed_6a",
            "repeat_1",
            "mixed_7a",
            "repeat_2",
            "conv2d_7b",
        ),
        cam_layer="conv2d_7b",
        published=functools.partial(pub.timm_weights, "inception_resnet_v2"),
    )
)

register_backbone(
    Backbone(
        name="densenet161",
        build=_torchvision("densenet161", "features.conv0"),
        stem="features.conv0.weight",
        head=("classifier.",),
        min_input_size=32,
        nap_layers=(
            "features.pool0",
            "features.denseblock1",
            "features.denseblock2",
            "features.denseblock3",
            "features.denseblock4",
        ),
        cam_layer="features",
        published=functools.partial(pub.torchvision_weights, "densenet161"),
    )
)


@attrs.define(eq=False, repr=False)
class BackboneClassifier(Classifier):
    """A :class:`Classifier` built from a registered :class:`Backbone`.

    ``weights`` records where the weights came from (None: random initialisation).
    """

    weights: str | None = attrs.field(default=None, kw_only=True)


def _grey(values: Sequence[float], in_channels: int) -> tuple[float, ...]:
    if in_channels == len(values):
        return tuple(values)
    mean = sum(values) / len(values)
    return (mean,) * in_channels


def _normalisation(
    normalize, in_channels: int, published: pub.PublishedWeights | None, meta: dict | None
):
    if normalize == "auto":
        if published is not None:
            return _grey(published.mean, in_channels), _grey(published.std, in_channels)
        if meta and meta.get("input_mean") is not None:
            return tuple(meta["input_mean"]), tuple(meta["input_std"])
        return None, None
    if normalize is None:
        return None, None
    if normalize == "imagenet":
        return _grey(IMAGENET_MEAN, in_channels), _grey(IMAGENET_STD, in_channels)
    try:
        mean, std = normalize
        return _grey(tuple(mean), in_channels), _grey(tuple(std), in_channels)
    except (TypeError, ValueError):
        raise InputError(
            f"normalize must be 'auto', None, 'imagenet' or (mean, std), got {normalize!r}"
        ) from None


def _resolve_labels(num_classes, labels, meta) -> tuple[str, ...]:
    if labels is not None:
        labels = tuple(labels)
        if num_classes is not None and num_classes != len(labels):
            raise InputError(f"num_classes={num_classes} but {len(labels)} labels were given")
        return labels
    if meta and meta.get("labels") and num_classes in (None, len(meta["labels"])):
        return tuple(meta["labels"])
    if num_classes is None or num_classes == len(PAPER_LABELS):
        return PAPER_LABELS
    if not isinstance(num_classes, int) or num_classes < 1:
        raise InputError(f"num_classes must be a positive int, got {num_classes!r}")
    return tuple(f"class_{i}" for i in range(num_classes))


def build_classifier(
    name: str,
    *,
    num_classes: int | None = None,
    labels: Sequence[str] | None = None,
    in_channels: int | None = None,
    weights: str | os.PathLike | None = None,
    normalize="auto",
    input_size: int | None = None,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
) -> BackboneClassifier:
    """Build a registered backbone as a classifier.

    Args:
        num_classes: number of outputs (default: from ``labels``, the checkpoint, or 14).
        labels: label names (default: the checkpoint's, or the paper's 14 labels).
        in_channels: input channels (default: the checkpoint's, or 1 for greyscale).
        weights: None (random init), a local ``.pt``/``.pth``/``.safetensors`` file, or the
            name of published weights (``"imagenet"``, ``"IMAGENET1K_V1"``, ...; needs internet).
        normalize: ``"auto"`` (the published weights' statistics, the checkpoint's, else none),
            None, ``"imagenet"`` or ``(mean, std)``.
        input_size: default input side in pixels (default 512, the paper's).
    """
    backbone = BACKBONES[name]
    meta, state, published, source = None, None, None, None
    if weights is not None:
        if is_local_weights(weights):
            state, meta = read_checkpoint(weights)
            source = os.fspath(weights)
        else:
            published = backbone.published(str(weights))
            source = published.name
    if in_channels is None:
        in_channels = int(meta["in_channels"]) if meta and meta.get("in_channels") else 1
    if not isinstance(in_channels, int) or in_channels < 1:
        raise InputError(f"in_channels must be a positive int, got {in_channels!r}")
    labels = _resolve_labels(num_classes, labels, meta)
    module = backbone.build(len(labels), in_channels)
    if published is not None:
        state = published.download()
    if state is not None:
        load_state(
            module,
            state,
            source,
            stem=backbone.stem,
            head=backbone.head,
            replace_head=published is not None,
        )
    if dtype is not None:
        module.to(dtype=dtype)
    if device is not None:
        module.to(device=device)
    mean, std = _normalisation(normalize, in_channels, published, meta)
    if input_size is None:
        input_size = int(meta["input_size"]) if meta and meta.get("input_size") else 512
    return BackboneClassifier(
        module,
        labels,
        in_channels=in_channels,
        input_size=input_size,
        min_input_size=backbone.min_input_size,
        nap_layers=backbone.nap_layers,
        cam_layer=backbone.cam_layer,
        input_mean=mean,
        input_std=std,
        name=name,
        weights=source,
    )


@hookimpl
def register_classifiers(register):
    for name in BACKBONES:
        register(name, functools.partial(build_classifier, name))


__all__ = [
    "BACKBONES",
    "Backbone",
    "BackboneClassifier",
    "WeightsError",
    "build_classifier",
    "register_backbone",
]
