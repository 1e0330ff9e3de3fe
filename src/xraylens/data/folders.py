"""Opening a data folder: the two dataset layouts or plain image folders (CLI and demo).

:func:`open_data` recognises, in this order:

1. the covid-chestxray layout, ``DATA/metadata.csv`` (+ images): ``xl.data.CovidChestXray``;
2. the Kermany layout, ``DATA/{train,test,val}/{NORMAL,PNEUMONIA}``: ``xl.data.Kermany``;
3. a data root holding folders of those layouts (e.g. ``../shared/data``): all of them,
   combined as the paper did;
4. any other folder: a plain folder of images (searched recursively). Groups then come from a
   CSV (``--groups-csv``: columns ``path`` relative to DATA, and ``group``; several groups of one
   image separated by ``;``) or, without one, from each image's first sub-folder name
   (``DATA/<group>/.../image.png``).
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any

import torch

from xraylens.errors import InputError

#: Suffixes of the image files picked up from folders (read by :func:`xraylens.data.read_image`).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".dcm", ".dicom")


def is_covid_layout(path: Path) -> bool:
    return (path / "metadata.csv").is_file()


def is_kermany_layout(path: Path) -> bool:
    return any(
        (path / split / cls).is_dir()
        for split in ("train", "test", "val")
        for cls in ("NORMAL", "PNEUMONIA")
    )


def dataset_folders(root: Path) -> list[tuple[str, Path]]:
    """``[(kind, folder)]`` of the dataset layouts at ``root`` or directly below it."""
    if is_covid_layout(root):
        return [("covid-chestxray", root)]
    if is_kermany_layout(root):
        return [("kermany", root)]
    found = []
    for child in sorted(p for p in root.iterdir() if p.is_dir()):
        if is_covid_layout(child):
            found.append(("covid-chestxray", child))
        elif is_kermany_layout(child):
            found.append(("kermany", child))
    return found


def open_data(root: str | os.PathLike, size: int, *, groups_csv: str | None = None):
    """``(dataset, description)``; the dataset has ``records`` and ``image(i)`` (and, for the
    dataset layouts, ``targets`` and ``labels``)."""
    import warnings

    from xraylens.data.base import DataWarning, combine
    from xraylens.data.datasets import CovidChestXray, Kermany

    root = Path(root)
    if not root.is_dir():
        raise InputError(f"DATA {root} is not a folder")
    folders = dataset_folders(root)
    if not folders:
        ds = ImageFolder(root, size, groups_csv=groups_csv)
        return ds, f"{len(ds)} images in {root} (groups: {', '.join(ds.groups)})"
    if groups_csv:
        raise InputError("--groups-csv is for plain image folders; this is a dataset layout")
    parts = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)  # missing/duplicate rows are summarised
        for kind, folder in folders:
            cls = CovidChestXray if kind == "covid-chestxray" else Kermany
            parts.append(cls(folder, size=size))
    ds = parts[0] if len(parts) == 1 else combine(*parts)
    described = ", ".join(f"{type(p).__name__} {len(p)}" for p in parts)
    return ds, f"{len(ds)} images ({described}) from {root}"


class ImageFolder:
    """A plain folder of images with groups from a CSV or from sub-folder names.

    ``records[i]``: ``path``, ``groups`` (tuple of group names), ``source`` (the first
    sub-folder, or ``""``). ``ds[i]``: ``(image float32 [1, size, size], None, record)``.
    """

    def __init__(self, root: Path, size: int, *, groups_csv: str | None = None):
        self.root = Path(root)
        self.size = size
        paths = sorted(
            p
            for p in self.root.rglob("*")
            if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file() and not p.name.startswith(".")
        )
        if not paths:
            raise InputError(f"DATA {root}: no images and no dataset layout found")
        by_csv = _read_groups_csv(Path(groups_csv), self.root) if groups_csv else None
        self.records: list[dict[str, Any]] = []
        for p in paths:
            rel = p.relative_to(self.root)
            folder = rel.parts[0] if len(rel.parts) > 1 else ""
            if by_csv is not None:
                groups = by_csv.get(rel.as_posix(), ())
            else:
                groups = (folder,) if folder else ()
            self.records.append({"path": str(p), "groups": groups, "source": folder})
        seen: list[str] = []
        for rec in self.records:
            seen += [g for g in rec["groups"] if g not in seen]
        if not seen:
            raise InputError(
                f"DATA {root}: images have no group; put them in one sub-folder per group or "
                "give --groups-csv"
            )
        self.groups = tuple(seen)

    def __len__(self) -> int:
        return len(self.records)

    def image(self, index: int) -> torch.Tensor:
        from xraylens.data.io import read_image
        from xraylens.data.preprocess import preprocess

        return preprocess(read_image(self.records[index]["path"]), self.size)

    def __getitem__(self, index: int):
        """``(image [1, size, size], None, record)``, the shape of the dataset items."""
        return self.image(index), None, dict(self.records[index])


def _read_groups_csv(path: Path, root: Path) -> dict[str, tuple[str, ...]]:
    if not path.is_file():
        raise InputError(f"--groups-csv {path}: no such file")
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        if not {"path", "group"} <= set(reader.fieldnames or ()):
            raise InputError(f"--groups-csv {path}: needs columns 'path' and 'group'")
        out: dict[str, tuple[str, ...]] = {}
        for row in reader:
            rel = Path(row["path"].strip())
            if rel.is_absolute():
                try:
                    rel = rel.relative_to(root)
                except ValueError:
                    raise InputError(f"--groups-csv: {rel} is not inside {root}") from None
            groups = tuple(g.strip() for g in (row["group"] or "").split(";") if g.strip())
            out[rel.as_posix()] = groups
    return out


__all__ = ["IMAGE_SUFFIXES", "ImageFolder", "dataset_folders", "open_data"]
