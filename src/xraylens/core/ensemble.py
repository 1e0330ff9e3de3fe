"""The :class:`Ensemble`: several classifiers averaged into one classifier that every method
explains.

``xl.Ensemble([a, b, c])`` is a :class:`~xraylens.core.classifier.Classifier` whose module
(:class:`EnsembleModule`) holds the members' modules as ``members.0``, ``members.1``, ... (so
``"members.0.layer4"`` names a layer of the first member) and combines their outputs:

- ``"mean_logits"``: ``Σ_i w_i z_i`` (the weighted mean of the members' logits ``z_i``);
- ``"mean_probs"``: ``logit(Σ_i w_i sigmoid(z_i))``, so that ``predict_proba`` is the weighted
  mean of the members' probabilities. Each sigmoid is its own ``nn.Sigmoid`` module and the
  logit a :class:`Logit` module: DeepLIFT applies its rescale rule to
  both and stays exact (summation to delta) for ``output="logits"`` and ``output="probs"``.

Because the ensemble is one module, every attributor explains it from one call (one forward
runs every member), occlusion sends each perturbed batch through every member, and the engine's
memory probe measures all members together, so ``max_memory`` holds across them.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import nn

from xraylens.core.classifier import Classifier, InputNormalize, eval_mode, registry_build
from xraylens.errors import InputError, UnknownPluginError, WeightsError

COMBINES = ("mean_logits", "mean_probs")
#: the ``format`` field of a saved ensemble's manifest (:meth:`Ensemble.save`)
MANIFEST_FORMAT = "xraylens-ensemble/1"


class Logit(nn.Module):
    """``log(p / (1 - p))`` elementwise, ``p`` clamped into the dtype's open unit interval
    (the ``"mean_probs"`` output). DeepLIFT sees its clamp, log and log1p calls and applies the
    rescale rule to each, so the ensemble stays exact."""

    def forward(self, p: torch.Tensor) -> torch.Tensor:
        info = torch.finfo(p.dtype)
        p = p.clamp(info.tiny, 1.0 - info.eps)
        return torch.log(p) - torch.log1p(-p)


class EnsembleModule(nn.Module):
    """[N, C, H, W] in [0, 1] -> ensemble logits [N, L].

    Submodules: ``members.i`` (member i's own module), ``inputs.i`` (its input normalisation,
    or ``nn.Identity``) and, for ``"mean_probs"``, ``sigmoids.i`` and ``logit``. Buffers (not in
    the state_dict): ``weights`` [M] and ``index_i`` [L], the member's output of each label.
    """

    def __init__(
        self,
        modules: Sequence[nn.Module],
        inputs: Sequence[nn.Module],
        index: Sequence[torch.Tensor | None],
        weights: Sequence[float],
        combine: str,
    ):
        super().__init__()
        self.combine = combine
        self.members = nn.ModuleList(modules)
        self.inputs = nn.ModuleList(inputs)
        self.register_buffer(
            "weights", torch.tensor(list(weights), dtype=torch.float64), persistent=False
        )
        self.selects = [i is not None for i in index]
        for i, idx in enumerate(index):
            self.register_buffer(f"index_{i}", idx, persistent=False)
        if combine == "mean_probs":
            self.sigmoids = nn.ModuleList(nn.Sigmoid() for _ in modules)
            self.logit = Logit()

    def member_outputs(self, x: torch.Tensor, i: int) -> torch.Tensor:
        """Member ``i``'s logits [N, L] in the ensemble's label order."""
        z = self.members[i](self.inputs[i](x))
        if self.selects[i]:
            z = z.index_select(1, getattr(self, f"index_{i}"))
        return z

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        total = None
        for i in range(len(self.members)):
            z = self.member_outputs(x, i)
            if self.combine == "mean_probs":
                z = self.sigmoids[i](z)
            term = z * self.weights[i].to(z.dtype)
            total = term if total is None else total + term
        return self.logit(total) if self.combine == "mean_probs" else total


def _weights(weights, n: int) -> tuple[float, ...]:
    if weights is None:
        return (1.0 / n,) * n
    if isinstance(weights, (str, bytes)) or not isinstance(weights, Sequence):
        raise InputError(f"weights must be a sequence of {n} numbers, got {weights!r}")
    if len(weights) != n:
        raise InputError(f"weights has {len(weights)} values for {n} classifiers")
    values = []
    for w in weights:
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w) or w < 0:
            raise InputError(f"weights must be finite numbers >= 0, got {list(weights)}")
        values.append(float(w))
    total = sum(values)
    if total <= 0:
        raise InputError(f"weights must not all be 0, got {list(weights)}")
    return tuple(v / total for v in values)


def _maps(label_map, n: int) -> list[Mapping[str, str]]:
    """One mapping (ensemble label -> member label) per member."""
    if label_map is None:
        return [{}] * n
    if isinstance(label_map, Mapping):
        return [label_map] * n
    if isinstance(label_map, (str, bytes)) or not isinstance(label_map, Sequence):
        raise InputError("label_map must be a mapping or a sequence of mappings (one per member)")
    if len(label_map) != n:
        raise InputError(f"label_map has {len(label_map)} entries for {n} classifiers")
    out = []
    for m in label_map:
        if m is not None and not isinstance(m, Mapping):
            raise InputError(f"label_map entries must be mappings or None, got {m!r}")
        out.append(m or {})
    return out


class Ensemble(Classifier):
    """A weighted mean of classifiers, itself a classifier (see the module docstring).

    Args:
        classifiers: the members (at least one), with the same ``in_channels``, device and
            dtype. Their modules are shared, not copied.
        combine: ``"mean_logits"`` (default) or ``"mean_probs"``.
        weights: one number >= 0 per member (normalised to sum to 1); None: equal weights.
        labels: the ensemble's labels (default: the first member's). Every member must have
            each of them, found by name (after ``label_map``); their order may differ.
        label_map: ensemble label -> member label, for members that name a label differently:
            one mapping for all members, or a sequence with one mapping (or None) per member.
        name: shown in results and reports.

    Attributes:
        members: the member classifiers; combine, weights (normalised) as given.
        member_cam_layers: ``"members.i.<cam_layer>"`` per member (None where it has none):
            the CAM methods sum these (one layer per member) when ``layer=`` is None.
    """

    def __init__(
        self,
        classifiers: Sequence[Classifier],
        combine: str = "mean_logits",
        weights: Sequence[float] | None = None,
        *,
        labels: Sequence[str] | None = None,
        label_map: Mapping[str, str] | Sequence[Mapping[str, str] | None] | None = None,
        name: str = "ensemble",
    ):
        if isinstance(classifiers, Classifier) or not isinstance(classifiers, Sequence):
            raise InputError("classifiers must be a sequence of xraylens Classifiers")
        members = tuple(classifiers)
        if not members:
            raise InputError("an Ensemble needs at least one classifier")
        for i, clf in enumerate(members):
            if not isinstance(clf, Classifier):
                raise InputError(f"classifiers[{i}] is a {type(clf).__name__}, not a Classifier")
        if combine not in COMBINES:
            raise InputError(f"combine must be one of {COMBINES}, got {combine!r}")
        _check_compatible(members)
        self.members = members
        self.label_maps = [dict(m) for m in _maps(label_map, len(members))]
        self.combine = combine
        self.weights = _weights(weights, len(members))
        if isinstance(labels, str):
            raise InputError("labels must be a sequence of label names, not one str")
        labels = tuple(members[0].labels if labels is None else labels)
        index = [
            _label_index(clf, i, labels, m)
            for i, (clf, m) in enumerate(zip(members, self.label_maps))
        ]
        first = members[0]
        inputs = [
            nn.Identity()
            if clf.input_mean is None
            else InputNormalize(clf.input_mean, clf.input_std).to(clf.device)
            for clf in members
        ]
        index = [None if idx is None else idx.to(first.device) for idx in index]
        module = EnsembleModule(
            [clf.module for clf in members], inputs, index, self.weights, combine
        ).to(first.device)
        module.weights = module.weights.to(first.dtype)
        prefixed = [
            tuple(f"members.{i}.{layer}" for layer in clf.nap_layers if layer != "input")
            for i, clf in enumerate(members)
        ]
        self.member_cam_layers = tuple(
            f"members.{i}.{clf.cam_layer}" if clf.cam_layer else None
            for i, clf in enumerate(members)
        )
        super().__init__(
            module,
            labels,
            in_channels=first.in_channels,
            input_size=max(clf.input_size for clf in members),
            min_input_size=max(clf.min_input_size for clf in members),
            nap_layers=tuple(layer for layers in prefixed for layer in layers),
            cam_layer=None,
            name=name,
        )

    def __repr__(self) -> str:
        names = ", ".join(clf.name for clf in self.members)
        return (
            f"Ensemble(name={self.name!r}, combine={self.combine!r}, members=[{names}], "
            f"labels={len(self.labels)})"
        )

    def member_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Every member's logits in the ensemble's label order: [M, N, L], no gradients."""
        x = self.check_input(x)
        with torch.inference_mode(), eval_mode(self.module):
            return torch.stack([self.module.member_outputs(x, i) for i in range(len(self.members))])

    def metadata(self) -> dict:
        """The classifier metadata plus ``ensemble``: combine, weights and each member's."""
        meta = super().metadata()
        meta["ensemble"] = {
            "combine": self.combine,
            "weights": list(self.weights),
            "members": [clf.metadata() for clf in self.members],
        }
        return meta

    def save(
        self,
        path: str | os.PathLike,
        member_weights: Sequence[str | os.PathLike | None] | None = None,
        member_kwargs: Sequence[Mapping | None] | None = None,
    ) -> Path:
        """Write a JSON manifest that :meth:`load` rebuilds this ensemble from.

        The manifest holds combine, weights, labels, label maps and, per member, its
        registered classifier name, constructor keyword arguments (``member_kwargs``, JSON
        values) and weights file (path relative to the manifest, and its sha256). Each member
        needs a registered name (``xl.list_classifiers()``). ``member_weights``: an existing
        weights file per member (e.g. the training checkpoints; None: written); written files
        are ``<manifest stem>.member<i>.pt`` beside the manifest (``Classifier.save``).
        Atomic: no half-written manifest."""
        path = Path(path)
        n = len(self.members)
        given = list(member_weights) if member_weights is not None else [None] * n
        kwargs = list(member_kwargs) if member_kwargs is not None else [None] * n
        if len(given) != n or len(kwargs) != n:
            raise InputError(f"member_weights and member_kwargs need one entry per member ({n})")
        known = set(list_registered())
        entries = []
        for i, (clf, file, kw) in enumerate(zip(self.members, given, kwargs)):
            if clf.name not in known:
                raise InputError(
                    f"member {i} ({clf.name}) is no registered classifier, so a manifest cannot "
                    "rebuild it; build members with xl.get_classifier(name, ...)"
                )
            if file is None:
                file = clf.save(path.with_name(f"{path.stem}.member{i}.pt"))
            file = Path(file)
            if not file.is_file():
                raise WeightsError(f"member {i} ({clf.name}): weights file {file} does not exist")
            entries.append({
                "classifier": clf.name,
                "kwargs": dict(kw or {}),
                "weights": Path(os.path.relpath(file.resolve(), path.resolve().parent)).as_posix(),
                "sha256": _sha256(file),
            })  # fmt: skip
        manifest = {
            "format": MANIFEST_FORMAT,
            "name": self.name,
            "combine": self.combine,
            "weights": list(self.weights),
            "labels": list(self.labels),
            "label_map": self.label_maps,
            "members": entries,
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(manifest, indent=2) + "\n")
        os.replace(tmp, path)
        return path

    @classmethod
    def load(
        cls, path: str | os.PathLike, *, device=None, check_hash: bool = True, factory=None
    ) -> Ensemble:
        """The ensemble a manifest from :meth:`save` describes: each member rebuilt through
        the registry (``xl.get_classifier(name, weights=file, **kwargs)``), its modules moved
        to ``device`` (default: where they are built) and put in eval mode. Errors name the
        manifest and the member: a missing or changed weights file (sha256; ``check_hash``)
        is a :class:`~xraylens.WeightsError`, an unknown classifier an :class:`InputError`.
        ``factory(name, **kwargs) -> Classifier``: default the registry's ``xl.get_classifier``."""
        factory = factory or registry_build()[0]
        path = Path(path)
        try:
            manifest = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise InputError(f"ensemble manifest {path}: cannot read it ({exc})") from None
        if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
            raise InputError(f"{path} is no ensemble manifest (format {MANIFEST_FORMAT!r})")
        members = []
        for i, entry in enumerate(manifest["members"]):
            where = f"ensemble manifest {path}, member {i} ({entry['classifier']})"
            file = path.parent / entry["weights"]
            if not file.is_file():
                raise WeightsError(f"{where}: weights file {file} does not exist")
            if check_hash and _sha256(file) != entry["sha256"]:
                raise WeightsError(
                    f"{where}: weights file {file} changed since the manifest was written "
                    "(sha256 differs); save the ensemble again"
                )
            try:
                clf = factory(entry["classifier"], weights=file, **(entry.get("kwargs") or {}))
            except UnknownPluginError as exc:
                raise InputError(f"{where}: unknown classifier: {exc.args[0]}") from None
            if device is not None:
                clf.module.to(device)
            clf.module.eval()
            members.append(clf)
        return cls(
            members,
            manifest["combine"],
            manifest["weights"],
            labels=manifest["labels"],
            label_map=manifest.get("label_map"),
            name=manifest.get("name", "ensemble"),
        )


