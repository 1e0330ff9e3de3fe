"""Multi-label target resolution."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from xraylens.core.targets import resolve_targets
from xraylens.errors import InputError

LABELS = ("ARDS", "COVID-19", "No Finding", "Pneumonia")


def pairs(plan):
    return list(zip(plan.image.tolist(), plan.label.tolist(), plan.slot.tolist()))


def test_all():
    plan = resolve_targets("all", LABELS, n_images=2)
    assert plan.labels == LABELS and not plan.per_image
    assert plan.n_pairs == 8 and plan.mask.all() and plan.mask.shape == (2, 4)
    assert pairs(plan)[:4] == [(0, 0, 0), (0, 1, 1), (0, 2, 2), (0, 3, 3)]


@pytest.mark.parametrize("targets", [["COVID-19", "ARDS"], [1, 0], ("COVID-19", 0), [-3, 0]])
def test_same_labels_for_every_image(targets):
    plan = resolve_targets(targets, LABELS, n_images=3)
    assert plan.labels == ("COVID-19", "ARDS")
    assert pairs(plan) == [(i, j, s) for i in range(3) for s, j in enumerate([1, 0])]


def test_single_label():
    assert resolve_targets("Pneumonia", LABELS, 1).labels == ("Pneumonia",)
    assert resolve_targets(2, LABELS, 1).labels == ("No Finding",)


def test_per_image_lists():
    plan = resolve_targets([["COVID-19", "Pneumonia"], [], ["No Finding"]], LABELS, 3)
    assert plan.per_image and plan.n_slots == 2
    assert plan.labels == [("COVID-19", "Pneumonia"), (), ("No Finding",)]
    assert plan.mask.tolist() == [[True, True], [False, False], [True, False]]
    assert pairs(plan) == [(0, 1, 0), (0, 3, 1), (2, 2, 0)]


@pytest.mark.parametrize("kind", ["bool", "int", "numpy"])
def test_mask(kind):
    mask = [[0, 1, 0, 1], [1, 0, 0, 0]]
    value = {
        "bool": torch.tensor(mask).bool(),
        "int": torch.tensor(mask),
        "numpy": np.array(mask, dtype=np.uint8),
    }[kind]
    plan = resolve_targets(value, LABELS, 2)
    assert plan.labels == [("COVID-19", "Pneumonia"), ("ARDS",)]
    assert plan.mask.tolist() == [[True, True], [True, False]]


def test_scatter_places_pairs():
    plan = resolve_targets([["ARDS"], ["COVID-19", "Pneumonia"]], LABELS, 2)
    out = plan.scatter(torch.tensor([1.0, 2.0, 3.0]))
    assert out.tolist() == [[1.0, 0.0], [2.0, 3.0]]


@pytest.mark.parametrize(
    "targets, match",
    [
        ("COVID19", r"unknown target label 'COVID19'.*COVID-19"),
        ([7], "out of range"),
        ([], "empty"),
        (["ARDS", "ARDS"], "repeated"),
        ([["ARDS"]], "1 lists for 2 images"),
        (torch.ones(2, 3), r"\[N, L\] = \[2, 4\]"),
        (torch.full((2, 4), 0.5), "only 0 and 1"),
        ([[], []], "no label"),
        ([True], "names or indices"),
        (3.5, "label name or index"),
    ],
)
def test_bad_targets(targets, match):
    with pytest.raises(InputError, match=match):
        resolve_targets(targets, LABELS, 2)
