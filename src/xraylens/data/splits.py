"""Subject-level train/validation/test splits, stratified on labels, saved as JSON.

The split unit is the *group*: a patient, merged with every other patient id that shares an
image with it (``record["group"]``, ``record["patient_aliases"]``), so no patient and no image
is ever on both sides. Splits name images by their stable ``record["id"]`` (``source:relative
path``), not by position, so a saved split stays valid when a dataset is re-read.

Two schemes:

- :func:`paper_splits`: the paper's, one random 60/40 split of the patients per fold, fold ``k``
  drawn with seed ``seed + k`` (test sets of different folds overlap);
- :func:`kfold_splits`: a partition of the patients into ``k`` folds; every patient is in exactly
  one test set.

Both stratify on labels by default: groups are assigned by iterative stratification (Sechidis
et al., 2011, on groups: the rarest label first, each group to the part that still lacks most of
that label), so every part gets close to its share of every label. :func:`with_validation`
carves a validation set from the training patients the same way.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

import attrs
import numpy as np
import torch

from xraylens.core.atomic import atomic_write_text
from xraylens.errors import InputError

PARTS = ("train", "val", "test")
FORMAT = "xraylens.splits"


@attrs.frozen
class Split:
    """One fold: image ids (``record["id"]``) of the train, validation and test sets."""

    train: tuple[str, ...] = attrs.field(converter=tuple)
    test: tuple[str, ...] = attrs.field(converter=tuple)
    val: tuple[str, ...] = attrs.field(converter=tuple, default=())
    fold: int = 0
    seed: int | None = None
    scheme: str = ""

    def indices(self, dataset) -> dict[str, list[int]]:
        """Positions of each part's images in ``dataset``: ``{"train": [...], "val", "test"}``.

        Raises :class:`InputError` when the split names images the dataset does not hold.
        """
        position = {rec["id"]: i for i, rec in enumerate(_records(dataset))}
        out = {}
        for part in PARTS:
            ids = getattr(self, part)
            absent = [x for x in ids if x not in position]
            if absent:
                raise InputError(
                    f"fold {self.fold}: {len(absent)} {part} images are not in the dataset "
                    f"(e.g. {absent[:3]}); was the split made for another dataset?"
                )
            out[part] = [position[x] for x in ids]
        return out

    def subsets(self, dataset) -> dict[str, Any]:
        """``{"train", "val", "test"}`` -> ``dataset.subset(indices)``."""
        return {part: dataset.subset(idx) for part, idx in self.indices(dataset).items()}

    def to_dict(self) -> dict[str, Any]:
        return {
            "fold": self.fold,
            "seed": self.seed,
            "scheme": self.scheme,
            **{part: list(getattr(self, part)) for part in PARTS},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Split:
        return cls(
            train=data["train"],
            test=data["test"],
            val=data.get("val", ()),
            fold=int(data.get("fold", 0)),
            seed=data.get("seed"),
            scheme=data.get("scheme", ""),
        )


def _records(dataset) -> list[dict[str, Any]]:
    records = getattr(dataset, "records", dataset)
    if not isinstance(records, Sequence) or (records and not isinstance(records[0], dict)):
        raise InputError("expected a dataset with .records or a list of record dicts")
    return list(records)


def group_ids(dataset) -> list[str]:
    """The split group of every record: patients linked by ``group``/``patient_aliases`` merged.

    The smallest id of each connected set of patient ids names the group.
    """
    records = _records(dataset)
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    keys = []
    for rec in records:
        if "patient_id" not in rec:
            raise InputError(f"record {rec.get('id')!r} has no patient_id")
        linked = [rec["patient_id"], *rec.get("patient_aliases", ()), rec.get("group")]
        linked = [str(x) for x in linked if x is not None]
        roots = [find(x) for x in linked]
        for r in roots[1:]:
            a, b = find(roots[0]), find(r)
            if a != b:
                parent[max(a, b)] = min(a, b)
        keys.append(linked[0])
    return [find(k) for k in keys]


def _check_ids(records: list[dict[str, Any]]) -> list[str]:
    ids = [rec.get("id") for rec in records]
    if any(i is None for i in ids):
        raise InputError("every record needs a stable 'id' to be split")
    if len(set(ids)) != len(ids):
        raise InputError("record ids are not unique; cannot split")
    return ids


def _label_matrix(dataset, stratify, n: int) -> np.ndarray:
    if stratify is False or stratify is None:
        return np.zeros((n, 0))
    if stratify is True:
        targets = getattr(dataset, "targets", None)
        if targets is None:
            return np.zeros((n, 0))
    else:
        targets = stratify
    y = targets.numpy() if torch.is_tensor(targets) else np.asarray(targets)
    if y.ndim == 1:
        y = y[:, None]
    if y.shape[0] != n:
        raise InputError(f"stratify matrix has {y.shape[0]} rows for {n} records")
    return (y > 0).astype(np.float64)


def partition_groups(
    groups: Sequence[str],
    labels: np.ndarray,
    fractions: Sequence[float],
    rng: np.random.Generator,
) -> dict[str, int]:
    """Assign each group to a part (index into ``fractions``), stratified on ``labels`` [N, K].

    Iterative stratification over groups: labels are served rarest first; each group holding
    the current label goes to the part with the largest unmet demand for it (ties: largest
    unmet image demand, then random); unlabelled groups fill the image demand.
    """
    fractions = np.asarray(fractions, dtype=np.float64)
    fractions = fractions / fractions.sum()
    names = sorted(set(groups))
    order = {g: i for i, g in enumerate(names)}
    counts = np.zeros((len(names), labels.shape[1]))
    sizes = np.zeros(len(names))
    for row, g in enumerate(groups):
        counts[order[g]] += labels[row]
        sizes[order[g]] += 1
    need_labels = fractions[:, None] * counts.sum(0)[None]
    need_size = fractions * sizes.sum()
    remaining = np.ones(len(names), dtype=bool)
    assignment = np.full(len(names), -1)

    def place(g: int, label: int | None) -> None:
        score = need_size + rng.random(len(fractions)) * 1e-9  # random tie-break
        if label is not None:
            score = need_labels[:, label] * 1e6 + need_size + rng.random(len(fractions)) * 1e-9
        p = int(np.argmax(score))
        assignment[g] = p
        need_labels[p] -= counts[g]
        need_size[p] -= sizes[g]
        remaining[g] = False

    while remaining.any():
        has = (counts[remaining] > 0).sum(0)
        if not has.any():
            for g in rng.permutation(np.flatnonzero(remaining)):
                place(int(g), None)
            break
        label = int(np.argmin(np.where(has > 0, has, np.iinfo(np.int64).max)))
        members = np.flatnonzero(remaining & (counts[:, label] > 0))
        for g in rng.permutation(members):
            place(int(g), label)
    return {g: int(assignment[order[g]]) for g in names}


def _assign(dataset, fractions, seed, stratify):
    records = _records(dataset)
    ids = _check_ids(records)
    groups = group_ids(records)
    y = _label_matrix(dataset, stratify, len(records))
    part_of = partition_groups(groups, y, fractions, np.random.default_rng(seed))
    return ids, [part_of[g] for g in groups]


def paper_splits(
    dataset,
    n_splits: int = 5,
    *,
    test_size: float = 0.4,
    val_size: float = 0.0,
    seed: int = 0,
    stratify=True,
) -> list[Split]:
    """The paper's scheme: ``n_splits`` random patient-level train/test splits (60/40).

    Fold ``k`` uses seed ``seed + k``. ``val_size`` > 0 carves that share of the training
    patients as validation (:func:`with_validation`). ``stratify``: True (the dataset's
    targets), False, or a matrix [N, K] to balance.
    """
    if not 0.0 < test_size < 1.0:
        raise InputError(f"test_size must be in (0, 1), got {test_size}")
    splits = []
    for k in range(_positive(n_splits, "n_splits")):
        ids, part = _assign(dataset, (1.0 - test_size, test_size), seed + k, stratify)
        split = Split(
            train=[i for i, p in zip(ids, part) if p == 0],
            test=[i for i, p in zip(ids, part) if p == 1],
            fold=k,
            seed=seed + k,
            scheme=f"paper: {1 - test_size:.0%}/{test_size:.0%} by patient, seed {seed} + fold",
        )
        splits.append(_maybe_val(split, dataset, val_size, stratify))
    return splits


def kfold_splits(
    dataset,
    k: int = 5,
    *,
    val_size: float = 0.0,
    seed: int = 0,
    stratify=True,
) -> list[Split]:
    """Partitioned k-fold by patient: fold ``i`` tests on part ``i`` and trains on the rest."""
    k = _positive(k, "k")
    if k < 2:
        raise InputError(f"k must be at least 2, got {k}")
    ids, part = _assign(dataset, [1.0] * k, seed, stratify)
    splits = []
    for fold in range(k):
        split = Split(
            train=[i for i, p in zip(ids, part) if p != fold],
            test=[i for i, p in zip(ids, part) if p == fold],
            fold=fold,
            seed=seed,
            scheme=f"{k}-fold by patient, seed {seed}",
        )
        splits.append(_maybe_val(split, dataset, val_size, stratify))
    return splits


def with_validation(split: Split, dataset, val_size: float = 0.2, *, seed=None, stratify=True):
    """``split`` with ``val_size`` of its training patients moved to ``val`` (stratified)."""
    if not 0.0 < val_size < 1.0:
        raise InputError(f"val_size must be in (0, 1), got {val_size}")
    records = _records(dataset)
    rows = split.indices(records)["train"]
    all_groups = group_ids(records)
    groups = [all_groups[i] for i in rows]
    y = _label_matrix(dataset, stratify, len(records))[rows]
    seed = (split.seed or 0) + 10_000 if seed is None else seed
    part_of = partition_groups(groups, y, (1.0 - val_size, val_size), np.random.default_rng(seed))
    moved = {records[r]["id"] for r, g in zip(rows, groups) if part_of[g] == 1}
    return attrs.evolve(
        split,
        train=[i for i in split.train if i not in moved],
        val=[*split.val, *[i for i in split.train if i in moved]],
    )


def _maybe_val(split: Split, dataset, val_size: float, stratify) -> Split:
    return with_validation(split, dataset, val_size, stratify=stratify) if val_size else split


def check_split(split: Split, dataset) -> None:
    """Raise :class:`InputError` if an image or a patient group is in two parts of ``split``."""
    records = _records(dataset)
    group_of = dict(zip((r["id"] for r in records), group_ids(records)))
    seen: dict[str, str] = {}
    for part in PARTS:
        for image in getattr(split, part):
            if image not in group_of:
                raise InputError(f"fold {split.fold}: image {image!r} is not in the dataset")
            group = group_of[image]
            if seen.setdefault(group, part) != part:
                raise InputError(
                    f"fold {split.fold}: patient group {group!r} is in both "
                    f"{seen[group]} and {part} (image {image!r})"
                )


def save_splits(path: str | os.PathLike, splits: Sequence[Split], dataset=None) -> None:
    """Write ``splits`` as JSON (atomically); with ``dataset``, also each image's group."""
    data: dict[str, Any] = {
        "format": FORMAT,
        "version": 1,
        "splits": [s.to_dict() for s in splits],
    }
    if dataset is not None:
        records = _records(dataset)
        data["groups"] = dict(zip((r["id"] for r in records), group_ids(records)))
    atomic_write_text(path, json.dumps(data, indent=1) + "\n")


def load_splits(path: str | os.PathLike) -> list[Split]:
    """Read splits written by :func:`save_splits`."""
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read splits from {path}: {exc}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise InputError(f"{path} is not an xraylens splits file (format {FORMAT!r})")
    return [Split.from_dict(s) for s in data["splits"]]


def _positive(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise InputError(f"{name} must be a positive int, got {value!r}")
    return int(value)
