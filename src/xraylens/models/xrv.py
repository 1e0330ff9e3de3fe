"""TorchXRayVision's chest X-ray models as classifiers (optional extra ``xrv``).

``pip install "xraylens[xrv]"`` adds two classifiers through the entry-point group ``xraylens``
(registered only when ``torchxrayvision`` is installed; otherwise nothing, quietly):

- ``xrv_densenet121``: DenseNet121 with ``weights=None`` (random) or one of TorchXRayVision's
  weight sets (``"densenet121-res224-all"``, ``-nih``, ``-pc``, ``-chex``, ``-rsna``,
  ``-mimic_nb``, ``-mimic_ch``), native resolution 224;
- ``xrv_resnet50``: ResNet50, ``weights=None`` (random, built offline) or
  ``"resnet50-res512-all"``, native resolution 512.

What the wrapper (:class:`XRVModule`) does so that every method explains these models exactly:
inputs in [0, 1] become TorchXRayVision's [-1024, 1024] (``x * 2048 - 1024``) and, with
``resize=True``, are resized to the native resolution as TorchXRayVision does (bilinear,
antialiased: linear, so DeepLIFT stays exact; by default the network sees the input as given,
so give it ``clf.input_size`` pixels, and tests at small sizes stay cheap); the outputs are
logits (no sigmoid, no operating-point calibration: ``op_threshs=None``,
``apply_sigmoid=False``) of the weight set's pathologies only (empty slots dropped). The final
ReLU is a module, so DeepLIFT and guided backprop see it (TorchXRayVision calls
``F.relu(..., inplace=True)`` in its own forward, whose resolution check torch.fx cannot trace).

Published weights are TorchXRayVision's own files, downloaded by it to ``cache_dir`` (default
``~/.torchxrayvision/models_data``) on first use; a file already there is used offline.
``weights`` may also be a local ``.pt``/``.pth``/``.safetensors`` state_dict (e.g. written by
``clf.save``); ``labels`` then names its output slots ("" for an empty one).
"""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
import os
import warnings
from collections.abc import Sequence

import attrs
import torch
import torch.nn.functional as F
from torch import nn

from xraylens.core.classifier import Classifier
from xraylens.errors import InputError, WeightsError
from xraylens.hookspecs import hookimpl
from xraylens.models.weights import is_local_weights, load_state, read_checkpoint

MIN_VERSION = (1, 2)

#: arch -> (native resolution, NAP layers, CAM layer)
ARCHS = {
    "densenet121": (
        224,
        tuple(
            f"features.{v}"
            for v in ("pool0", "denseblock1", "denseblock2", "denseblock3", "denseblock4")
        ),
        "features",
    ),
    "resnet50": (
        512,
        tuple(f"model.{v}" for v in ("maxpool", "layer1", "layer2", "layer3", "layer4")),
        "model.layer4",
    ),
}


def import_xrv():
    """``torchxrayvision``, imported without its process-wide ``warnings.filterwarnings
    ("ignore")`` (which would silence every warning of xraylens and of the user)."""
    with warnings.catch_warnings():
        try:
            import torchxrayvision
        except ImportError as exc:
            raise InputError(
                f'TorchXRayVision models need the xrv extra: pip install "xraylens[xrv]" ({exc})'
            ) from exc
    return torchxrayvision


