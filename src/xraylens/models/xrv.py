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
antialiased: linear, so DeepLIFT stays exact); the outputs are logits (no sigmoid, no
operating-point calibration: ``op_threshs=None``, ``apply_sigmoid=False``) of the weight set's
pathologies only (empty slots dropped). The final ReLU is a module, so DeepLIFT and guided
backprop see it (TorchXRayVision calls ``F.relu(..., inplace=True)`` in its own forward, whose
resolution check torch.fx cannot trace).

Published weights are TorchXRayVision's own files, downloaded by it to ``cache_dir`` (default
``~/.torchxrayvision/models_data``) on first use; a file already there is used offline.
``weights`` may also be a local ``.pt``/``.pth``/``.safetensors`` state_dict (e.g. written by
``clf.save``); ``pathologies`` then names the 18 output slots ("" for an empty one).
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
    resize: bool = True,
    weights: str | None = None,
    name: str | None = None,
) -> XRVClassifier:
    """Wrap a TorchXRayVision ``DenseNet`` or ``ResNet`` object (its layers are shared).

    Args:
        slots: the network's output names (default: its ``targets``); "" marks an empty slot.
        resize: resize inputs to the native resolution inside the model, as TorchXRayVision.
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


def _random(xrv, arch: str) -> nn.Module:
    """The architecture with random weights, built offline."""
    if arch == "densenet121":
        return xrv.models.DenseNet(weights=None)
    import torchvision

    # xrv.models.ResNet downloads in __init__; this is the same network (its ``model``)
    holder = nn.Module()
    holder.model = torchvision.models.resnet50(
        weights=None, num_classes=len(xrv.models.ResNet.targets)
    )
    holder.model.conv1 = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
    holder.targets = list(xrv.models.ResNet.targets)
    return holder


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


def build_xrv(
    arch: str,
    *,
    weights: str | os.PathLike | None = None,
    pathologies: Sequence[str] | None = None,
    cache_dir: str | os.PathLike | None = None,
    resize: bool = True,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
) -> XRVClassifier:
    """A TorchXRayVision model as a classifier (see the module docstring).

    Args:
        weights: None (random), a published weight-set name, or a local state_dict file.
        pathologies: output slot names ("" for empty ones); default: the weight set's, or
            TorchXRayVision's 18 pathologies.
        cache_dir: where published weights are kept (TorchXRayVision's default if None).
        resize: resize inputs to the native resolution (224 or 512) inside the model.
    """
    xrv = import_xrv()
    source = None
    if weights is None:
        net = _random(xrv, arch)
    elif is_local_weights(weights):
        net = _random(xrv, arch)
        state, _ = read_checkpoint(weights)
        target = net if arch == "densenet121" else net.model
        if arch == "resnet50" and all(k.startswith("model.") for k in state):
            state = {k[len("model.") :]: v for k, v in state.items()}
        state.pop("op_threshs", None)  # TorchXRayVision's calibration: not used for logits
        load_state(target, state, os.fspath(weights))
        source = os.fspath(weights)
    else:
        known = _published(xrv, arch)
        if str(weights) not in known:
            raise WeightsError(
                f"unknown TorchXRayVision weights {weights!r} for {arch}; known: {known}"
            )
        net = _download(xrv, arch, str(weights), cache_dir)
        source = str(weights)
        if pathologies is None:
            pathologies = xrv.models.model_urls[source]["labels"]
    if dtype is not None:
        net.to(dtype=dtype)
    if device is not None:
        net.to(device=device)
    return from_xrv(net, slots=pathologies, resize=resize, weights=source, name=f"xrv_{arch}")


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
