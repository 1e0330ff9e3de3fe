"""Dataset machinery shared by the readers: records, targets, caching, subsets and combining.

Every dataset item is ``(image, target, record)``:

- ``image``: float32 tensor [1, size, size] in [0, 1] (:func:`~xraylens.data.preprocess`);
- ``target``: float32 tensor [L], 0/1, expanded up the label space's hierarchy;
- ``record``: a dict (a copy; mutate freely) with at least ``id`` (stable: ``source:relative
  path``), ``patient_id`` (namespaced ``source:id``), ``group`` (the split unit: patients that
  share an image are merged into one group), ``path``, ``finding``, ``labels``, ``source``,
  ``view`` and ``mask_path`` (None when there is no lung mask).

``records`` and ``targets`` are available without reading any image, so splits are cheap. Use
:func:`collate` as a DataLoader's ``collate_fn`` (records hold None and strings, which torch's
default collate cannot stack).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import ConcatDataset, Dataset

from xraylens.data.io import read_image, read_mask
from xraylens.data.labels import LabelSpace
from xraylens.data.preprocess import _check_size, preprocess, resolve_percentiles
from xraylens.errors import InputError

Transform = Callable[[torch.Tensor], torch.Tensor]


class DataWarning(UserWarning):
    """A dataset had rows or files it could not use (missing, duplicate, unparsable); the
    dataset's ``missing``, ``duplicates`` and ``skipped`` attributes list them."""


class ChestXrayDataset(Dataset):
    """Base of the file-backed readers: subclasses fill ``self.records`` in ``__init__``.

    Args:
        size: output side of :func:`preprocess` (None keeps the original shape).
        percentiles: intensity clipping of :func:`preprocess` (``"paper"``, ``"paper-code"``...).
        label_space: a :class:`LabelSpace` (default: the paper's 14 labels).
        transform: optional ``transform(image) -> image`` applied after preprocessing (and after
            the cache), e.g. augmentation.
        cache: keep preprocessed images in memory (float32: ``4 * size**2`` bytes per image;
            each DataLoader worker process holds its own cache).
    """

    source: str = "xray"

    def __init__(
        self,
        *,
        size: int | None = 512,
        percentiles: str | Sequence[float] | None = "paper",
        label_space: LabelSpace | None = None,
        transform: Transform | None = None,
        cache: bool = False,
    ):
        self.size = None if size is None else _check_size(size)
        self.percentiles = resolve_percentiles(percentiles)
        self.label_space = label_space if label_space is not None else LabelSpace()
        self.transform = transform
        self.cache = cache
        self._cache: dict[int, torch.Tensor] = {}
        self.records: list[dict[str, Any]] = []
        self._targets: torch.Tensor | None = None
        #: rows naming image files that do not exist (dicts; see the subclass)
        self.missing: list[dict[str, Any]] = []
        #: rows naming an image already yielded under another row (dicts)
        self.duplicates: list[dict[str, Any]] = []
        #: files or rows left out for another reason (unknown finding, unparsable name; dicts)
        self.skipped: list[dict[str, Any]] = []

    @property
    def labels(self) -> tuple[str, ...]:
        """Label names, the columns of :attr:`targets`."""
        return self.label_space.labels

    @property
    def targets(self) -> torch.Tensor:
        """Float32 [N, L] 0/1 targets of every item (no image is read)."""
        if self._targets is None or len(self._targets) != len(self.records):
            ls = self.label_space
            self._targets = torch.zeros(len(self.records), len(ls))
            for i, rec in enumerate(self.records):
                for name in rec["labels"]:
                    self._targets[i, ls.index(name)] = 1.0
        return self._targets

    def __len__(self) -> int:
        return len(self.records)

    def read(self, index: int) -> np.ndarray:
        """The raw image of item ``index``: float32 [H, W] in native units."""
        return read_image(self.records[index]["path"])

    def mask(self, index: int) -> np.ndarray | None:
        """The lung mask of item ``index`` at the image's original size (bool [H, W]) or None."""
        path = self.records[index]["mask_path"]
        return None if path is None else read_mask(path)

    def image(self, index: int) -> torch.Tensor:
        """Preprocessed image [1, size, size] of item ``index`` (cached when ``cache``)."""
        cached = self._cache.get(index)
        if cached is not None:
            return cached.clone()  # callers may modify what they get; the cache stays intact
        img = preprocess(self.read(index), self.size, percentiles=self.percentiles)
        if self.cache:
            self._cache[index] = img.clone()
        return img

    def __getitem__(self, index: int):
        index = _check_index(index, len(self))
        img = self.image(index)
        if self.transform is not None:
            img = self.transform(img)
        return img, self.targets[index].clone(), dict(self.records[index])

    def subset(self, indices: Sequence[int]) -> DatasetSubset:
        """The items at ``indices`` as a dataset that keeps ``records`` and ``targets``."""
        return DatasetSubset(self, indices)

    def label_counts(self) -> dict[str, int]:
        """Number of items per label (after expansion up the hierarchy)."""
        counts = self.targets.sum(0).long().tolist()
        return dict(zip(self.labels, counts))

    def summary(self) -> dict[str, Any]:
        """Counts: images, patients, split groups, lung masks, labels, missing/duplicate rows."""
        return {
            "source": self.source,
            "images": len(self),
            "patients": len({r["patient_id"] for r in self.records}),
            "groups": len({r["group"] for r in self.records}),
            "masks": sum(r["mask_path"] is not None for r in self.records),
            "labels": self.label_counts(),
            "missing": len(self.missing),
            "duplicates": len(self.duplicates),
            "skipped": len(self.skipped),
        }

    def __repr__(self) -> str:
        return f"{type(self).__name__}({len(self)} images, size={self.size})"


