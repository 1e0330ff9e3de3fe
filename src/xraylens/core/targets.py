"""Multi-label targets: which (image, label) pairs to explain, and where each map goes.

Accepted forms of ``targets`` (``N`` images, ``L`` labels):

- ``"all"``: every label for every image (T = L).
- a label name or index, or a list of them: the same labels for every image (T = len).
- a per-image list of such lists (length N): T is the largest count, ``mask`` marks filled slots.
- a bool or 0/1 tensor / array [N, L]: per-image, labels in label order.
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs
import numpy as np
import torch

from xraylens.errors import InputError


@attrs.frozen(eq=False)
class TargetPlan:
    """The (image, label) pairs to explain, flattened to P pairs.

    Attributes:
        image: LongTensor [P], image index of each pair.
        label: LongTensor [P], label index of each pair.
        slot: LongTensor [P], position of each pair in the output's T axis.
        mask: BoolTensor [N, T], True where a slot holds a pair.
        labels: label names of the T slots (uniform), or one tuple per image (per-image).
        per_image: whether targets differ between images.
    """

    image: torch.Tensor
    label: torch.Tensor
    slot: torch.Tensor
    mask: torch.Tensor
    labels: tuple[str, ...] | list[tuple[str, ...]]
    per_image: bool

    @property
    def n_pairs(self) -> int:
        return int(self.image.numel())

    @property
    def n_images(self) -> int:
        return int(self.mask.shape[0])

    @property
    def n_slots(self) -> int:
        return int(self.mask.shape[1])

    def scatter(self, pair_values: torch.Tensor, fill: float = 0.0) -> torch.Tensor:
        """Place per-pair values [P, ...] into a tensor [N, T, ...] (``fill`` in empty slots)."""
        if pair_values.shape[0] != self.n_pairs:
            raise InputError(f"expected {self.n_pairs} pair values, got {pair_values.shape[0]}")
        out = pair_values.new_full((self.n_images, self.n_slots, *pair_values.shape[1:]), fill)
        out[self.image.to(out.device), self.slot.to(out.device)] = pair_values
        return out

    def pairs_of_image(self, i: int) -> torch.Tensor:
        """Indices (into the P pairs) of image ``i``'s pairs."""
        return torch.nonzero(self.image == i).flatten()


def _label_index(label, labels: Sequence[str]) -> int:
    if isinstance(label, (bool, np.bool_)):
        raise InputError(f"target {label!r}: use label names or indices, or a [N, L] mask")
    if isinstance(label, (int, np.integer)):
        if not -len(labels) <= int(label) < len(labels):
            raise InputError(f"target index {int(label)} out of range for {len(labels)} labels")
        return int(label) % len(labels)
    if isinstance(label, str):
        from xraylens.core.names import find_label

        return find_label(label, labels, what="target label")
    raise InputError(f"target {label!r}: expected a label name or index")


def _index_list(items, labels: Sequence[str], where: str) -> list[int]:
    if isinstance(items, str) and items == "all":
        return list(range(len(labels)))
    if isinstance(items, (str, int, np.integer)):
        items = [items]
    if not isinstance(items, (list, tuple)):
        raise InputError(
            f"{where}: expected 'all', a label name or index, or a list of them; got {items!r}"
        )
    idx = [_label_index(item, labels) for item in items]
    if len(set(idx)) != len(idx):
        names = [labels[i] for i in idx]
        raise InputError(f"{where}: a label is repeated in {names}")
    return idx


def _is_sequence_of_sequences(targets) -> bool:
    return (
        isinstance(targets, (list, tuple))
        and len(targets) > 0
        and all(
            isinstance(t, (list, tuple, np.ndarray, torch.Tensor))
            or (isinstance(t, str) and t == "all")
            for t in targets
        )
    )


def resolve_targets(targets, labels: Sequence[str], n_images: int) -> TargetPlan:
    """Turn any accepted form of ``targets`` into a :class:`TargetPlan` for ``n_images``."""
    labels = tuple(labels)
    if isinstance(targets, (torch.Tensor, np.ndarray)):
        return _from_mask(torch.as_tensor(targets), labels, n_images)
    if _is_sequence_of_sequences(targets):
        if len(targets) != n_images:
            raise InputError(f"per-image targets: got {len(targets)} lists for {n_images} images")
        per_image = [
            _index_list(list(t) if not isinstance(t, str) else t, labels, f"targets[{i}]")
            for i, t in enumerate(targets)
        ]
        return _from_lists(per_image, labels, per_image_form=True)
    if isinstance(targets, (list, tuple)) and len(targets) == 0:
        raise InputError("targets is empty; use 'all', label names or indices")
    uniform = _index_list(targets, labels, "targets")
    return _from_lists([uniform] * n_images, labels, per_image_form=False)


def _from_mask(mask: torch.Tensor, labels: tuple[str, ...], n_images: int) -> TargetPlan:
    if mask.dim() != 2 or tuple(mask.shape) != (n_images, len(labels)):
        raise InputError(
            f"target mask must be [N, L] = [{n_images}, {len(labels)}], got {tuple(mask.shape)}"
        )
    if mask.dtype != torch.bool:
        if not torch.all((mask == 0) | (mask == 1)):
            raise InputError("target mask must be bool or hold only 0 and 1")
        mask = mask != 0
    per_image = [torch.nonzero(row).flatten().tolist() for row in mask.cpu()]
    return _from_lists(per_image, labels, per_image_form=True)


def _from_lists(per_image: list[list[int]], labels: tuple[str, ...], per_image_form: bool):
    n = len(per_image)
    t = max((len(p) for p in per_image), default=0)
    if t == 0:
        raise InputError("targets select no label for any image")
    image, label, slot = [], [], []
    mask = torch.zeros(n, t, dtype=torch.bool)
    for i, idx in enumerate(per_image):
        for s, j in enumerate(idx):
            image.append(i)
            label.append(j)
            slot.append(s)
            mask[i, s] = True
    names: tuple[str, ...] | list[tuple[str, ...]]
    if per_image_form:
        names = [tuple(labels[j] for j in idx) for idx in per_image]
    else:
        names = tuple(labels[j] for j in per_image[0])
    return TargetPlan(
        image=torch.tensor(image, dtype=torch.long),
        label=torch.tensor(label, dtype=torch.long),
        slot=torch.tensor(slot, dtype=torch.long),
        mask=mask,
        labels=names,
        per_image=per_image_form,
    )
