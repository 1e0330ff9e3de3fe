"""The ``nap`` profiler: Neuron Activation Profiles (Krug et al.), streamed over batches.

For every chosen layer the profiler keeps, per group, the float64 sum of the layer's output over
the group's images, plus per feature map the minimum and maximum over every image seen. Memory is
O(groups x layer size) whatever the number of images; the state merges exactly across shards.

Which images count where: group means use the group's members only; the inactive-map statistics
(``inactive_fraction``, ``zero_fraction``) and ``n_images`` use every image seen, members of no
group included.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch

from xraylens.core.classifier import Classifier, eval_mode
from xraylens.core.engine import is_oom
from xraylens.core.profiler import Profiler
from xraylens.errors import InputError
from xraylens.hookspecs import hookimpl
from xraylens.profile.groups import check_membership, group_names
from xraylens.profile.result import NAPResult, check_weighting, unknown_layer

INPUT = "input"


def _first_tensor(out: Any, layer: str) -> torch.Tensor:
    """A layer's output tensor; for tuple/list outputs (e.g. Inception's named tuples) the first
    tensor in it."""
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, (tuple, list)):
        for item in out:
            if isinstance(item, torch.Tensor):
                return item
    raise InputError(f"layer {layer!r} returned {type(out).__name__}, not a tensor: pick another")


def _forward(clf: Classifier, module, x: torch.Tensor) -> None:
    """Run the model; a failure inside it becomes an InputError naming the model and shape
    (out-of-memory errors pass unchanged, so that callers can retry smaller batches)."""
    try:
        module(x)
    except InputError:
        raise
    except RuntimeError as exc:
        if is_oom(exc):
            raise
        raise InputError(
            f"{clf.name}'s forward pass failed on x of shape {tuple(x.shape)}: {exc}"
        ) from exc


class _Batch:
    """One batch's contribution, committed only once the whole forward pass succeeded."""

    def __init__(self, weights: torch.Tensor):
        self.weights = weights  # float64 [G, N]: membership, transposed
        self.sums: dict[str, torch.Tensor] = {}
        self.lo: dict[str, torch.Tensor] = {}
        self.hi: dict[str, torch.Tensor] = {}

    def add(self, layer: str, act: torch.Tensor) -> None:
        n = self.weights.shape[1]
        if layer in self.sums:
            raise InputError(
                f"layer {layer!r} ran more than once in one forward pass (a module reused, e.g. "
                "a shared ReLU); NAPs need one output per image: pick its parent module"
            )
        if act.dim() < 2 or act.shape[0] != n:
            raise InputError(
                f"layer {layer!r} output has shape {tuple(act.shape)}; NAPs need [N={n}, C, ...] "
                "([N, C] vectors or [N, C, H, W] maps)"
            )
        act = act.detach()
        rows = act.reshape(n * act.shape[1], -1)  # one row per (image, feature map)
        # Extremes in the activation dtype (exact), then float64 like everything else; reducing
        # the contiguous inner dimension first is ~2x faster than amin over dims (0, 2).
        self.lo[layer] = rows.amin(dim=1).view(n, -1).amin(dim=0).to(torch.float64)
        self.hi[layer] = rows.amax(dim=1).view(n, -1).amax(dim=0).to(torch.float64)
        # Batch sums per group as one float64 product: [G, N] @ [N, C*S]; overlapping groups
        # cost nothing extra and no per-image loop runs in Python.
        sums = self.weights @ act.reshape(n, -1).to(torch.float64)
        self.sums[layer] = sums.reshape(sums.shape[0], *act.shape[1:])


