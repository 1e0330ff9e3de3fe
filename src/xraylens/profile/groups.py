"""Group membership for Neuron Activation Profiles: which image belongs to which group.

A membership matrix is a bool tensor [N, G]: ``membership[i, g]`` is True when image ``i`` is in
group ``g``. Groups may overlap (an image with "COVID-19" and "Pneumonia" is in both) and an image
may be in no group (it then counts only for the inactive-map statistics).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from xraylens.errors import InputError

#: A group given by label names: one name, or a mapping group name -> label name(s) (union).
GroupSpec = Sequence[str] | Mapping[str, "str | Sequence[str]"]


def _close(name: str, known: Iterable[str]) -> str:
    known = list(known)
    close = difflib.get_close_matches(str(name), known, n=3, cutoff=0.5)
    return f"; did you mean {close}?" if close else f"; known: {known}"


def label_names(labels: Any) -> tuple[str, ...]:
    """Label names from a sequence of str or an object with ``names`` / ``labels`` (a LabelSpace,
    a Classifier, a dataset)."""
    for attr in ("names", "labels"):
        value = getattr(labels, attr, None)
        if value is not None and not isinstance(labels, (str, Sequence)):
            labels = value() if callable(value) else value
            break
    if isinstance(labels, str) or not isinstance(labels, Iterable):
        raise InputError(f"labels must be a sequence of label names, got {type(labels).__name__}")
    return tuple(str(v) for v in labels)


def group_names(groups: GroupSpec) -> tuple[str, ...]:
    """The group names of a group spec (the keys of a mapping, else the names themselves)."""
    if isinstance(groups, str):
        raise InputError(f"groups must be a sequence of names, not one str: use ({groups!r},)")
    names = tuple(str(g) for g in (groups.keys() if isinstance(groups, Mapping) else groups))
    if not names:
        raise InputError("groups must not be empty")
    dupes = sorted({g for g in names if names.count(g) > 1})
    if dupes:
        raise InputError(f"groups must be unique; repeated: {dupes}")
    return names


def _as_matrix(values: Any, name: str) -> torch.Tensor:
    """A bool [N, K] tensor from a bool or 0/1 tensor or array."""
    if not isinstance(values, torch.Tensor):
        try:
            values = torch.as_tensor(np.asarray(values))
        except (TypeError, ValueError, RuntimeError) as exc:
            raise InputError(f"{name} must be a bool or 0/1 matrix [N, K]: {exc}") from exc
    values = values.detach()
    if values.dim() != 2:
        raise InputError(f"{name} must be a matrix [N, K], got shape {tuple(values.shape)}")
    if values.dtype == torch.bool:
        return values.cpu()
    if values.is_complex() or not ((values == 0) | (values == 1)).all():
        raise InputError(f"{name} must hold only 0/1 or bool values (dtype {values.dtype})")
    return values.cpu() != 0


def check_membership(membership: Any, n_images: int, n_groups: int | None) -> torch.Tensor:
    """Validate a membership matrix [N, G] and return it as a bool CPU tensor."""
    m = _as_matrix(membership, "membership")
    if m.shape[0] != n_images:
        raise InputError(f"membership has {m.shape[0]} rows for a batch of {n_images} images")
    if n_groups is not None and m.shape[1] != n_groups:
        raise InputError(f"membership has {m.shape[1]} columns for {n_groups} groups")
    return m


def membership_from_targets(targets: Any, labels: Any, groups: GroupSpec) -> torch.Tensor:
    """Membership [N, G] from multi-label targets [N, L] (bool or 0/1).

    Args:
        targets: [N, L], one column per label of ``labels``.
        labels: the L label names (a sequence, ``clf.labels``, or a LabelSpace).
        groups: label names (one group per label, e.g. ``("COVID-19", "Pneumonia")``), or a
            mapping group name -> label name or list of label names; an image is in the group
            when it has any of them.

    Example: ``membership_from_targets(y, clf.labels, ("COVID-19", "Pneumonia", "No Finding"))``.
    """
    names = label_names(labels)
    t = _as_matrix(targets, "targets")
    if t.shape[1] != len(names):
        raise InputError(f"targets have {t.shape[1]} columns for {len(names)} labels")
    spec = groups if isinstance(groups, Mapping) else {g: g for g in group_names(groups)}
    columns = []
    for group, members in spec.items():
        members = (members,) if isinstance(members, str) else tuple(members)
        if not members:
            raise InputError(f"group {group!r} lists no label")
        index = []
        for label in members:
            if label not in names:
                raise InputError(f"group {group!r}: unknown label {label!r}{_close(label, names)}")
            index.append(names.index(label))
        columns.append(t[:, index].any(dim=1))
    group_names(spec)  # validates the names
    return torch.stack(columns, dim=1)


def membership_from_records(
    records: Iterable[Any],
    fn: Callable[[Any], str | Iterable[str] | None],
    groups: Sequence[str],
    *,
    strict: bool = True,
) -> torch.Tensor:
    """Membership [N, G] from a user function of each record.

    ``fn(record)`` returns a group name, several names (overlapping groups), or None (no group).
    With ``strict`` (default) a name outside ``groups`` is an error; else it is ignored.

    Example: ``membership_from_records(recs, lambda r: r["source"], ("covid", "kermany"))``.
    """
    names = group_names(groups)
    position = {g: i for i, g in enumerate(names)}
    rows = []
    for i, record in enumerate(records):
        row = [False] * len(names)
        got = fn(record)
        got = () if got is None else (got,) if isinstance(got, str) else got
        for name in got:
            if name in position:
                row[position[name]] = True
            elif strict:
                raise InputError(f"record {i}: group {name!r} is not one of {list(names)}")
        rows.append(row)
    return torch.tensor(rows, dtype=torch.bool).reshape(len(rows), len(names))
