"""Data folders for the command line: :mod:`xraylens.data.folders` with usage errors.

The layout detection lives in :mod:`xraylens.data.folders` (the demo uses it too); here its
input errors become :class:`~xraylens.commands.common.UsageError` (exit status 2), and
``--groups`` / ``--group-by`` become a membership matrix.
"""

from __future__ import annotations

import os

import torch

from xraylens.commands.common import UsageError
from xraylens.data.folders import (
    IMAGE_SUFFIXES,
    ImageFolder,
    dataset_folders,
    is_covid_layout,
    is_kermany_layout,
)
from xraylens.data.folders import open_data as _open_data
from xraylens.errors import InputError


def open_data(root: str | os.PathLike, size: int, *, groups_csv: str | None = None):
    """``(dataset, description)`` (see :func:`xraylens.data.folders.open_data`)."""
    try:
        return _open_data(root, size, groups_csv=groups_csv)
    except InputError as exc:
        raise UsageError(str(exc)) from exc


def membership(ds, groups: list[str] | None, group_by: str) -> tuple[torch.Tensor, tuple]:
    """Membership [N, G] and the group names, for ``--groups`` / ``--group-by``."""
    from xraylens.profile import membership_from_records, membership_from_targets

    if isinstance(ds, ImageFolder):
        names = tuple(groups) if groups else ds.groups
        unknown = [g for g in names if g not in ds.groups]
        if unknown:
            raise UsageError(f"--groups {unknown}: the folder's groups are {list(ds.groups)}")
        m = membership_from_records(ds.records, lambda r: r["groups"], names, strict=False)
        return m, names
    if group_by == "source":
        sources = sorted({r["source"] for r in ds.records})
        names = tuple(groups) if groups else tuple(sources)
        m = membership_from_records(ds.records, lambda r: r["source"], names, strict=False)
        return m, names
    names = tuple(groups) if groups else ("COVID-19", "Pneumonia", "No Finding")
    try:
        return membership_from_targets(ds.targets, ds.labels, names), names
    except InputError as exc:
        raise UsageError(f"--groups: {exc}") from exc


__all__ = [
    "IMAGE_SUFFIXES",
    "ImageFolder",
    "dataset_folders",
    "is_covid_layout",
    "is_kermany_layout",
    "membership",
    "open_data",
]
