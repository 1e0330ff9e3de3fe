"""The :class:`NAPResult`: mergeable Neuron Activation Profile statistics and what follows.

The result stores only raw, mergeable state: per layer the float64 sum of every group's
activations, the group counts, the number of images seen, and per feature map the minimum and
maximum over every input seen. Means, NAPs, rankings and inactive fractions are derived from it,
so shards computed apart (or on several ranks) combine exactly (:meth:`NAPResult.merge`,
:meth:`NAPResult.to_tensors`, :meth:`NAPResult.all_reduce`).
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from xraylens.errors import InputError

WEIGHTINGS = ("uniform", "size")


class UnknownLayerError(InputError, KeyError):
    """A layer name that the result (or model) does not have; the message lists close matches."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


def unknown_layer(layer: Any, known: Any, where: str) -> UnknownLayerError:
    """The error for an unknown layer name, with close matches from ``known``."""
    known = [str(k) for k in known]
    close = difflib.get_close_matches(str(layer), known, n=5, cutoff=0.5)
    hint = f"; did you mean {close}?" if close else f"; known: {known[:20]}"
    return UnknownLayerError(f"unknown layer {layer!r} in {where}{hint}")


def check_weighting(weighting: str) -> str:
    if weighting not in WEIGHTINGS:
        raise InputError(f"weighting must be one of {WEIGHTINGS}, got {weighting!r}")
    return weighting


class LayerMap(Mapping):
    """Read-only mapping layer -> value, computed on first access and cached (the full set of
    means or NAPs of a large model need not be in memory at once)."""

    def __init__(self, layers: tuple[str, ...], compute: Callable[[str], Any], what: str):
        self._layers = layers
        self._compute = compute
        self._what = what
        self._cache: dict[str, Any] = {}

    def __getitem__(self, layer: str) -> Any:
        if layer not in self._cache:
            if layer not in self._layers:
                raise unknown_layer(layer, self._layers, self._what)
            self._cache[layer] = self._compute(layer)
        return self._cache[layer]

    def __iter__(self) -> Iterator[str]:
        return iter(self._layers)

    def __len__(self) -> int:
        return len(self._layers)

    def __repr__(self) -> str:
        return f"<{self._what}: {list(self._layers)}>"


