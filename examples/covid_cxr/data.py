"""The recipe's data: both public datasets (or phantoms), a balanced slice, and the image cache.

Images are preprocessed once (:func:`xl.data.preprocess`: percentile clipping, letterbox to
``size``) and kept in one ``.npy`` file, float32 [N, 1, size, size], read back memory-mapped:
epochs then cost only the network, and several ``torchrun`` processes share one copy in the page
cache. The file name carries a hash of the image ids and the preprocessing settings, so a stale
cache is never used.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

import xraylens as xl
from examples.covid_cxr.config import Profile
from xraylens.core.atomic import atomic_write_text
from xraylens.errors import InputError

PHANTOMS = "phantoms"
#: Findings of the phantom stand-in data (needs no files; CI and demos).
PHANTOM_CLASSES = ("No Finding", "COVID-19", "Bacterial Pneumonia", "Viral Pneumonia")
#: Record keys kept in ``dataset.json`` (phantom records also hold numpy masks).
RECORD_KEYS = ("id", "patient_id", "group", "source", "finding", "labels", "path", "view")


def repo_root() -> Path:
    return Path(__file__).resolve().parents[2]


def default_data_root() -> Path | None:
    """``$XRAYLENS_DATA`` or ``../shared/data`` beside the repository, when present."""
    for candidate in (os.environ.get("XRAYLENS_DATA"), repo_root().parent / "shared" / "data"):
        if candidate and (Path(candidate) / "covid-chestxray").is_dir():
            return Path(candidate)
    return None


def resolve_data(data: str | os.PathLike | None) -> str:
    """The data argument as stored in the run: ``"phantoms"`` or an absolute folder path."""
    if data is None:
        root = default_data_root()
        if root is None:
            raise InputError(
                "no data folder: ../shared/data (beside the repository) is absent and "
                "$XRAYLENS_DATA is unset; pass --data DIR (holding covid-chestxray/ and "
                "chest_xray/) or --data phantoms"
            )
        return str(root.resolve())
    if str(data) == PHANTOMS:
        return PHANTOMS
    root = Path(data).expanduser()
    if not (root / "covid-chestxray").is_dir() and not (root / "chest_xray").is_dir():
        raise InputError(f"--data {root}: expected covid-chestxray/ and/or chest_xray/ in it")
    return str(root.resolve())


def primary_class(labels) -> str:
    """One class per image, for balancing and NAP groups: the most specific of the paper's."""
    labels = set(labels)
    for name in ("COVID-19", "Bacterial Pneumonia", "Viral Pneumonia", "Fungal Pneumonia"):
        if name in labels:
            return name
    if "Pneumonia" in labels:
        return "Pneumonia"
    return "No Finding" if "No Finding" in labels else "other"


def balanced_sample(records: list[dict[str, Any]], n: int, seed: int) -> list[int]:
    """``n`` indices drawn round-robin over :func:`primary_class` (seeded; sorted)."""
    rng = np.random.default_rng(seed)
    by_class: dict[str, list[int]] = {}
    for i, rec in enumerate(records):
        by_class.setdefault(primary_class(rec["labels"]), []).append(i)
    queues = [list(rng.permutation(idx)) for _, idx in sorted(by_class.items())]
    return sorted(round_robin(queues, n))


def round_robin(queues: list[list[int]], n: int) -> list[int]:
    """Up to ``n`` items taken from the queues in turn, one from each per round (the queues
    are emptied as they go)."""
    chosen: list[int] = []
    while len(chosen) < n and any(queues):
        for queue in queues:
            if queue and len(chosen) < n:
                chosen.append(int(queue.pop(0)))
    return chosen


def load_dataset(data: str, profile: Profile):
    """The combined dataset (``CovidChestXray`` + ``Kermany``, or ``Phantoms``), sliced to
    ``profile.limit`` images when set. Items: ``(image [1, S, S], target [14], record)``."""
    if data == PHANTOMS:
        n = profile.limit or 96
        return xl.data.Phantoms(n, profile.size, seed=profile.seed, classes=PHANTOM_CLASSES)
    root = Path(data)
    parts = []
    with warnings.catch_warnings():
        # the upstream duplicate rows are expected and reported in dataset.json
        warnings.simplefilter("ignore", xl.data.DataWarning)
        if (root / "covid-chestxray").is_dir():
            parts.append(
                xl.data.CovidChestXray(
                    root / "covid-chestxray", size=profile.size, percentiles=profile.percentiles
                )
            )
        if (root / "chest_xray").is_dir():
            parts.append(
                xl.data.Kermany(
                    root / "chest_xray", size=profile.size, percentiles=profile.percentiles
                )
            )
    ds = xl.data.combine(*parts)
    if profile.limit is not None and profile.limit < len(ds):
        ds = ds.subset(balanced_sample(ds.records, profile.limit, profile.seed))
    return ds


