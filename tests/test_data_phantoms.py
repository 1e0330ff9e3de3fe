"""Synthetic phantoms: anatomy, class-dependent lesions with known masks, planted shortcuts."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import xraylens as xl
from xraylens.data import LabelSpace, check_split, kfold_splits
from xraylens.data.phantoms import FINDINGS, Phantoms, Shortcut, make_phantom

SIZE = 96


def halves(mask):
    w = mask.shape[1]
    return mask[:, : w // 2], mask[:, w // 2 :]


def centroid(mask):
    ys, xs = np.nonzero(mask)
    return ys.mean(), xs.mean()


@pytest.mark.parametrize("finding", FINDINGS)
def test_phantom_types_ranges_and_anatomy(finding):
    ph = make_phantom(finding, SIZE, seed=1)
    assert ph.image.shape == (SIZE, SIZE) and ph.image.dtype == np.float32
    assert ph.image.min() >= 0.0 and ph.image.max() <= 1.0
    for mask in (ph.lesion_mask, ph.lung_mask, ph.shortcut_mask):
        assert mask.shape == (SIZE, SIZE) and mask.dtype == bool
    assert not ph.shortcut and not ph.shortcut_mask.any()
    assert not (ph.lesion_mask & ~ph.lung_mask).any()  # lesions lie inside the lungs
    left, right = halves(ph.lung_mask)
    assert left.sum() > 0.08 * left.size and right.sum() > 0.08 * right.size  # two lungs
    assert 0.15 < ph.lung_mask.mean() < 0.5
    healthy_lung = ph.lung_mask & ~ph.lesion_mask
    body = np.zeros_like(ph.lung_mask)
    body[SIZE // 4 : 3 * SIZE // 4, SIZE // 2 - 3 : SIZE // 2 + 3] = True  # spine/mediastinum
    assert ph.image[healthy_lung].mean() + 0.1 < ph.image[body].mean()  # lungs are dark
    assert ph.labels == LabelSpace().parse(finding)
    assert torch.equal(ph.target, LabelSpace().encode(finding))


def test_no_finding_has_no_lesion():
    for seed in range(5):
        assert not make_phantom("No Finding", SIZE, seed=seed).lesion_mask.any()


@pytest.mark.parametrize("seed", range(6))
def test_covid_lesions_are_bilateral_peripheral_basal_and_visible(seed):
    ph = make_phantom("COVID-19", SIZE, seed=seed)
    les_left, les_right = halves(ph.lesion_mask)
    lung_left, lung_right = halves(ph.lung_mask)
    assert les_left.any() and les_right.any()  # bilateral
    for les, lung, lateral_is_left in ((les_left, lung_left, True), (les_right, lung_right, False)):
        (ly, lx), (gy, gx) = centroid(les), centroid(lung)
        assert ly > gy  # basal: below the lung's centre
        assert (lx < gx) if lateral_is_left else (lx > gx)  # peripheral: lateral
    contrast = ph.image[ph.lesion_mask].mean() - ph.image[ph.lung_mask & ~ph.lesion_mask].mean()
    assert contrast > 0.1


@pytest.mark.parametrize("seed", range(6))
def test_bacterial_consolidation_is_one_dense_lobar_region(seed):
    ph = make_phantom("Bacterial Pneumonia", SIZE, seed=seed)
    les_left, les_right = halves(ph.lesion_mask)
    assert bool(les_left.any()) != bool(les_right.any())  # one lung only
    lung = halves(ph.lung_mask)[0 if les_left.any() else 1]
    assert ph.lesion_mask.sum() > 0.15 * lung.sum()  # lobar: a large part of one lung
    contrast = ph.image[ph.lesion_mask].mean() - ph.image[ph.lung_mask & ~ph.lesion_mask].mean()
    assert contrast > 0.2  # denser than ground glass


def test_deterministic_by_seed():
    a = make_phantom("COVID-19", SIZE, seed=(3, 4), shortcut="marker")
    b = make_phantom("COVID-19", SIZE, seed=(3, 4), shortcut="marker")
    c = make_phantom("COVID-19", SIZE, seed=(3, 5), shortcut="marker")
    assert np.array_equal(a.image, b.image) and np.array_equal(a.lesion_mask, b.lesion_mask)
    assert not np.array_equal(a.image, c.image)


def test_marker_and_border_shortcuts():
    marker = make_phantom("No Finding", SIZE, seed=0, shortcut="marker")
    assert marker.shortcut and marker.shortcut_mask.any()
    ys, xs = np.nonzero(marker.shortcut_mask)
    assert ys.max() < SIZE // 4 and xs.max() < SIZE // 3  # top-left corner
    assert marker.image[marker.shortcut_mask].min() > 0.9  # bright
    border = make_phantom("No Finding", SIZE, seed=0, shortcut="border")
    assert border.shortcut_mask[0].all() and border.shortcut_mask[-1].all()
    assert (border.image[border.shortcut_mask] == 0).all()  # dark bands
    assert not border.shortcut_mask[SIZE // 2].any()


def test_bad_arguments():
    with pytest.raises(xl.InputError, match="finding"):
        make_phantom("Tuberculosis")
    with pytest.raises(xl.InputError, match="shortcut"):
        make_phantom("COVID-19", shortcut="watermark")
    with pytest.raises(xl.InputError, match="size"):
        make_phantom("COVID-19", size=8)
    with pytest.raises(xl.InputError, match="n must"):
        Phantoms(0)


def test_phantoms_dataset_items_records_and_balance():
    ds = Phantoms(30, size=64, seed=5)
    assert len(ds) == 30 and ds.targets.shape == (30, 14) and ds.images.shape == (30, 1, 64, 64)
    counts = ds.label_counts()
    assert counts["No Finding"] == counts["COVID-19"] == counts["Bacterial Pneumonia"] == 10
    image, target, record = ds[3]
    assert image.shape == (1, 64, 64) and image.dtype == torch.float32
    assert torch.equal(target, ds.targets[3])
    assert record["lesion_mask"].shape == (64, 64) and record["lung_mask"].dtype == bool
    assert record["source"] == "phantom" and record["path"] is None
    assert record["mask_path"] is None and record["shortcut"] is False
    assert np.array_equal(ds.mask(3), record["lung_mask"])
    again = Phantoms(30, size=64, seed=5)
    assert torch.equal(again.images, ds.images)
    image[:] = 0  # items are copies
    assert ds[3][0].abs().sum() > 0
    for split in kfold_splits(ds, 3):
        check_split(split, ds)


def test_phantoms_shortcut_correlates_with_one_class():
    exact = Phantoms(30, size=48, seed=0, shortcut=Shortcut("marker", "COVID-19", 1.0, 0.0))
    for rec in exact.records:
        assert rec["shortcut"] == (rec["finding"] == "COVID-19")
        assert rec["shortcut_mask"].any() == rec["shortcut"]
    noisy = Phantoms(120, size=48, seed=0, shortcut="border")  # default shares: 0.8 / 0.05
    with_it = [r["finding"] for r in noisy.records if r["shortcut"]]
    covid = sum(r["finding"] == "COVID-19" for r in noisy.records)
    assert with_it.count("COVID-19") >= 0.6 * covid
    assert len(with_it) - with_it.count("COVID-19") <= 0.15 * (len(noisy) - covid)
    other = Phantoms(30, size=48, seed=0, shortcut=Shortcut("marker", "Bacterial Pneumonia"))
    assert {r["finding"] for r in other.records if r["shortcut"]} >= {"Bacterial Pneumonia"}


def test_phantoms_custom_classes_and_label_space():
    space = LabelSpace(["No Finding", "Pneumonia", "COVID-19"])
    ds = Phantoms(8, size=32, classes=("No Finding", "Viral Pneumonia"), label_space=space)
    assert ds.targets.shape == (8, 3)
    assert {r["labels"] for r in ds.records} == {("No Finding",), ("Pneumonia",)}