class DatasetSubset(Dataset):
    """Items of ``dataset`` at ``indices``, exposing ``records``, ``targets`` and ``labels``."""

    def __init__(self, dataset, indices: Sequence[int]):
        n = len(dataset)
        self.indices = [_check_index(int(i), n) for i in indices]
        self.dataset = dataset

    @property
    def records(self) -> list[dict[str, Any]]:
        records = self.dataset.records  # once: a combined dataset builds its list per access
        return [records[i] for i in self.indices]

    @property
    def targets(self) -> torch.Tensor:
        return self.dataset.targets[self.indices]

    @property
    def label_space(self) -> LabelSpace:
        return self.dataset.label_space

    @property
    def labels(self) -> tuple[str, ...]:
        return self.dataset.labels

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int):
        return self.dataset[self.indices[_check_index(index, len(self))]]

    def subset(self, indices: Sequence[int]) -> DatasetSubset:
        return DatasetSubset(self.dataset, [self.indices[int(i)] for i in indices])


class CombinedDataset(ConcatDataset):
    """Several datasets with one label space, as the paper combined its two sources.

    ``records`` and ``targets`` concatenate the parts' (same order as the items).
    """

    def __init__(self, datasets: Sequence):
        datasets = list(datasets)
        if not datasets:
            raise InputError("combine() needs at least one dataset")
        space = datasets[0].label_space
        for ds in datasets[1:]:
            if ds.label_space != space:
                raise InputError(
                    f"cannot combine datasets with different label spaces: {space!r} vs "
                    f"{ds.label_space!r}"
                )
        ids = [rec["id"] for ds in datasets for rec in ds.records]
        if len(set(ids)) != len(ids):
            raise InputError("cannot combine datasets that share items (duplicate record ids)")
        super().__init__(datasets)
        self.label_space = space

    @property
    def records(self) -> list[dict[str, Any]]:
        return [rec for ds in self.datasets for rec in ds.records]

    @property
    def targets(self) -> torch.Tensor:
        return torch.cat([ds.targets for ds in self.datasets])

    @property
    def labels(self) -> tuple[str, ...]:
        return self.label_space.labels

    def subset(self, indices: Sequence[int]) -> DatasetSubset:
        return DatasetSubset(self, indices)

    def label_counts(self) -> dict[str, int]:
        return dict(zip(self.labels, self.targets.sum(0).long().tolist()))


def combine(*datasets) -> CombinedDataset:
    """Concatenate datasets that share a label space (e.g. ``CovidChestXray`` + ``Kermany``)."""
    return CombinedDataset(datasets)


def collate(batch: Sequence) -> tuple[torch.Tensor, torch.Tensor, list[dict[str, Any]]]:
    """DataLoader ``collate_fn``: ``(images [N, 1, S, S], targets [N, L], records list)``."""
    images, targets, records = zip(*batch)
    return torch.stack(images), torch.stack(targets), list(records)


def _check_index(index, n: int) -> int:
    if torch.is_tensor(index) and index.ndim == 0 and not index.is_floating_point():
        index = int(index)
    if isinstance(index, bool) or not isinstance(index, (int, np.integer)):
        raise InputError(f"index must be an int, got {type(index).__name__}")
    index = int(index)
    if index < 0:
        index += n
    if not 0 <= index < n:
        raise IndexError(f"index {index} out of range for {n} items")
    return index
