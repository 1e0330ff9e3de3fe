"""Chest X-ray data: labels, image reading, the paper's preprocessing, datasets and splits."""

from xraylens.data.base import (
    ChestXrayDataset,
    CombinedDataset,
    DatasetSubset,
    DataWarning,
    collate,
    combine,
)
from xraylens.data.datasets import CovidChestXray, Kermany, parse_kermany_name
from xraylens.data.io import read_image, read_mask
from xraylens.data.labels import PAPER_HIERARCHY, PAPER_LABELS, LabelSpace
from xraylens.data.phantoms import Phantom, Phantoms, Shortcut, make_phantom
from xraylens.data.preprocess import (
    PERCENTILE_PRESETS,
    letterbox_geometry,
    normalize_intensity,
    preprocess,
    preprocess_mask,
)
from xraylens.data.splits import (
    Split,
    check_split,
    group_ids,
    kfold_splits,
    load_splits,
    paper_splits,
    save_splits,
    with_validation,
)

__all__ = [
    "PAPER_HIERARCHY",
    "PAPER_LABELS",
    "PERCENTILE_PRESETS",
    "ChestXrayDataset",
    "CombinedDataset",
    "CovidChestXray",
    "DataWarning",
    "DatasetSubset",
    "Kermany",
    "LabelSpace",
    "Phantom",
    "Phantoms",
    "Shortcut",
    "Split",
    "check_split",
    "collate",
    "combine",
    "group_ids",
    "kfold_splits",
    "letterbox_geometry",
    "load_splits",
    "make_phantom",
    "normalize_intensity",
    "paper_splits",
    "parse_kermany_name",
    "preprocess",
    "preprocess_mask",
    "read_image",
    "read_mask",
    "save_splits",
    "with_validation",
]
