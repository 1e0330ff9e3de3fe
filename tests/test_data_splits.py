"""Subject-level splits: no patient group crosses parts, k-fold partitions, JSON round trip."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch

import xraylens as xl
from xraylens.data import (
    CovidChestXray,
    DataWarning,
    Kermany,
    Split,
    check_split,
    combine,
    group_ids,
    kfold_splits,
    load_splits,
    paper_splits,
    save_splits,
    with_validation,
)
from xraylens.data.splits import partition_groups


class Records:
    """A minimal dataset: records and targets, no images."""

    def __init__(self, n_patients=60, seed=0, n_labels=4):
        rng = np.random.default_rng(seed)
        self.records, rows = [], []
        for p in range(n_patients):
            label = rng.integers(0, n_labels) if p % 10 else n_labels - 1  # label 3 is rare
            for k in range(int(rng.integers(1, 4))):  # 1-3 images per patient
                self.records.append({"id": f"s:{p}/{k}.png", "patient_id": f"s:{p}"})
                rows.append(np.eye(n_labels)[label])
        # two patients sharing an image: an alias links them
        self.records[0]["patient_aliases"] = ("s:0", "s:59")
        self.targets = torch.tensor(np.array(rows), dtype=torch.float32)


def groups_of(dataset, ids):
    group = dict(zip((r["id"] for r in dataset.records), group_ids(dataset)))
    return {group[i] for i in ids}


def test_group_ids_merge_aliases():
    data = Records()
    groups = group_ids(data)
    patient59 = [g for r, g in zip(data.records, groups) if r["patient_id"] == "s:59"]
    assert set(patient59) == {groups[0]} == {"s:0"}


@pytest.mark.parametrize("stratify", [True, False])
def test_paper_splits_keep_patients_apart(stratify):
    data = Records()
    splits = paper_splits(data, 5, seed=3, stratify=stratify)
    assert [s.fold for s in splits] == [0, 1, 2, 3, 4]
    assert [s.seed for s in splits] == [3, 4, 5, 6, 7]
    n = len(data.records)
    for split in splits:
        check_split(split, data)
        assert not groups_of(data, split.train) & groups_of(data, split.test)
        assert sorted(split.train + split.test) == sorted(r["id"] for r in data.records)
        assert abs(len(split.test) / n - 0.4) < 0.1
    assert len({s.test for s in splits}) == 5  # one seed per fold: different splits
    again = paper_splits(data, 5, seed=3, stratify=stratify)
    assert again == splits  # deterministic


def test_kfold_partitions_every_patient_exactly_once():
    data = Records(n_patients=80)
    splits = kfold_splits(data, 5, seed=1)
    tests = [i for s in splits for i in s.test]
    assert sorted(tests) == sorted(r["id"] for r in data.records)  # every image once
    test_groups = [groups_of(data, s.test) for s in splits]
    assert sum(len(g) for g in test_groups) == len(set().union(*test_groups))  # disjoint
    for split in splits:
        check_split(split, data)
        assert set(split.train) == {r["id"] for r in data.records} - set(split.test)


def test_stratification_spreads_a_rare_label():
    data = Records(n_patients=100)
    rare = data.targets[:, 3] > 0
    for split in kfold_splits(data, 5, seed=0):
        idx = split.indices(data)["test"]
        share = rare[idx].sum().item() / rare.sum().item()
        assert 0.1 <= share <= 0.3  # every fold gets about a fifth of the rare label


def test_partition_groups_balances_label_counts():
    rng = np.random.default_rng(0)
    groups = [f"g{i}" for i in range(200)]
    labels = (rng.random((200, 3)) < [0.5, 0.1, 0.02]).astype(float)
    part = partition_groups(groups, labels, (0.6, 0.4), rng)
    in_test = np.array([part[g] == 1 for g in groups])
    for k in range(3):
        if labels[:, k].sum() >= 4:
            share = labels[in_test, k].sum() / labels[:, k].sum()
            assert abs(share - 0.4) <= 0.15


def test_validation_is_carved_from_training_patients():
    data = Records()
    (split,) = paper_splits(data, 1, val_size=0.25, seed=0)
    check_split(split, data)
    assert split.val and split.train and split.test
    assert not groups_of(data, split.val) & groups_of(data, split.train)
    assert not groups_of(data, split.val) & groups_of(data, split.test)
    plain = paper_splits(data, 1, seed=0)[0]
    assert set(split.val) | set(split.train) == set(plain.train) and split.test == plain.test
    carved = with_validation(plain, data, 0.25)
    assert carved == split
    with pytest.raises(xl.InputError, match="val_size"):
        with_validation(plain, data, 1.5)


def test_check_split_catches_a_crossing_patient():
    data = Records()
    split = kfold_splits(data, 3)[0]
    leaky = Split(train=split.train, test=split.test + (split.train[0],))
    with pytest.raises(xl.InputError, match="both"):
        check_split(leaky, data)
    # an alias-linked patient on the other side is caught too
    p59 = [r["id"] for r in data.records if r["patient_id"] == "s:59"]
    p0 = [r["id"] for r in data.records if r["patient_id"] == "s:0"]
    others = [r["id"] for r in data.records if r["patient_id"] not in ("s:0", "s:59")]
    with pytest.raises(xl.InputError, match="both"):
        check_split(Split(train=others + p0, test=p59), data)
    check_split(Split(train=others, test=p0 + p59), data)  # together: fine


def test_json_round_trip(tmp_path):
    data = Records()
    splits = paper_splits(data, 3, val_size=0.2, seed=7)
    path = tmp_path / "sub" / "splits.json"
    save_splits(path, splits, data)
    stored = json.loads(path.read_text())
    assert stored["format"] == "xraylens.splits" and len(stored["groups"]) == len(data.records)
    assert stored["splits"][0]["test"][0].startswith("s:")  # images keyed by stable id
    assert load_splits(path) == splits
    assert not list(tmp_path.glob("sub/.*tmp"))  # atomic write left no temporary file
    (tmp_path / "bad.json").write_text('{"format": "other"}')
    with pytest.raises(xl.InputError, match="not an xraylens splits"):
        load_splits(tmp_path / "bad.json")
    with pytest.raises(xl.InputError, match="cannot read"):
        load_splits(tmp_path / "absent.json")


def test_indices_and_unknown_ids():
    data = Records()
    split = kfold_splits(data, 4)[2]
    idx = split.indices(data)
    assert [data.records[i]["id"] for i in idx["test"]] == list(split.test)
    assert idx["val"] == []
    other = Records(n_patients=5, seed=1)
    other.records = [dict(r, id="x" + r["id"]) for r in other.records]
    with pytest.raises(xl.InputError, match="not in the dataset"):
        split.indices(other)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda d: paper_splits(d, 0), "n_splits"),
        (lambda d: paper_splits(d, 2, test_size=1.0), "test_size"),
        (lambda d: kfold_splits(d, 1), "at least 2"),
        (lambda d: kfold_splits([{"patient_id": "a"}], 2), "id"),
    ],
)
def test_bad_arguments(call, match):
    with pytest.raises(xl.InputError, match=match):
        call(Records())


def test_real_data_splits_never_cross_patients(shared_data, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        covid = CovidChestXray(shared_data / "covid-chestxray")
    data = combine(covid, Kermany(shared_data / "chest_xray"))
    splits = paper_splits(data, 5, val_size=0.15) + kfold_splits(data, 5)
    for split in splits:
        check_split(split, data)
        parts = split.indices(data)
        assert sum(map(len, parts.values())) == 1242
        for part in ("train", "val", "test"):
            others = [p for p in ("train", "val", "test") if p != part]
            mine = {data.records[i]["group"] for i in parts[part]}
            for other in others:
                assert not mine & {data.records[i]["group"] for i in parts[other]}
    # the duplicated images' two patient ids always fall on the same side
    for split in splits:
        side = {i: p for p in ("train", "val", "test") for i in getattr(split, p)}
        for d in covid.duplicates:
            image_id = f"covid-chestxray:images/{d['filename']}"
            kept = [r["id"] for r in covid.records if r["patient_id"] == d["kept_patient_id"]]
            assert {side[i] for i in kept} == {side[image_id]}
    folds = splits[5:]
    assert sorted(i for s in folds for i in s.test) == sorted(r["id"] for r in data.records)
    save_splits(tmp_path / "s.json", splits, data)
    assert load_splits(tmp_path / "s.json") == splits