class NAPProfiler(Profiler):
    """Neuron Activation Profiles over named layers, streamed over batches.

    Args:
        layers: names from ``clf.module.named_modules()``, plus ``"input"`` (the [0, 1] input as
            given, before any normalisation); None: ``"input"`` and ``clf.nap_layers``.
        groups: group names, one per membership column; None: ``clf.labels`` when the
            membership has one column per label, else ``group_0``, ``group_1``, ...
        weighting: default NAP reference of the result: ``"uniform"`` (unweighted mean of the
            group means) or ``"size"`` (weighted by group size).
        device: where the float64 accumulators live (default: the classifier's device).
        progress: tqdm bar in :meth:`profile`.

    ``update(clf, x, membership)``: x [N, C, H, W] in [0, 1]; membership bool [N, G] (groups
    may overlap; an image may be in none). The model runs in eval mode under
    ``torch.inference_mode``; hooks are always removed and the model is left as it was.
    """

    name = "nap"

    def __init__(
        self,
        layers: Sequence[str] | None = None,
        groups: Sequence[str] | None = None,
        *,
        weighting: str = "uniform",
        device: str | torch.device | None = None,
        progress: bool = False,
    ):
        if isinstance(layers, str):
            layers = (layers,)
        self._layers_arg = None if layers is None else tuple(str(v) for v in layers)
        if self._layers_arg is not None and not self._layers_arg:
            raise InputError("layers must not be empty (None: the classifier's default layers)")
        if self._layers_arg is not None and len(set(self._layers_arg)) != len(self._layers_arg):
            raise InputError(f"layers must be unique, got {list(self._layers_arg)}")
        self._groups_arg = None if groups is None else group_names(groups)
        self.weighting = check_weighting(weighting)
        self.device = None if device is None else torch.device(device)
        self.progress = progress
        self.reset()

    def reset(self) -> None:
        """Forget everything seen (layers and groups given to the constructor stay)."""
        self.layers: tuple[str, ...] | None = self._layers_arg
        self.groups: tuple[str, ...] | None = self._groups_arg
        self.model: str | None = None
        self.n_images = 0
        self._counts: torch.Tensor | None = None
        self._sums: dict[str, torch.Tensor] = {}
        self._lo: dict[str, torch.Tensor] = {}
        self._hi: dict[str, torch.Tensor] = {}

    # ---------------------------------------------------------------- binding to a model
    def _resolve_layers(self, clf: Classifier) -> tuple[str, ...]:
        if self.layers is None:
            return (INPUT, *[v for v in clf.nap_layers if v != INPUT])
        known = dict(clf.module.named_modules())
        for layer in self.layers:
            if layer != INPUT and layer not in known:
                names = [INPUT, *(k for k in known if k)]
                raise unknown_layer(layer, names, f"{clf.name}'s named_modules()")
        return self.layers

    def _resolve_groups(self, clf: Classifier, n_columns: int) -> tuple[str, ...]:
        if self.groups is not None:
            return self.groups
        if n_columns == len(clf.labels):
            return tuple(clf.labels)
        return tuple(f"group_{i}" for i in range(n_columns))

    # ---------------------------------------------------------------- streaming
    def update(self, clf: Classifier, x: torch.Tensor, membership: Any) -> None:
        """Add a batch: ``x`` [N, C, H, W] in [0, 1], ``membership`` bool/0-1 [N, G]."""
        if not isinstance(clf, Classifier):
            raise InputError(f"clf must be an xraylens Classifier, got {type(clf).__name__}")
        if self.model is not None and clf.name != self.model:
            raise InputError(
                f"this profiler holds data of model {self.model!r}, got {clf.name!r}: use a new "
                "profiler or reset()"
            )
        x = clf.check_input(x)
        m = check_membership(
            membership, x.shape[0], None if self.groups is None else len(self.groups)
        )
        layers = self._resolve_layers(clf)
        groups = self._resolve_groups(clf, m.shape[1])
        if m.shape[1] != len(groups):
            raise InputError(f"membership has {m.shape[1]} columns for {len(groups)} groups")
        batch = _Batch(m.to(device=x.device, dtype=torch.float64).T.contiguous())
        module = clf.forward_module()
        handles = []
        try:
            for layer in layers:
                if layer == INPUT:
                    continue
                sub = clf.module.get_submodule(layer)

                def hook(_mod, _inp, out, _layer=layer):
                    batch.add(_layer, _first_tensor(out, _layer))

                handles.append(sub.register_forward_hook(hook))
            with eval_mode(clf.module), torch.inference_mode():
                if INPUT in layers:
                    batch.add(INPUT, x)
                if handles:  # the input alone needs no forward pass
                    _forward(clf, module, x)
                self._commit(batch, layers, groups, m, clf.name)
        finally:
            for h in handles:
                h.remove()

    def _commit(self, batch: _Batch, layers, groups, m: torch.Tensor, model: str) -> None:
        missing = [layer for layer in layers if layer not in batch.sums]
        if missing:
            raise InputError(
                f"layers {missing} did not run in {model}'s forward pass (in eval mode); "
                "pick layers that do"
            )
        if self._counts is None:  # first batch: fix layers, groups, shapes and device
            device = self.device or next(iter(batch.sums.values())).device
            self.layers, self.groups, self.model = tuple(layers), tuple(groups), model
            self._counts = torch.zeros(len(groups), dtype=torch.int64, device=device)
            for layer in layers:
                s = batch.sums[layer]
                self._sums[layer] = torch.zeros(s.shape, dtype=torch.float64, device=device)
                self._lo[layer] = torch.full(
                    s.shape[1:2], float("inf"), dtype=torch.float64, device=device
                )
                self._hi[layer] = torch.full_like(self._lo[layer], float("-inf"))
        for layer in layers:
            want, got = self._sums[layer].shape[1:], batch.sums[layer].shape[1:]
            if want != got:
                raise InputError(
                    f"layer {layer!r} gave maps of shape {tuple(got)}, earlier batches "
                    f"{tuple(want)}: every image must have the same size (resize them)"
                )
        device = self._counts.device
        for layer in layers:
            self._sums[layer] += batch.sums[layer].to(device)
            torch.minimum(self._lo[layer], batch.lo[layer].to(device), out=self._lo[layer])
            torch.maximum(self._hi[layer], batch.hi[layer].to(device), out=self._hi[layer])
        self._counts += m.sum(dim=0).to(device)
        self.n_images += m.shape[0]

    def profile(
        self,
        clf: Classifier,
        batches: Iterable[Any],
        *,
        membership: Callable[[Any], Any] | None = None,
        total: int | None = None,
    ) -> NAPResult:
        """Feed every batch to :meth:`update` and return the result.

        ``batches``: ``(x, membership)`` pairs, or, with ``membership`` given, any batches (e.g.
        a DataLoader's ``(x, targets, records)``): ``x = batch[0]`` and the membership is
        ``membership(batch)``, e.g.
        ``lambda b: membership_from_targets(b[1], clf.labels, prof.groups)``.
        """
        from tqdm.auto import tqdm

        if total is None and hasattr(batches, "__len__"):
            total = len(batches)
        for batch in tqdm(batches, total=total, desc="NAP", disable=not self.progress, leave=False):
            if membership is None:
                x, m = batch
            else:
                x, m = batch[0], membership(batch)
            self.update(clf, x, m)
        return self.result()

    @property
    def state_bytes(self) -> int:
        """Bytes held by the accumulators (constant once the first batch fixed the shapes)."""
        tensors = [*self._sums.values(), *self._lo.values(), *self._hi.values()]
        if self._counts is not None:
            tensors.append(self._counts)
        return sum(t.numel() * t.element_size() for t in tensors)

    def result(self) -> NAPResult:
        """A :class:`NAPResult` (CPU numpy copies) of everything seen so far."""
        if self._counts is None:
            raise InputError("the NAP profiler has seen no batch yet: call update() first")

        def np64(t):
            return t.detach().cpu().numpy().copy()

        return NAPResult(
            self.layers,
            self.groups,
            {layer: np64(s) for layer, s in self._sums.items()},
            np64(self._counts),
            self.n_images,
            {layer: np64(v) for layer, v in self._lo.items()},
            {layer: np64(v) for layer, v in self._hi.items()},
            weighting=self.weighting,
            model=self.model,
        )

    def __repr__(self) -> str:
        return (
            f"NAPProfiler(layers={self.layers}, groups={self.groups}, "
            f"n_images={self.n_images}, weighting={self.weighting!r})"
        )


@hookimpl
def register_profilers(register):
    register("nap", NAPProfiler)
