"""Readers of the two public datasets the paper combined, in their native layouts.

- :class:`CovidChestXray`: ieee8023/covid-chestxray-dataset (``metadata.csv`` + ``images/``).
- :class:`Kermany`: Kermany et al. "Chest X-Ray Images (Pneumonia)"
  (``{train,test,val}/{NORMAL,PNEUMONIA}/<file>``).

Items, records and targets: see :mod:`xraylens.data.base`. Patient ids are namespaced by source
(``covid-chestxray:285``, ``kermany:person12``) so the two datasets never collide. Lung masks
are looked up as ``<masks>/<image stem>.png``; by default ``masks`` is the ``lung-masks/<name>``
folder beside the dataset root (``<name>`` = the root's folder name, or the dataset's usual
name: ``covid-chestxray``, ``chest_xray``).
"""

from __future__ import annotations

import csv
import os
import re
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from xraylens.data.base import ChestXrayDataset, DataWarning
from xraylens.errors import InputError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def _mask_dir(root: Path, masks, default_name: str) -> Path | None:
    if masks is False:
        return None
    if masks is not None and masks is not True:
        return Path(masks)
    for name in (root.name, default_name):
        candidate = root.parent / "lung-masks" / name
        if candidate.is_dir():
            return candidate
    return None


def _mask_index(mask_dir: Path | None) -> dict[str, Path]:
    """stem -> mask path, from one directory listing (no stat per image)."""
    if mask_dir is None or not mask_dir.is_dir():
        return {}
    return {
        Path(name).stem: mask_dir / name
        for name in os.listdir(mask_dir)
        if name.lower().endswith(".png")
    }


def _warn(dataset: ChestXrayDataset, what: str, items: list[dict[str, Any]], attr: str) -> None:
    if items:
        first = ", ".join(str(x.get("filename") or x.get("path")) for x in items[:3])
        warnings.warn(
            f"{type(dataset).__name__}: {len(items)} {what} (e.g. {first}); see .{attr}",
            DataWarning,
            stacklevel=3,
        )


class _UnionFind:
    def __init__(self):
        self.parent: dict[str, str] = {}

    def find(self, x: str) -> str:
        self.parent.setdefault(x, x)
        while self.parent[x] != x:
            self.parent[x] = self.parent[self.parent[x]]
            x = self.parent[x]
        return x

    def union(self, a: str, b: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)  # smallest id names the group: deterministic