class NAPResult:
    """Neuron Activation Profiles of G groups over a set of layers.

    Raw state (exact, mergeable):
        sums[layer]: float64 [G, C, *S], per group the sum of the layer's output over members.
        group_counts: int64 [G], members seen per group.
        n_images: every image seen, members of no group included.
        minimum[layer], maximum[layer]: float64 [C], per feature map the extreme value over
            every position of every image seen (+inf / -inf before any image).

    Derived (numpy float64; ``S`` is the spatial shape, ``(H, W)`` for conv layers, ``()`` for
    vector layers):
        counts: dict group -> images seen.
        mean[layer][group]: [C, *S] mean activation of the group (NaN when it has no member).
        nap[layer][group]: mean minus the mean over non-empty groups (``weighting``).
        inactive_fraction[layer] / zero_fraction[layer]: share of feature maps constant /
            zero over every input seen.
    """

    def __init__(
        self,
        layers: tuple[str, ...] | list[str],
        groups: tuple[str, ...] | list[str],
        sums: Mapping[str, np.ndarray],
        group_counts: Any,
        n_images: int,
        minimum: Mapping[str, np.ndarray],
        maximum: Mapping[str, np.ndarray],
        *,
        weighting: str = "uniform",
        model: str | None = None,
    ):
        self.layers = tuple(str(v) for v in layers)
        self.groups = tuple(str(v) for v in groups)
        self.weighting = check_weighting(weighting)
        self.model = model
        self.n_images = int(n_images)
        self.group_counts = np.asarray(group_counts, dtype=np.int64).reshape(-1)
        g = len(self.groups)
        if len(set(self.groups)) != g or len(set(self.layers)) != len(self.layers):
            raise InputError("NAPResult: layer and group names must be unique")
        if self.group_counts.shape != (g,):
            raise InputError(f"NAPResult: {self.group_counts.size} counts for {g} groups")
        self.sums: dict[str, np.ndarray] = {}
        self.minimum: dict[str, np.ndarray] = {}
        self.maximum: dict[str, np.ndarray] = {}
        for layer in self.layers:
            s = np.asarray(sums[layer], dtype=np.float64)
            lo = np.asarray(minimum[layer], dtype=np.float64).reshape(-1)
            hi = np.asarray(maximum[layer], dtype=np.float64).reshape(-1)
            if s.ndim < 2 or s.shape[0] != g or lo.shape != (s.shape[1],) or hi.shape != lo.shape:
                raise InputError(
                    f"NAPResult: layer {layer!r} has sums {s.shape}, min {lo.shape}, max "
                    f"{hi.shape}; expected [G={g}, C, ...] and [C]"
                )
            self.sums[layer], self.minimum[layer], self.maximum[layer] = s, lo, hi
        self._derived: dict[tuple, LayerMap] = {}

    # ----------------------------------------------------------------- derived statistics
    @property
    def counts(self) -> dict[str, int]:
        """Images seen per group."""
        return {g: int(c) for g, c in zip(self.groups, self.group_counts)}

    def shape(self, layer: str) -> tuple[int, ...]:
        """Shape [C, *S] of one layer's maps."""
        return tuple(self._sums(layer).shape[1:])

    def _sums(self, layer: str) -> np.ndarray:
        if layer not in self.sums:
            raise unknown_layer(layer, self.layers, "this NAPResult")
        return self.sums[layer]

    def _group_means(self, layer: str) -> np.ndarray:
        """[G, C, *S]; NaN rows for empty groups."""
        s = self._sums(layer)
        counts = self.group_counts.reshape((-1,) + (1,) * (s.ndim - 1)).astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(counts > 0, s / counts, np.nan)

    def _reference(self, layer: str, weighting: str) -> np.ndarray:
        """[C, *S]: the mean over non-empty groups that every group's NAP is measured from."""
        seen = self.group_counts > 0
        if not seen.any():
            return np.full(self.shape(layer), np.nan)
        if weighting == "size":  # sum_g n_g mean_g / sum_g n_g
            return self._sums(layer)[seen].sum(axis=0) / float(self.group_counts[seen].sum())
        return self._group_means(layer)[seen].mean(axis=0)

    def _per_group(self, what: str, weighting: str | None = None) -> LayerMap:
        key = (what, weighting)
        if key not in self._derived:
            if what == "mean":

                def compute(layer):
                    return dict(zip(self.groups, self._group_means(layer)))

            else:

                def compute(layer):
                    ref = self._reference(layer, weighting)
                    return {g: m - ref for g, m in zip(self.groups, self._group_means(layer))}

            self._derived[key] = LayerMap(self.layers, compute, f"NAPResult.{what}")
        return self._derived[key]

    @property
    def mean(self) -> LayerMap:
        """``mean[layer][group]``: float64 [C, *S] mean activation of the group's images."""
        return self._per_group("mean")

    @property
    def nap(self) -> LayerMap:
        """``nap[layer][group]``: group mean minus the mean over groups (``self.weighting``)."""
        return self.naps(self.weighting)

    def naps(self, weighting: str | None = None) -> LayerMap:
        """NAPs with another weighting: ``"uniform"`` (unweighted mean of the group means) or
        ``"size"`` (weighted by group size); groups with no image are left out of the mean."""
        return self._per_group("nap", check_weighting(weighting or self.weighting))

    def map_scores(
        self, layer: str, group: str | None = None, weighting: str | None = None
    ) -> np.ndarray:
        """[C] mean |NAP| of each feature map over its positions, for ``group`` or averaged over
        the non-empty groups (NaN when no group has an image)."""
        naps = self.naps(weighting)[layer]
        if group is not None:
            if group not in naps:
                raise InputError(f"unknown group {group!r}; groups: {list(self.groups)}")
            chosen = [naps[group]]
        else:
            chosen = [naps[g] for g, c in zip(self.groups, self.group_counts) if c > 0]
        if not chosen:
            return np.full(self.shape(layer)[0], np.nan)
        a = np.abs(np.stack(chosen))  # [G', C, *S]
        return a.reshape(a.shape[0], a.shape[1], -1).mean(axis=(0, 2))

    def top_maps(
        self, layer: str, k: int = 8, group: str | None = None, weighting: str | None = None
    ) -> np.ndarray:
        """Indices (int64 [min(k, C)]) of the feature maps with the largest mean |NAP|,
        largest first; ties keep channel order."""
        if not isinstance(k, (int, np.integer)) or k < 1:
            raise InputError(f"k must be a positive int, got {k!r}")
        scores = self.map_scores(layer, group, weighting)
        order = np.argsort(-np.nan_to_num(scores, nan=-np.inf), kind="stable")
        return order[: int(k)].astype(np.int64)

    def inactive_maps(self, layer: str) -> np.ndarray:
        """bool [C]: feature maps constant (min == max) over every position of every input."""
        self._sums(layer)
        return self.minimum[layer] == self.maximum[layer]

    def zero_maps(self, layer: str) -> np.ndarray:
        """bool [C]: feature maps that are zero everywhere for every input seen."""
        self._sums(layer)
        return (self.minimum[layer] == 0) & (self.maximum[layer] == 0)

    @property
    def inactive_fraction(self) -> dict[str, float]:
        """layer -> share of feature maps constant over every input seen (NaN before any)."""
        return {
            layer: float(self.inactive_maps(layer).mean()) if self.n_images else float("nan")
            for layer in self.layers
        }

    @property
    def zero_fraction(self) -> dict[str, float]:
        """layer -> share of feature maps zero for every input seen (a subset of inactive)."""
        return {
            layer: float(self.zero_maps(layer).mean()) if self.n_images else float("nan")
            for layer in self.layers
        }

    # ----------------------------------------------------------------- combining shards
    def _check_compatible(self, other: NAPResult) -> None:
        if not isinstance(other, NAPResult):
            raise InputError(f"can only merge a NAPResult, got {type(other).__name__}")
        if other.layers != self.layers or other.groups != self.groups:
            raise InputError(
                f"cannot merge NAPResults with different layers/groups: {self.layers}/"
                f"{self.groups} vs {other.layers}/{other.groups}"
            )
        for layer in self.layers:
            if self.shape(layer) != other.shape(layer):
                raise InputError(
                    f"cannot merge: layer {layer!r} has maps {self.shape(layer)} vs "
                    f"{other.shape(layer)} (different input sizes?)"
                )
        if self.model and other.model and self.model != other.model:
            raise InputError(f"cannot merge NAPResults of models {self.model!r}, {other.model!r}")

    def merge(self, other: NAPResult) -> NAPResult:
        """A new result over both shards' images (disjoint shards: exact, like one run)."""
        self._check_compatible(other)
        return NAPResult(
            self.layers,
            self.groups,
            {layer: self.sums[layer] + other.sums[layer] for layer in self.layers},
            self.group_counts + other.group_counts,
            self.n_images + other.n_images,
            {layer: np.minimum(self.minimum[layer], other.minimum[layer]) for layer in self.layers},
            {layer: np.maximum(self.maximum[layer], other.maximum[layer]) for layer in self.layers},
            weighting=self.weighting,
            model=self.model or other.model,
        )

    @staticmethod
    def reduce_op(key: str) -> str:
        """How a :meth:`to_tensors` entry combines across shards: "sum", "min" or "max"."""
        kind = key.split(":", 1)[0]
        if kind not in ("n_images", "counts", "sum", "min", "max"):
            raise InputError(f"{key!r} is not a NAPResult tensor key")
        return {"min": "min", "max": "max"}.get(kind, "sum")

    def to_tensors(self, device: str | torch.device | None = None) -> dict[str, torch.Tensor]:
        """The raw state as tensors, for ``torch.distributed.all_reduce``: keys ``n_images``,
        ``counts`` (int64), ``sum:<layer>``, ``min:<layer>``, ``max:<layer>`` (float64); reduce
        each with :meth:`reduce_op` (SUM, MIN, MAX), then :meth:`from_tensors`."""
        out = {
            "n_images": torch.tensor([self.n_images], dtype=torch.int64),
            "counts": torch.from_numpy(self.group_counts.copy()),
        }
        for layer in self.layers:
            out[f"sum:{layer}"] = torch.from_numpy(self.sums[layer].copy())
            out[f"min:{layer}"] = torch.from_numpy(self.minimum[layer].copy())
            out[f"max:{layer}"] = torch.from_numpy(self.maximum[layer].copy())
        return {k: v.to(device) for k, v in out.items()} if device is not None else out

    @classmethod
    def from_tensors(
        cls,
        tensors: Mapping[str, torch.Tensor],
        groups: Any,
        *,
        weighting: str = "uniform",
        model: str | None = None,
    ) -> NAPResult:
        """Rebuild a result from :meth:`to_tensors` output (layers in key order)."""
        try:
            layers = [k.split(":", 1)[1] for k in tensors if k.startswith("sum:")]

            def arr(key):
                return tensors[key].detach().cpu().numpy()

            return cls(
                layers,
                tuple(groups),
                {layer: arr(f"sum:{layer}") for layer in layers},
                arr("counts"),
                int(arr("n_images").reshape(-1)[0]),
                {layer: arr(f"min:{layer}") for layer in layers},
                {layer: arr(f"max:{layer}") for layer in layers},
                weighting=weighting,
                model=model,
            )
        except KeyError as exc:
            raise InputError(f"NAPResult.from_tensors: missing tensor {exc}") from None

    def all_reduce(self, group: Any = None, device: str | torch.device | None = None) -> NAPResult:
        """Combine the results of every rank of a ``torch.distributed`` process group (each rank
        profiled its own images): SUM for sums and counts, MIN/MAX for the extremes. Every rank
        gets the whole result. ``device``: where to reduce (``"cuda"`` for NCCL; default CPU)."""
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            raise InputError("NAPResult.all_reduce needs an initialised torch.distributed group")
        ops = {"sum": dist.ReduceOp.SUM, "min": dist.ReduceOp.MIN, "max": dist.ReduceOp.MAX}
        tensors = self.to_tensors(device or "cpu")
        for key, t in tensors.items():
            dist.all_reduce(t, op=ops[self.reduce_op(key)], group=group)
        return NAPResult.from_tensors(
            tensors, self.groups, weighting=self.weighting, model=self.model
        )

    # ----------------------------------------------------------------- files
    def save(self, path: str | os.PathLike) -> Path:
        """Write the raw state losslessly to ``.npz`` (arrays + JSON metadata: model, layers,
        groups, counts, weighting, shapes). Atomic: no half-written file."""
        from xraylens.profile.io import save_result

        return save_result(self, path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> NAPResult:
        """Read a file written by :meth:`save`."""
        from xraylens.profile.io import load_result

        return load_result(path)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, NAPResult):
            return NotImplemented
        return (
            (self.layers, self.groups, self.n_images, self.model, self.weighting)
            == (other.layers, other.groups, other.n_images, other.model, other.weighting)
            and np.array_equal(self.group_counts, other.group_counts)
            and all(
                np.array_equal(a[layer], b[layer])
                for layer in self.layers
                for a, b in (
                    (self.sums, other.sums),
                    (self.minimum, other.minimum),
                    (self.maximum, other.maximum),
                )
            )
        )

    __hash__ = None  # mutable arrays inside

    def __repr__(self) -> str:
        shapes = ", ".join(f"{layer}{list(self.shape(layer))}" for layer in self.layers)
        return (
            f"NAPResult(model={self.model!r}, n_images={self.n_images}, counts={self.counts}, "
            f"weighting={self.weighting!r}, layers=[{shapes}])"
        )
