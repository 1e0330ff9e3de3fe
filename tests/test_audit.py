"""The shortcut audit: regions, markers found in the image, shares against area, flags."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import xraylens as xl
from xraylens import audit
from xraylens.evaluate import Results


def test_border_band_and_corners_have_the_stated_area():
    band = audit.border_band((50, 100), 0.1)
    assert band.sum() == 50 * 100 - 40 * 80 and not band[5:-5, 10:-10].any()
    c = audit.corners((40, 40), 0.25)
    assert c.sum() == 4 * 10 * 10 and c[0, 0] and c[-1, -1] and not c[10:30].any()
    with pytest.raises(xl.InputError, match="border width"):
        audit.border_band((40, 40), 0.6)


@pytest.mark.parametrize("size", [64, 96, 160])
def test_markers_found_in_phantoms_and_nowhere_else(size):
    """The planted marker is found (>= 90% of its pixels) and clean phantoms give nothing."""
    for i, finding in enumerate(("No Finding", "COVID-19", "Bacterial Pneumonia")):
        marked = xl.data.make_phantom(finding, size, seed=(size, i), shortcut="marker")
        found = audit.detect_markers(marked.image)
        assert (found & marked.shortcut_mask).sum() >= 0.9 * marked.shortcut_mask.sum()
        assert (found & ~marked.shortcut_mask).sum() <= 0.1 * marked.shortcut_mask.sum()
        clean = xl.data.make_phantom(finding, size, seed=(size, i))
        assert not audit.detect_markers(clean.image).any()


def test_marker_detection_ignores_a_central_bright_blob_and_a_long_bar():
    img = np.full((100, 100), 0.3, dtype=np.float32)
    img[45:55, 45:55] = 1.0  # central: not a burnt-in marker
    img[2:6, 5:95] = 1.0  # a bar along the top edge: 3.6% of the image, over the 3% limit
    assert not audit.detect_markers(img).any()
    img[85:93, 80:90] = 1.0  # a small bright patch near the bottom-right corner
    found = audit.detect_markers(img)
    assert found[85:93, 80:90].all() and found.sum() == 80


def test_audit_shares_equal_region_share_of_each_map():
    """The rows hold, per map and region, the positive mass inside over the total."""
    rng = np.random.default_rng(0)
    images = np.stack([xl.data.make_phantom("COVID-19", 64, seed=i, shortcut="marker").image
                       for i in range(3)])  # fmt: skip
    maps = torch.from_numpy(rng.normal(size=(3, 2, 64, 64)))
    rows = audit.audit_maps(maps, images, model="m", method="saliency", labels=["a", "b"])
    assert isinstance(rows, Results)
    regions = audit.stack_regions(images)
    for row in rows:
        kind, _, region = row["metric"].partition("_")
        i, j = int(row["image_id"]), ["a", "b"].index(row["label"])
        mask = regions[region][i]
        pos = maps[i, j].clamp(min=0).numpy()
        expected = pos[mask].sum() / pos.sum() if kind == "share" else mask.mean()
        assert row["value"] == pytest.approx(expected, rel=1e-9)
    assert {r["metric"] for r in rows} == {
        f"{k}_{r}" for k in ("share", "area") for r in ("border", "corners", "markers")
    }


def test_flags_follow_the_thresholds():
    """A map on the marker only reads markers; a uniform one raises nothing; a map outside
    the lungs ignores them."""
    n = 4
    images = np.stack(
        [xl.data.make_phantom("COVID-19", 64, seed=i, shortcut="marker").image for i in range(n)]
    )
    phantoms = [xl.data.make_phantom("COVID-19", 64, seed=i, shortcut="marker") for i in range(n)]
    lungs = np.stack([p.lung_mask for p in phantoms])
    marker = torch.from_numpy(np.stack([p.shortcut_mask for p in phantoms])).double()[:, None]
    uniform = torch.ones(n, 1, 64, 64, dtype=torch.float64)
    rows = Results.concat(
        audit.audit_maps(m, images, model=name, method="x", labels=["COVID-19"], lung_masks=lungs)
        for name, m in (("shortcut", marker), ("fair", uniform))
    )
    summary = audit.summarise(rows)
    flags = audit.flag(summary)
    raised = {(f["model"], f["flag"]) for f in flags}
    assert ("shortcut", "reads markers") in raised and ("shortcut", "ignores the lungs") in raised
    assert not any(model == "fair" for model, _ in raised)
    on_marker = next(r for r in summary if r["model"] == "shortcut" and r["region"] == "markers")
    assert on_marker["share"] == pytest.approx(1.0) and on_marker["n"] == n
    assert on_marker["ratio"] == pytest.approx(1.0 / on_marker["area"])
    fair = next(r for r in summary if r["model"] == "fair" and r["region"] == "lungs")
    assert (
        fair["ratio"] == pytest.approx(1.0) and fair["ci_low"] <= fair["share"] <= fair["ci_high"]
    )
    v = audit.verdicts(summary, flags)
    assert "reads markers" in v["shortcut"] and v["fair"] == {}


def test_images_without_a_marker_do_not_count():
    images = np.stack([xl.data.make_phantom("No Finding", 64, seed=i).image for i in range(2)])
    rows = audit.audit_maps(torch.rand(2, 1, 64, 64), images, model="m", method="x", labels=["a"])
    markers = next(r for r in audit.summarise(rows) if r["region"] == "markers")
    assert markers["n"] == 0 and math.isnan(markers["share"])
    assert not audit.flag([markers])


def test_bad_input_names_the_argument():
    images = np.zeros((2, 32, 32), dtype=np.float32)
    with pytest.raises(xl.InputError, match="labels"):
        audit.audit_maps(torch.rand(2, 2, 32, 32), images, model="m", method="x", labels=["a"])
    with pytest.raises(xl.InputError, match="lung_masks"):
        audit.stack_regions(images, np.ones((2, 16, 16), dtype=bool))


def test_nap_energy_outside_the_lungs():
    """Energy on the right half of a 4 x 4 grid, lungs on the left half of the 8 x 8 input:
    everything lies outside, on half of the area."""
    from types import SimpleNamespace

    lungs = np.zeros((8, 8), dtype=bool)
    lungs[:, :4] = True
    nap = np.zeros((2, 4, 4))
    nap[0, :, 2:] = 1.0
    nap[1, 1, 3] = -3.0  # |NAP| counts, whatever the sign
    res = SimpleNamespace(
        layers=("layer", "fc"),
        groups=("a", "b"),
        shape=lambda layer: (2, 4, 4) if layer == "layer" else (5,),
        nap={"layer": {"a": nap, "b": -nap}, "fc": {"a": np.ones(5), "b": np.ones(5)}},
    )
    rows = audit.nap_outside_lungs(res, lungs)
    assert [(r["layer"], r["group"]) for r in rows] == [("layer", "a"), ("layer", "b")]
    assert all(r["share"] == pytest.approx(1.0) and r["area"] == pytest.approx(0.5) for r in rows)
    nap[0, :, :2] = 1.0  # as much inside as outside (8 + 3 outside vs 8 inside)
    assert audit.nap_outside_lungs(res, lungs)[0]["share"] == pytest.approx(11 / 19)
    with pytest.raises(xl.InputError, match="lungs"):
        audit.nap_outside_lungs(res, np.zeros((8, 8), dtype=bool))