class CovidChestXray(ChestXrayDataset):
    """The COVID-19 image data collection (Cohen et al.) in its upstream layout.

    Args:
        root: the folder holding ``metadata.csv`` and ``images/`` (or the csv file itself).
        views: views to keep (case-insensitive); None keeps all.
        size, percentiles, label_space, transform, cache: see :class:`ChestXrayDataset`.
        modality: keep rows of this modality ("X-ray"); None keeps all.
        masks: lung-mask folder (None: auto, see module docstring; False: none).
        unknown: a finding outside the label space raises (``"error"``) or the row is left out
            and listed in ``skipped`` (``"skip"``).

    Rows whose image file is missing are left out, listed in ``missing`` and reported with a
    :class:`DataWarning`. A file listed under several rows (upstream lists 4 files under two
    patient ids each) is yielded once, for its first row; the others are listed in ``duplicates``
    and their patient ids added to the record's ``patient_aliases``; every patient id sharing an
    image gets the same ``group``, the unit that splits keep on one side.
    """

    source = "covid-chestxray"

    def __init__(
        self,
        root: str | os.PathLike,
        views: Sequence[str] | None = ("PA", "AP", "AP Supine"),
        size: int | None = 512,
        *,
        modality: str | None = "X-ray",
        masks: str | os.PathLike | bool | None = None,
        unknown: str = "error",
        percentiles="paper",
        label_space=None,
        transform=None,
        cache: bool = False,
    ):
        super().__init__(
            size=size,
            percentiles=percentiles,
            label_space=label_space,
            transform=transform,
            cache=cache,
        )
        root = Path(root)
        csv_path = root if root.suffix.lower() == ".csv" else root / "metadata.csv"
        self.root = csv_path.parent
        if not csv_path.is_file():
            raise InputError(f"CovidChestXray: no metadata file {csv_path}")
        self.mask_dir = _mask_dir(self.root, masks, "covid-chestxray")
        mask_index = _mask_index(self.mask_dir)
        keep_views = None if views is None else {" ".join(v.split()).lower() for v in views}
        by_file: dict[str, dict[str, Any]] = {}
        groups = _UnionFind()
        for line, row in self._rows(csv_path):
            if modality is not None and _norm(row.get("modality")) != _norm(modality):
                continue
            view = " ".join((row.get("view") or "").split())
            if keep_views is not None and view.lower() not in keep_views:
                continue
            folder = (row.get("folder") or "images").strip() or "images"
            filename = (row.get("filename") or "").strip()
            patient = f"{self.source}:{(row.get('patientid') or '').strip()}"
            finding = (row.get("finding") or "").strip()
            rel = f"{folder}/{filename}"
            path = self.root / folder / filename
            info = {"row": line, "filename": filename, "patient_id": patient, "path": str(path)}
            groups.find(patient)
            if rel in by_file:
                kept = by_file[rel]
                groups.union(patient, kept["patient_id"])
                if patient not in kept["patient_aliases"]:
                    kept["patient_aliases"] = (*kept["patient_aliases"], patient)
                self.duplicates.append(
                    {
                        **info,
                        "kept_row": kept["row"],
                        "kept_patient_id": kept["patient_id"],
                        "finding": finding,
                        "kept_finding": kept["finding"],
                    }
                )
                continue
            if not filename or not path.is_file():
                self.missing.append(info)
                continue
            try:
                labels = self.label_space.parse(finding, unknown=unknown)
            except InputError as exc:
                raise InputError(f"{csv_path} line {line}: {exc}") from None
            if not labels:
                self.skipped.append({**info, "reason": f"unknown finding {finding!r}"})
                continue
            record = {
                "id": f"{self.source}:{rel}",
                "patient_id": patient,
                "patient_aliases": (patient,),
                "path": str(path),
                "finding": finding,
                "labels": labels,
                "source": self.source,
                "view": view,
                "mask_path": _str(mask_index.get(Path(filename).stem)),
                "row": line,
            }
            for key in ("sex", "age", "offset", "date", "license"):
                record[key] = (row.get(key) or "").strip() or None
            by_file[rel] = record
            self.records.append(record)
        for record in self.records:
            record["group"] = groups.find(record["patient_id"])
        _warn(self, "metadata rows name missing image files", self.missing, "missing")
        _warn(self, "metadata rows repeat an image already listed", self.duplicates, "duplicates")
        _warn(self, "rows were left out", self.skipped, "skipped")

    @staticmethod
    def _rows(csv_path: Path):
        with open(csv_path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            needed = {"patientid", "finding", "filename"}
            if not needed <= set(reader.fieldnames or ()):
                raise InputError(
                    f"{csv_path}: expected upstream columns {sorted(needed)}, "
                    f"got {reader.fieldnames}"
                )
            yield from enumerate(reader, start=2)


# personN_bacteria_M / personN_virus_M (pneumonia); IM-XXXX-YYYY[-ZZZZ] and NORMAL2-IM-XXXX-YYYY
# (normal, patient XXXX); the Mendeley v3 names NORMAL-ID-N, BACTERIA-ID-N, VIRUS-ID-N.
_PERSON = re.compile(r"^person(\d+)_(bacteria|virus)_\d+$", re.IGNORECASE)
_IM = re.compile(r"^(?:NORMAL2-)?IM-(\d+)(?:-\d+)+$", re.IGNORECASE)
_MENDELEY = re.compile(r"^(NORMAL|BACTERIA|VIRUS)-(\d+)-\d+$", re.IGNORECASE)
_KERMANY_FINDINGS = {
    "normal": "No Finding",
    "bacteria": "Pneumonia/Bacterial",
    "virus": "Pneumonia/Viral",
}


def parse_kermany_name(stem: str) -> tuple[str, str] | None:
    """``(patient, kind)`` from a Kermany file stem (kind: normal/bacteria/virus), or None.

    ``NORMAL2-IM-0927-0001`` and ``IM-0927-0001`` give the same patient ``IM-0927``: whether the
    two prefixes number patients apart is not documented upstream, and merging two patients is
    harmless for a subject-level split while separating one would leak.
    """
    if m := _PERSON.match(stem):
        return f"person{int(m.group(1))}", m.group(2).lower()
    if m := _IM.match(stem):
        return f"IM-{m.group(1)}", "normal"
    if m := _MENDELEY.match(stem):
        return m.group(2), m.group(1).lower()
    return None


class Kermany(ChestXrayDataset):
    """Kermany et al. "Chest X-Ray Images (Pneumonia)": ``{train,test,val}/{NORMAL,PNEUMONIA}``.

    The pneumonia type and the patient come from the file name (``personN_bacteria_M``,
    ``personN_virus_M``, ``IM-XXXX-YYYY``), never from the folders: upstream folders leak
    patients between train and test. Labels: normal -> No Finding; bacteria -> Bacterial
    Pneumonia (+ Pneumonia); virus -> Viral Pneumonia (+ Pneumonia). The upstream folder is kept
    in ``record["folder"]`` for reference. View: "AP" (the dataset's anterior-posterior images).
    Files whose name or class folder cannot be parsed are left out and listed in ``skipped``.

    Args:
        root: the folder holding ``train/``, ``test/`` and optionally ``val/``.
        folders: which of them to read (absent ones are ignored).
        size, percentiles, label_space, transform, cache, masks: see :class:`CovidChestXray`.
    """

    source = "kermany"

    def __init__(
        self,
        root: str | os.PathLike,
        size: int | None = 512,
        *,
        folders: Sequence[str] = ("train", "test", "val"),
        masks: str | os.PathLike | bool | None = None,
        percentiles="paper",
        label_space=None,
        transform=None,
        cache: bool = False,
    ):
        super().__init__(
            size=size,
            percentiles=percentiles,
            label_space=label_space,
            transform=transform,
            cache=cache,
        )
        self.root = root = Path(root)
        present = [f for f in folders if (root / f).is_dir()]
        if not present:
            raise InputError(f"Kermany: none of {list(folders)} is a folder under {root}")
        self.mask_dir = _mask_dir(root, masks, "chest_xray")
        mask_index = _mask_index(self.mask_dir)
        for folder in present:
            for cls in ("NORMAL", "PNEUMONIA"):
                class_dir = root / folder / cls
                if not class_dir.is_dir():
                    continue
                for name in sorted(os.listdir(class_dir)):
                    self._add(root, folder, cls, name, mask_index)
        _warn(self, "files were left out", self.skipped, "skipped")

    def _add(self, root: Path, folder: str, cls: str, name: str, masks: dict[str, Path]) -> None:
        path = root / folder / cls / name
        if name.startswith(".") or not path.is_file():
            return
        rel = f"{folder}/{cls}/{name}"
        if not name.lower().endswith(IMAGE_SUFFIXES):
            self.skipped.append({"path": str(path), "reason": "not a .png/.jpg/.jpeg file"})
            return
        parsed = parse_kermany_name(Path(name).stem)
        if parsed is None:
            self.skipped.append({"path": str(path), "reason": "file name has no patient id"})
            return
        patient, kind = parsed
        if (kind == "normal") != (cls == "NORMAL"):
            self.skipped.append({"path": str(path), "reason": f"{kind} image in folder {cls}"})
            return
        finding = _KERMANY_FINDINGS[kind]
        patient_id = f"{self.source}:{patient}"
        self.records.append(
            {
                "id": f"{self.source}:{rel}",
                "patient_id": patient_id,
                "patient_aliases": (patient_id,),
                "group": patient_id,
                "path": str(path),
                "finding": finding,
                "labels": self.label_space.parse(finding),
                "source": self.source,
                "view": "AP",
                "mask_path": _str(masks.get(Path(name).stem)),
                "folder": folder,
            }
        )


def _norm(text: str | None) -> str:
    return " ".join((text or "").split()).lower()


def _str(path: Path | None) -> str | None:
    return None if path is None else str(path)
