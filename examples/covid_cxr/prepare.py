"""Step ``prepare``: datasets -> labels, subject-level splits with validation, image cache.

Splits are by patient group (patients sharing an image are one group, see
:func:`xl.data.group_ids`), stratified on the 14 labels: either the paper's independent 60/40
splits (fold ``k`` drawn with seed ``seed + k``) or a partitioned k-fold. From each fold's
training patients ``val_size`` is carved out as validation, also by patient, for model selection
(the paper's code selected on the test split; we never look at it before evaluation).
"""

from __future__ import annotations

import time

import attrs
import torch

import xraylens as xl
from examples.covid_cxr.context import Run
from examples.covid_cxr.data import (
    ImageStore,
    build_cache,
    cache_path,
    describe,
    load_dataset,
    read_json,
    write_json,
)


def make_splits(ds, profile) -> list[xl.data.Split]:
    """The profile's folds, each with a validation part carved from its training patients."""
    if profile.scheme == "paper":
        splits = xl.data.paper_splits(
            ds,
            profile.folds,
            test_size=profile.test_size,
            val_size=profile.val_size,
            seed=profile.seed,
        )
    else:
        splits = xl.data.kfold_splits(
            ds, profile.folds, val_size=profile.val_size, seed=profile.seed
        )
    for split in splits:
        xl.data.check_split(split, ds)
    return splits


def prepare(run: Run) -> dict:
    """Write ``run.json``, ``dataset.json``, ``splits.json`` and the image cache (rank 0; the
    other ranks wait). Skipped when done for the same data settings (``--force`` redoes it)."""
    t0 = time.perf_counter()
    meta_path = run.out / "run.json"
    done = False
    if meta_path.is_file() and not run.force:
        meta = run.check_prepared()
        done = (run.out / meta["cache"]).is_file() and (run.out / "splits.json").is_file()
    if not done and run.dist.is_main:
        ds = load_dataset(run.data, run.profile)
        ids = [r["id"] for r in ds.records]
        splits = make_splits(ds, run.profile)
        cache = build_cache(
            ds, cache_path(run.out, ids, run.profile, run.data), progress=run.show_progress
        )
        info = describe(ds)
        info["labels"] = list(ds.labels)
        info["label_space"] = ds.label_space.to_dict()
        write_json(run.out / "dataset.json", info)
        xl.data.save_splits(run.out / "splits.json", splits, ds)
        sizes = [{p: len(getattr(s, p)) for p in ("train", "val", "test")} for s in splits]
        meta = {
            "profile": run.profile.name,
            "settings": run.profile.to_dict(),
            "data": run.data,
            "data_fingerprint": run.profile.data_fingerprint(),
            "cache": str(cache.relative_to(run.out)),
            "images": len(ids),
            "split_sizes": sizes,
        }
        write_json(meta_path, meta)
    run.dist.barrier()
    meta = run.check_prepared()
    if not done:
        run.record_time("prepare", time.perf_counter() - t0, images=meta["images"])
    return meta


@attrs.frozen
class Prepared:
    """What ``prepare`` wrote, loaded: splits, cached images, labels and records."""

    splits: list
    store: ImageStore
    records: list
    labels: tuple

    def part(self, fold: int, part: str) -> list[int]:
        """Store positions of a fold's ``train``/``val``/``test`` images (split order)."""
        if not 0 <= fold < len(self.splits):
            raise xl.InputError(f"fold {fold} does not exist; prepared folds: {len(self.splits)}")
        return self.store.index(getattr(self.splits[fold], part))


def load_prepared(run: Run) -> Prepared:
    """Load the outputs of :func:`prepare` (clear error when they are missing or stale)."""
    meta = run.check_prepared()
    info = read_json(run.out / "dataset.json")
    records = info["records"]
    labels = tuple(info["labels"])
    targets = torch.zeros(len(records), len(labels))
    for i, rec in enumerate(records):
        for name in rec["labels"]:
            targets[i, labels.index(name)] = 1.0
    store = ImageStore(run.out / meta["cache"], [r["id"] for r in records], targets, labels)
    splits = xl.data.load_splits(run.out / "splits.json")
    return Prepared(splits, store, records, labels)