def describe(ds) -> dict[str, Any]:
    """JSON-ready summary: counts per label and source, the upstream duplicates, every record."""
    records = ds.records
    parts = getattr(getattr(ds, "dataset", ds), "datasets", [getattr(ds, "dataset", ds)])
    duplicates = [
        {k: d.get(k) for k in ("filename", "patient_id", "kept_patient_id")}
        for part in parts
        for d in getattr(part, "duplicates", [])
    ]
    counts = dict(zip(ds.labels, ds.targets.sum(0).long().tolist()))
    sources: dict[str, int] = {}
    for rec in records:
        sources[rec["source"]] = sources.get(rec["source"], 0) + 1
    return {
        "images": len(records),
        "patients": len({r["patient_id"] for r in records}),
        "sources": sources,
        "label_counts": counts,
        "duplicate_rows": duplicates,
        "records": [
            {k: (list(r[k]) if k == "labels" else r.get(k)) for k in RECORD_KEYS} for r in records
        ],
    }


def cache_path(out: Path, ids: list[str], profile: Profile, data: str) -> Path:
    key = json.dumps([ids, profile.size, profile.percentiles, data == PHANTOMS])
    digest = hashlib.sha1(key.encode()).hexdigest()[:12]
    return out / "cache" / f"images-{profile.size}px-{digest}.npy"


def build_cache(ds, path: Path, *, progress: bool = True) -> Path:
    """Preprocess every image of ``ds`` once into ``path`` (float32 [N, 1, S, S]; atomic)."""
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    first = ds[0][0]
    try:
        arr = np.lib.format.open_memmap(
            tmp, mode="w+", dtype=np.float32, shape=(len(ds), *first.shape)
        )
        for i in tqdm(range(len(ds)), desc="preprocess", disable=not progress, leave=False):
            arr[i] = (first if i == 0 else ds[i][0]).numpy()
        arr.flush()
        del arr
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


class ImageStore:
    """The cached images plus targets and ids of every image, addressed by position."""

    def __init__(self, path: Path, ids: list[str], targets: torch.Tensor, labels: tuple[str, ...]):
        self.images = np.load(path, mmap_mode="r")
        if self.images.shape[0] != len(ids):
            raise InputError(
                f"image cache {path} holds {self.images.shape[0]} images, not {len(ids)}"
            )
        self.ids = list(ids)
        self.position = {x: i for i, x in enumerate(ids)}
        self.targets = targets.float()
        self.labels = tuple(labels)

    def __len__(self) -> int:
        return len(self.ids)

    def index(self, ids) -> list[int]:
        """Positions of image ids (clear error for an id the store lacks)."""
        try:
            return [self.position[x] for x in ids]
        except KeyError as exc:
            raise InputError(f"image {exc} is not in the prepared data; rerun prepare") from None

    def batch(self, positions, dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
        """``(images [B, 1, S, S], targets [B, L])`` of the given positions (copies)."""
        pos = np.asarray(list(positions), dtype=np.int64)
        x = torch.from_numpy(np.ascontiguousarray(self.images[pos])).to(dtype)
        return x, self.targets[torch.from_numpy(pos)].to(dtype)


def write_json(path: Path, data: Any) -> Path:
    """Atomic, pretty JSON."""
    return atomic_write_text(path, json.dumps(data, indent=1, default=_default) + "\n")


def update_json(path: Path, data: Any) -> bool:
    """Write ``data`` unless ``path`` already holds it (reruns leave finished files untouched);
    returns whether it wrote."""
    if path.is_file():
        try:
            if json.loads(path.read_text(encoding="utf-8")) == json.loads(
                json.dumps(data, default=_default)
            ):
                return False
        except ValueError:
            pass
    write_json(path, data)
    return True


def read_json(path: Path) -> Any:
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except FileNotFoundError:
        raise InputError(f"{path} is missing: run the step that writes it first") from None
    except ValueError as exc:
        raise InputError(f"{path} is not valid JSON: {exc}") from None


def _default(value):
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    if isinstance(value, (tuple, set)):
        return list(value)
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "tolist"):  # tensors and arrays
        return value.tolist()
    return repr(value)