class XRVModule(nn.Module):
    """[N, 1, H, W] in [0, 1] -> logits of the kept pathology slots [N, L].

    Children: DenseNet121 ``features`` (TorchXRayVision's), ``relu``, ``pool`` and
    ``classifier``; ResNet50 ``model`` (a torchvision ResNet50 with a 1-channel stem).
    Buffer ``keep`` [L]: the output slot of each label.
    """

    def __init__(self, arch: str, parts: dict[str, nn.Module], keep: Sequence[int], resize: bool):
        super().__init__()
        self.arch = arch
        self.resolution = ARCHS[arch][0] if resize else None
        for name, part in parts.items():
            self.add_module(name, part)
        self.register_buffer("keep", torch.tensor(list(keep), dtype=torch.long), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x * 2048.0 - 1024.0  # TorchXRayVision's pixel range
        if self.resolution is not None and tuple(x.shape[-2:]) != (self.resolution,) * 2:
            if x.shape[-2] != x.shape[-1]:
                raise InputError(
                    f"TorchXRayVision models need square images, got {tuple(x.shape[-2:])}"
                )
            size = (self.resolution, self.resolution)
            x = F.interpolate(x, size=size, mode="bilinear", antialias=True)
        if self.arch == "densenet121":
            out = self.pool(self.relu(self.features(x))).flatten(1)
            out = self.classifier(out)
        else:
            out = self.model(x)
        return out.index_select(1, self.keep)


@attrs.define(eq=False, repr=False)
class XRVClassifier(Classifier):
    """A TorchXRayVision model as a :class:`Classifier`.

    ``weights``: where the weights came from (None: random); ``slots``: the network's 18
    output names ("" for an empty slot; the classifier's labels are the non-empty ones).
    """

    weights: str | None = attrs.field(default=None, kw_only=True)
    slots: tuple[str, ...] = attrs.field(default=(), converter=tuple, kw_only=True)


def _parts(arch: str, xrv_model: nn.Module) -> dict[str, nn.Module]:
    if arch == "densenet121":
        return {
            "features": xrv_model.features,
            "relu": nn.ReLU(),
            "pool": nn.AdaptiveAvgPool2d(1),
            "classifier": xrv_model.classifier,
        }
    return {"model": xrv_model.model}


def _arch_of(xrv_model: nn.Module) -> str:
    if hasattr(xrv_model, "features") and hasattr(xrv_model, "classifier"):
        return "densenet121"
    if isinstance(getattr(xrv_model, "model", None), nn.Module) and hasattr(xrv_model.model, "fc"):
        return "resnet50"
    raise InputError(f"not a TorchXRayVision DenseNet or ResNet: {type(xrv_model).__name__}")


def from_xrv(
    xrv_model: nn.Module,
    *,
    slots: Sequence[str] | None = None,
    resize: bool = False,
    weights: str | None = None,
    name: str | None = None,
) -> XRVClassifier:
    """Wrap a TorchXRayVision ``DenseNet`` or ``ResNet`` object (its layers are shared).

    Args:
        slots: the network's output names (default: its ``targets``); "" marks an empty slot.
        resize: resize inputs to the native resolution inside the model, as TorchXRayVision
            does (default: inputs as given; give them ``clf.input_size`` pixels).
    """
    arch = _arch_of(xrv_model)
    slots = tuple(str(s) for s in (xrv_model.targets if slots is None else slots))
    head = xrv_model.classifier if arch == "densenet121" else xrv_model.model.fc
    if len(slots) != head.out_features:
        raise InputError(f"{len(slots)} slot names for a network with {head.out_features} outputs")
    keep = [i for i, s in enumerate(slots) if s]
    if not keep:
        raise InputError("every output slot is empty: nothing to explain")
    resolution, nap_layers, cam_layer = ARCHS[arch]
    first = next(xrv_model.parameters())
    module = XRVModule(arch, _parts(arch, xrv_model), keep, resize).to(first.device)
    return XRVClassifier(
        module,
        [slots[i] for i in keep],
        in_channels=1,
        input_size=resolution,
        min_input_size=32,
        nap_layers=nap_layers,
        cam_layer=cam_layer,
        name=name or f"xrv_{arch}",
        weights=weights,
        slots=slots,
    )


def _published(xrv, arch: str) -> list[str]:
    prefix = "densenet121-res224-" if arch == "densenet121" else "resnet50-"
    return sorted(k for k in xrv.models.model_urls if k.startswith(prefix))


def _random(xrv, arch: str, slots: tuple[str, ...]) -> nn.Module:
    """The architecture with random weights and ``len(slots)`` outputs, built offline."""
    if arch == "densenet121":
        net = xrv.models.DenseNet(weights=None, num_classes=len(slots))
    else:
        import torchvision

        # xrv.models.ResNet downloads in __init__; this is the same network (its ``model``)
        net = nn.Module()
        net.model = torchvision.models.resnet50(weights=None, num_classes=len(slots))
        net.model.conv1 = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
    net.targets = list(slots)
    return net


def _download(xrv, arch: str, name: str, cache_dir) -> nn.Module:
    """TorchXRayVision's own loader: downloads to ``cache_dir`` unless the file is there."""
    info = xrv.models.model_urls[name]
    folder = cache_dir if cache_dir is not None else xrv.utils.get_cache_dir()
    local = os.path.expanduser(os.path.join(folder, os.path.basename(info["weights_url"])))
    cls = xrv.models.DenseNet if arch == "densenet121" else xrv.models.ResNet
    try:
        with warnings.catch_warnings():
            return cls(weights=name, cache_dir=None if cache_dir is None else os.fspath(cache_dir))
    except Exception as exc:
        raise WeightsError(
            f"cannot load TorchXRayVision weights {name!r} ({type(exc).__name__}: {exc}); they "
            f"are downloaded from {info['weights_url']} to {local}: without internet, put "
            "that file there (or pass cache_dir=)"
        ) from exc


def _slots(xrv, labels, num_classes) -> tuple[str, ...]:
    if labels is not None:
        if isinstance(labels, str):
            raise InputError("labels must be a sequence of slot names, not one str")
        slots = tuple(str(v) for v in labels)
    elif num_classes in (None, len(xrv.models.DenseNet.targets)):
        slots = tuple(xrv.models.DenseNet.targets)
    elif isinstance(num_classes, int) and num_classes > 0:
        slots = tuple(f"class_{i}" for i in range(num_classes))
    else:
        raise InputError(f"num_classes must be a positive int, got {num_classes!r}")
    if num_classes is not None and num_classes != len(slots):
        raise InputError(f"num_classes={num_classes} but {len(slots)} labels were given")
    return slots


def build_xrv(
    arch: str,
    *,
    weights: str | os.PathLike | None = None,
    labels: Sequence[str] | None = None,
    num_classes: int | None = None,
    in_channels: int = 1,
    cache_dir: str | os.PathLike | None = None,
    resize: bool = False,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
) -> XRVClassifier:
    """A TorchXRayVision model as a classifier (see the module docstring).

    Args:
        weights: None (random), a published weight-set name, or a local state_dict file.
        labels: names of the network's output slots ("" marks an empty slot, dropped);
            default: the weight set's, else TorchXRayVision's 18 pathologies. Published
            weights fix them.
        num_classes: outputs of a random or local network (default: ``len(labels)``, or 18).
        in_channels: 1 (TorchXRayVision's models are greyscale).
        cache_dir: where published weights are kept (TorchXRayVision's default if None).
        resize: resize inputs to the native resolution (224 or 512) inside the model, as
            TorchXRayVision does (default: inputs as given; give them ``clf.input_size`` px).
    """
    if in_channels != 1:
        raise InputError(
            f"TorchXRayVision models take 1 input channel, got in_channels={in_channels}"
        )
    xrv = import_xrv()
    source, slots = None, None
    if weights is not None and not is_local_weights(weights):
        known = _published(xrv, arch)
        if str(weights) not in known:
            raise WeightsError(
                f"unknown TorchXRayVision weights {weights!r} for {arch}; known: {known}"
            )
        if labels is not None or num_classes is not None:
            raise InputError(
                f"the weight set {weights!r} fixes the labels: drop labels/num_classes"
            )
        net = _download(xrv, arch, str(weights), cache_dir)
        source = str(weights)
        slots = tuple(xrv.models.model_urls[source]["labels"])
    else:
        slots = _slots(xrv, labels, num_classes)
        net = _random(xrv, arch, slots)
    if weights is not None and source is None:
        state, _ = read_checkpoint(weights)
        target = net if arch == "densenet121" else net.model
        if arch == "resnet50" and all(k.startswith("model.") for k in state):
            state = {k[len("model.") :]: v for k, v in state.items()}
        state.pop("op_threshs", None)  # TorchXRayVision's calibration: not used for logits
        load_state(target, state, os.fspath(weights))
        source = os.fspath(weights)
    if dtype is not None:
        net.to(dtype=dtype)
    if device is not None:
        net.to(device=device)
    return from_xrv(net, slots=slots, resize=resize, weights=source, name=f"xrv_{arch}")


def available() -> bool:
    """Whether a usable ``torchxrayvision`` (>= 1.2) is installed; imports nothing (importing
    it costs seconds at every registry load)."""
    try:
        if importlib.util.find_spec("torchxrayvision") is None:
            return False
        version = importlib.metadata.version("torchxrayvision")
    except (ImportError, ValueError, importlib.metadata.PackageNotFoundError):
        return False
    parts = []
    for piece in version.split(".")[:2]:
        digits = "".join(c for c in piece if c.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts) >= MIN_VERSION


@hookimpl
def register_classifiers(register):
    if not available():
        return
    for arch in ARCHS:
        register(f"xrv_{arch}", functools.partial(build_xrv, arch))