def list_registered() -> list[str]:
    return registry_build()[1]()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _check_compatible(members: tuple[Classifier, ...]) -> None:
    first = members[0]
    seen: dict[int, int] = {}
    for i, clf in enumerate(members):
        if id(clf.module) in seen:
            raise InputError(
                f"classifiers[{seen[id(clf.module)]}] and classifiers[{i}] share one module; "
                "give it once and use weights= instead"
            )
        seen[id(clf.module)] = i
        if clf.in_channels != first.in_channels:
            raise InputError(
                f"classifiers[{i}] ({clf.name}) takes {clf.in_channels} input channels, "
                f"classifiers[0] ({first.name}) {first.in_channels}; adapt one with "
                "xl.Classifier(module, labels, in_channels=1, channels='repeat')"
            )
        if clf.device != first.device or clf.dtype != first.dtype:
            raise InputError(
                f"classifiers[{i}] ({clf.name}) is on {clf.device} as {clf.dtype}, "
                f"classifiers[0] ({first.name}) on {first.device} as {first.dtype}; move them "
                "to one device and dtype first"
            )


def _label_index(
    clf: Classifier, i: int, labels: tuple[str, ...], mapping: Mapping[str, str]
) -> torch.Tensor | None:
    """Index of each ensemble label in member ``i``'s outputs (None: the same order)."""
    wanted = [str(mapping.get(label, label)) for label in labels]
    missing = [w for w in wanted if w not in clf.labels]
    if missing:
        raise InputError(
            f"classifiers[{i}] ({clf.name}) has no label(s) {missing}; its labels: "
            f"{list(clf.labels)}; map names with label_map={{ensemble label: member label}}"
        )
    idx = [clf.labels.index(w) for w in wanted]
    if idx == list(range(clf.num_classes)):
        return None
    return torch.tensor(idx, dtype=torch.long)
