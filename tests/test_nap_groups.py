"""Group membership helpers for NAPs: from label targets and from a function of the record."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import xraylens as xl
from xraylens.profile import membership_from_records, membership_from_targets
from xraylens.profile.groups import check_membership, label_names

LABELS = ("COVID-19", "Pneumonia", "No Finding", "ARDS")
TARGETS = torch.tensor([[1, 1, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1], [1, 1, 0, 1]])


def test_from_targets_by_label_names():
    m = membership_from_targets(TARGETS, LABELS, ("COVID-19", "Pneumonia", "No Finding"))
    assert m.dtype == torch.bool and m.shape == (5, 3)
    assert m.tolist() == [
        [True, True, False],  # COVID-19 and Pneumonia: in both groups (overlap)
        [False, True, False],
        [False, False, True],
        [False, False, False],  # ARDS only: in no group
        [True, True, False],
    ]


def test_from_targets_with_union_groups_and_classifier_labels():
    clf = xl.Classifier(torch.nn.Linear(1, 4), labels=LABELS)
    groups = {"sick": ["COVID-19", "ARDS"], "healthy": "No Finding"}
    m = membership_from_targets(TARGETS.numpy().astype(bool), clf, groups)
    assert m[:, 0].tolist() == [True, False, False, True, True]
    assert m[:, 1].tolist() == [False, False, True, False, False]


def test_from_targets_errors():
    with pytest.raises(xl.InputError, match="did you mean"):
        membership_from_targets(TARGETS, LABELS, ("Covid-19",))
    with pytest.raises(xl.InputError, match="columns"):
        membership_from_targets(TARGETS[:, :3], LABELS, ("COVID-19",))
    with pytest.raises(xl.InputError, match="0/1"):
        membership_from_targets(TARGETS * 0.7, LABELS, ("COVID-19",))
    with pytest.raises(xl.InputError, match="unique"):
        membership_from_targets(TARGETS, LABELS, ("ARDS", "ARDS"))
    with pytest.raises(xl.InputError, match="one str"):
        membership_from_targets(TARGETS, LABELS, "ARDS")
    with pytest.raises(xl.InputError, match="no label"):
        membership_from_targets(TARGETS, LABELS, {"empty": []})


def test_label_names_from_objects():
    class Space:
        names = LABELS

    assert label_names(Space()) == LABELS
    assert label_names(list(LABELS)) == LABELS
    with pytest.raises(xl.InputError):
        label_names(3)


def test_from_records():
    records = [
        {"source": "covid", "finding": "Pneumonia/Viral/COVID-19"},
        {"source": "kermany", "finding": "No Finding"},
        {"source": "other", "finding": "ARDS"},
    ]
    m = membership_from_records(records, lambda r: r["source"], ("covid", "kermany"), strict=False)
    assert m.tolist() == [[True, False], [False, True], [False, False]]

    def several(r):
        if r["finding"] == "ARDS":
            return None
        return [part for part in ("COVID-19", "Pneumonia") if part in r["finding"]]

    m = membership_from_records(records, several, ("COVID-19", "Pneumonia"))
    assert m.tolist() == [[True, True], [False, False], [False, False]]
    with pytest.raises(xl.InputError, match="record 2"):
        membership_from_records(records, lambda r: r["source"], ("covid", "kermany"))
    assert membership_from_records([], lambda r: None, ("a",)).shape == (0, 1)


def test_check_membership():
    assert check_membership(np.array([[1, 0], [0, 0]]), 2, 2).dtype == torch.bool
    with pytest.raises(xl.InputError, match="matrix"):
        check_membership(torch.ones(3), 3, None)
    with pytest.raises(xl.InputError, match="0/1"):
        check_membership([[2, 0]], 1, 2)
    with pytest.raises(xl.InputError, match="membership must"):
        check_membership([["a", "b"]], 1, 2)


def test_label_space_and_paper_labels():
    space = xl.data.LabelSpace()
    y = torch.zeros(2, len(space.labels))
    y[0, space.labels.index("COVID-19")] = 1
    y[1, space.labels.index("No Finding")] = 1
    m = membership_from_targets(y, space, ("COVID-19", "No Finding"))
    assert m.tolist() == [[True, False], [False, True]]
