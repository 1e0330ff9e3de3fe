"""The :class:`Classifier`: a multi-label image model plus what is needed to explain it."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import attrs
import torch
from torch import nn

from xraylens.core.checkpoint import (
    LOCAL_SUFFIXES,
    is_local_weights,
    load_state,
    read_checkpoint,
    save_checkpoint,
)
from xraylens.core.names import find_label
from xraylens.errors import InputError, WeightsError


@contextlib.contextmanager
def eval_mode(module: nn.Module) -> Iterator[nn.Module]:
    """Put every submodule in eval mode for the block, then restore each one's own flag."""
    flags = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield module
    finally:
        for m, training in flags:
            m.training = training


class InputNormalize(nn.Module):
    """``(x - mean) / std`` per channel; x: [N, C, H, W]."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        self.register_buffer("mean", torch.tensor(list(mean)).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(list(std)).view(1, -1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)


class NormalizedModel(nn.Module):
    """``model(normalize(x))``: lets attribution run from inputs in [0, 1]."""

    def __init__(self, model: nn.Module, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        self.normalize = InputNormalize(mean, std)
        self.model = model
        first = next(_tensors(model), None)
        if first is not None:  # move only our buffers: the caller's model stays as it is
            self.normalize.to(first.device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(self.normalize(x))


def _tensors(module: nn.Module) -> Iterator[torch.Tensor]:
    yield from module.parameters()
    yield from module.buffers()


def _labels(value: Sequence[str]) -> tuple[str, ...]:
    if isinstance(value, str):
        raise InputError("labels must be a sequence of label names, not one str")
    labels = tuple(str(v) for v in value)
    if not labels:
        raise InputError("labels must not be empty")
    dupes = sorted({v for v in labels if labels.count(v) > 1})
    if dupes:
        raise InputError(f"labels must be unique; repeated: {dupes}")
    return labels


def _floats(value: Sequence[float] | None) -> tuple[float, ...] | None:
    return None if value is None else tuple(float(v) for v in value)


@attrs.define(eq=False, repr=False)
class Classifier:
    """A multi-label classifier: ``clf(x)`` maps [N, in_channels, H, W] in [0, 1] to logits [N, L].

    Wraps any ``nn.Module`` (``xl.Classifier(module, labels=...)`` works for your own model);
    backbone plugins are subclasses that build the module. The module always runs in eval mode
    here, and its own train/eval flags are restored afterwards.

    Attributes:
        module: the ``nn.Module``; it sees normalised input when ``input_mean`` is set.
        labels: label names, one per output logit.
        in_channels: channels of the input tensor (1 for greyscale X-rays).
        input_size: default side length of the square input, in pixels (the paper: 512).
        min_input_size: smallest side the architecture accepts.
        nap_layers: default layers for Neuron Activation Profiles (names in ``named_modules``).
        cam_layer: default layer for Grad-CAM.
        input_mean, input_std: per-channel normalisation applied to inputs in [0, 1] before the
            module (e.g. ImageNet statistics for published weights); None: none.
        name: registry name or a free description.
        channels: ``"repeat"`` or ``"fold"``: greyscale input for a 3-channel ``module`` (see
            :mod:`xraylens.core.channels`; ``module`` is adapted on a shallow copy); None: none.
    """

    module: nn.Module
    labels: tuple[str, ...] = attrs.field(converter=_labels)
    in_channels: int = attrs.field(default=1, kw_only=True)
    input_size: int = attrs.field(default=512, kw_only=True)
    min_input_size: int = attrs.field(default=32, kw_only=True)
    nap_layers: tuple[str, ...] = attrs.field(default=(), converter=tuple, kw_only=True)
    cam_layer: str | None = attrs.field(default=None, kw_only=True)
    input_mean: tuple[float, ...] | None = attrs.field(
        default=None, converter=_floats, kw_only=True
    )
    input_std: tuple[float, ...] | None = attrs.field(default=None, converter=_floats, kw_only=True)
    name: str = attrs.field(default="custom", kw_only=True)
    channels: str | None = attrs.field(default=None, kw_only=True)

    def __attrs_post_init__(self) -> None:
        if not isinstance(self.module, nn.Module):
            raise InputError(f"module must be a torch.nn.Module, got {type(self.module).__name__}")
        if self.channels is not None:
            from xraylens.core.channels import adapt_channels

            self.module = adapt_channels(
                self.module, self.channels, in_channels=self.in_channels,
                check_size=self.min_input_size,
            )  # fmt: skip
        if (self.input_mean is None) != (self.input_std is None):
            raise InputError("give both input_mean and input_std, or neither")
        if self.input_std is not None and any(s <= 0 for s in self.input_std):
            raise InputError(f"input_std must be positive, got {self.input_std}")
        known = dict(self.module.named_modules())
        for layer in (*self.nap_layers, *([self.cam_layer] if self.cam_layer else [])):
            if layer != "input" and layer not in known:
                raise InputError(f"layer {layer!r} is not in {self.name}'s named_modules()")
        self.module.eval()

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(name={self.name!r}, labels={len(self.labels)}, "
            f"in_channels={self.in_channels}, input_size={self.input_size})"
        )

    @property
    def num_classes(self) -> int:
        """Number of labels (logits)."""
        return len(self.labels)

    @property
    def device(self) -> torch.device:
        """Device of the module's first parameter or buffer (CPU when it has none)."""
        first = next(_tensors(self.module), None)
        return first.device if first is not None else torch.device("cpu")

    @property
    def dtype(self) -> torch.dtype:
        """Floating dtype of the module's parameters (float32 when it has none)."""
        for t in _tensors(self.module):
            if t.is_floating_point():
                return t.dtype
        return torch.float32

    def label_index(self, label: str | int) -> int:
        """Index of a label given by name (case-insensitive, see
        :func:`xraylens.core.names.find_label`) or index; clear error when unknown."""
        if isinstance(label, bool):
            raise InputError(f"label must be a name or an index, got {label!r}")
        if isinstance(label, int):
            if not -self.num_classes <= label < self.num_classes:
                raise InputError(f"label index {label} out of range for {self.num_classes} labels")
            return label % self.num_classes
        return find_label(label, self.labels)

    def forward_module(self, module: nn.Module | None = None) -> nn.Module:
        """The module mapping inputs in [0, 1] to logits: ``module`` (default ``self.module``)
        wrapped with the input normalisation when there is one. Never modifies ``module``."""
        module = self.module if module is None else module
        if self.input_mean is None:
            return module
        return NormalizedModel(module, self.input_mean, self.input_std)

    def check_input(self, x: torch.Tensor, *, name: str = "x") -> torch.Tensor:
        """Validate ``x`` [N, in_channels, H, W] and return it on the module's device and dtype."""
        if not isinstance(x, torch.Tensor):
            raise InputError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
        if x.dim() == 3 and x.shape[0] == self.in_channels:
            raise InputError(
                f"{name} has shape {tuple(x.shape)}; expected [N, C, H, W]: add a batch "
                f"dimension with {name}[None]"
            )
        if x.dim() != 4:
            raise InputError(f"{name} must be [N, C, H, W], got shape {tuple(x.shape)}")
        if x.shape[1] != self.in_channels:
            raise InputError(
                f"{name} has {x.shape[1]} channels, {self.name} expects {self.in_channels} "
                f"(shape {tuple(x.shape)})"
            )
        if x.shape[0] == 0:
            raise InputError(f"{name} is an empty batch")
        if min(x.shape[-2:]) < self.min_input_size:
            raise InputError(
                f"{name} is {x.shape[-2]}x{x.shape[-1]} px; {self.name} needs at least "
                f"{self.min_input_size} px per side"
            )
        if not (x.is_floating_point() or x.dtype == torch.uint8):
            raise InputError(f"{name} must be a float tensor in [0, 1], got dtype {x.dtype}")
        if x.dtype == torch.uint8:
            x = x.float() / 255.0
        return x.to(device=self.device, dtype=self.dtype)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Logits [N, L] for ``x`` [N, in_channels, H, W] in [0, 1], computed in eval mode."""
        x = self.check_input(x)
        with eval_mode(self.module):
            return self.forward_module()(x)

    def predict_proba(self, x: torch.Tensor) -> torch.Tensor:
        """Sigmoid probabilities [N, L] (multi-label: every label independent), no gradients."""
        with torch.inference_mode():
            return torch.sigmoid(self(x))

    def metadata(self) -> dict:
        """What a checkpoint needs to rebuild this classifier (JSON-serialisable)."""
        return {
            "classifier": self.name,
            "labels": list(self.labels),
            "in_channels": self.in_channels,
            "input_size": self.input_size,
            "input_mean": None if self.input_mean is None else list(self.input_mean),
            "input_std": None if self.input_std is None else list(self.input_std),
        }

    def save(self, path: str | os.PathLike) -> Path:
        """Write a checkpoint (``.pt``/``.pth``: dict with ``state_dict`` and ``xraylens``
        metadata; ``.safetensors``: tensors plus metadata). Atomic: no half-written file."""
        return save_checkpoint(self.module, self.metadata(), path)

    def load_weights(self, path: str | os.PathLike) -> Classifier:
        """Load a local weights file into ``self.module`` (strict; returns ``self``).

        When the file carries xraylens metadata, its labels must be this classifier's.
        Raises :class:`~xraylens.WeightsError` naming the file and the cause.
        """
        state, meta = read_checkpoint(path)
        if meta and meta.get("labels") and tuple(meta["labels"]) != self.labels:
            raise WeightsError(
                f"weights file {path} was saved for labels {meta['labels']}, "
                f"not {list(self.labels)}"
            )
        load_state(self.module, state, os.fspath(path))
        return self

    @classmethod
    def load(cls, path: str | os.PathLike, module: nn.Module | None = None, **kwargs) -> Classifier:
        """A classifier from a checkpoint written by :meth:`save`.

        ``module``: your ``nn.Module`` (same architecture; its weights are replaced) and the
        labels, channels, input size and normalisation come from the file's metadata
        (``kwargs`` override them). Without ``module`` the file must name a registered
        classifier (``xl.get_classifier(name, weights=path)`` is then used).
        """
        state, meta = read_checkpoint(path)
        meta = dict(meta or {})
        if module is None:
            name = meta.get("classifier")
            if _registry_build is None or not name or name == "custom":
                raise InputError(
                    f"{path} names no registered classifier ({name!r}); pass module= "
                    "(an nn.Module of the saved architecture)"
                )
            return _registry_build(name, weights=os.fspath(path), **kwargs)
        load_state(module, state, os.fspath(path))
        fields = {
            "labels": meta.get("labels"),
            "in_channels": meta.get("in_channels"),
            "input_size": meta.get("input_size"),
            "input_mean": meta.get("input_mean"),
            "input_std": meta.get("input_std"),
            "name": meta.get("classifier"),
        }
        fields = {k: v for k, v in fields.items() if v is not None}
        fields.update(kwargs)
        if "labels" not in fields:
            raise InputError(f"{path} has no xraylens metadata; pass labels=")
        labels = fields.pop("labels")
        return cls(module, labels, **fields)


#: ``get_classifier`` and ``list_classifiers``, set by the registry when it loads (core must
#: not import it).
_registry_build = None
_registry_names = None


def set_registry_build(build, names=None) -> None:
    """Let :meth:`Classifier.load` and :meth:`~xraylens.Ensemble.load` build registered
    classifiers by name (called by the package at import; ``build(name, **kwargs) ->
    Classifier``, ``names() -> list[str]``)."""
    global _registry_build, _registry_names
    _registry_build = build
    if names is not None:
        _registry_names = names


def registry_build():
    """``build(name, **kwargs) -> Classifier`` and ``names() -> list[str]`` of the registry
    (an :class:`InputError` before the package has set them)."""
    if _registry_build is None or _registry_names is None:
        raise InputError("no classifier registry: import xraylens first")
    return _registry_build, _registry_names


def classifier_factory(build):
    """Wrap ``build(**kwargs) -> Classifier`` into a registry factory that also accepts the
    keywords the CLI and :func:`xraylens.get_classifier` pass (see ``docs/plugins.md``):

    - ``weights``: None, or a local weights file, loaded with :meth:`Classifier.load_weights`;
    - ``device`` / ``dtype``: the module is moved there after loading.

    Every other keyword goes to ``build``. Use: ``register("tiny", classifier_factory(Tiny))``.
    """
    import functools

    @functools.wraps(build)
    def factory(*, weights=None, device=None, dtype=None, **kwargs) -> Classifier:
        clf = build(**kwargs)
        if not isinstance(clf, Classifier):
            raise InputError(
                f"{getattr(build, '__name__', build)!r} returned {type(clf).__name__}, "
                "not an xraylens Classifier"
            )
        if weights is not None:
            if not is_local_weights(weights):
                raise WeightsError(
                    f"weights {weights!r}: {clf.name} loads local files only "
                    f"({', '.join(LOCAL_SUFFIXES)}); no such file"
                )
            clf.load_weights(weights)
        if dtype is not None or device is not None:
            clf.module.to(device=device, dtype=dtype)
        return clf

    return factory
