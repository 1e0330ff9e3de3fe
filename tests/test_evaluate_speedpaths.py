"""The vectorised localisation measures equal plain reference implementations, exactly where
the answer is a count (ranks, bins, pixels), on maps with ties, quantised and constant maps,
negative zeros, one mask per image and one per map."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from xraylens import evaluate as ev
from xraylens.evaluate import localisation


def _maps(kind: str, n=3, t=4, size=12, seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(n, t, size, size, generator=g)
    if kind == "quantised":
        a = (a * 2).round()  # a handful of levels: heavy ties
    elif kind == "mixed":
        a[0, 0] = 3.0  # constant
        a[0, 1] = (a[0, 1] > 0).float()  # two levels
        a[1, 2] = -0.0
        a[1, 2, :3] = 0.0  # +0 and -0 are the same value
        a[2, 3] = a[2, 3].clamp(max=0)  # no positive mass
    return a


def _regions(per_map: bool, n=3, t=4, size=12, seed=1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    s = torch.rand((n, t, size, size) if per_map else (n, size, size), generator=g) > 0.6
    if per_map:
        s[0, 1] = False  # an empty region
        s[1, 0] = True  # a full region
    else:
        s[0] = False
        s[0, 2:5, 3:9] = True  # a rectangle
        s[2] = False  # an empty region
    return s


def _per_map(s: torch.Tensor, t: int) -> torch.Tensor:
    return s[:, None].expand(-1, t, -1, -1) if s.dim() == 3 else s


def _each_map(a: torch.Tensor, s: torch.Tensor):
    """(image, slot, that map's region [H, W]) for every map."""
    full = _per_map(s, a.shape[1])
    for i in range(a.shape[0]):
        for j in range(a.shape[1]):
            yield i, j, full[i, j]


CASES = [(k, pm) for k in ("continuous", "quantised", "mixed") for pm in (False, True)]


@pytest.mark.parametrize("kind,per_map", CASES)
def test_pixel_auroc_equals_sklearn(kind, per_map):
    from sklearn.metrics import roc_auc_score

    a, s = _maps(kind), _regions(per_map)
    ours = ev.pixel_auroc(a, s)
    for i, j, m in _each_map(a, s):
        y = m.flatten().numpy()
        if y.all() or not y.any():
            assert ours[i, j].isnan()
            continue
        ref = roc_auc_score(y, a[i, j].flatten().double().numpy())
        assert ours[i, j].item() == pytest.approx(ref, abs=1e-15)


@pytest.mark.parametrize("kind,per_map", CASES)
def test_rank_accuracy_equals_a_plain_stable_argsort(kind, per_map):
    a, s = _maps(kind), _regions(per_map)
    ours = ev.rank_accuracy(a, s)
    for i, j, m in _each_map(a, s):
        m = m.flatten()
        k = int(m.sum())
        if k == 0:
            assert ours[i, j].isnan()
            continue
        order = torch.argsort(a[i, j].flatten(), descending=True, stable=True)[:k]
        assert ours[i, j].item() == m[order].double().mean().item()


@pytest.mark.parametrize("kind", ["continuous", "quantised", "mixed"])
def test_otsu_equals_skimage(kind):
    from skimage.filters import threshold_otsu

    rows = _maps(kind).flatten(2).flatten(0, 1).double()
    ours = ev.otsu_threshold(rows)
    for r in range(len(rows)):
        x = rows[r].numpy()
        if x.min() == x.max():
            assert ours[r].item() == x.min()
            continue
        assert ours[r].item() == pytest.approx(threshold_otsu(x, nbins=256), rel=1e-12)


@pytest.mark.parametrize("kind,per_map", CASES)
def test_iou_and_binarise_equal_a_plain_loop(kind, per_map):
    from skimage.filters import threshold_otsu

    a, s = _maps(kind), _regions(per_map)
    ours, binary = ev.iou(a, s), ev.binarise(a)
    for i, j, m in _each_map(a, s):
        x, m = a[i, j].double().numpy(), m.numpy()
        if x.min() == x.max():
            assert not binary[i, j].any() and ours[i, j].isnan()
            continue
        norm = (x - x.min()) / (x.max() - x.min())
        b = norm > threshold_otsu(norm, nbins=256)
        assert np.array_equal(binary[i, j].numpy(), b)
        if not m.any():
            assert ours[i, j].isnan()
            continue
        assert ours[i, j].item() == (b & m).sum() / (b | m).sum()
    fixed = ev.iou(a, s, threshold=0.25)
    assert torch.equal(fixed.isnan(), ours.isnan())


@pytest.mark.parametrize("kind,per_map", CASES)
def test_share_pointing_equal_plain_loops(kind, per_map):
    a, s = _maps(kind), _regions(per_map)
    share, ratio = ev.region_share(a, s), ev.share_ratio(a, s)
    hit, hit2 = ev.pointing_game(a, s), ev.pointing_game(a, s, tolerance=2)
    full = _per_map(s, a.shape[1])
    grown = torch.nn.functional.max_pool2d(full.float(), 5, stride=1, padding=2) > 0
    for i, j, m in _each_map(a, s):
        x = a[i, j].double()
        pos = x.clamp(min=0)
        want = (pos[m].sum() / pos.sum()).item() if pos.sum() > 0 else float("nan")
        assert share[i, j].item() == pytest.approx(want, rel=1e-13, nan_ok=True)
        area = m.double().mean().item()
        want_ratio = want / area if area > 0 else float("nan")
        assert ratio[i, j].item() == pytest.approx(want_ratio, rel=1e-13, nan_ok=True)
        for got, mm in ((hit[i, j], m), (hit2[i, j], grown[i, j])):
            if x.min() == x.max() or not mm.any():
                assert got.isnan()
            else:
                assert got.item() == float(bool(mm[x == x.max()].any()))


def test_chunking_and_mask_layout_do_not_change_the_numbers(monkeypatch):
    a, s = _maps("quantised", n=5), _regions(False, n=5)
    fns = (ev.region_share, ev.share_ratio, ev.pointing_game, ev.iou, ev.rank_accuracy)
    fns += (ev.pixel_auroc,)
    whole = [fn(a, s) for fn in fns]
    monkeypatch.setattr(localisation, "_CHUNK_PIXELS", 1)  # one image per chunk
    for fn, want in zip(fns, whole):
        got = fn(a, s)
        per_map = fn(a, s[:, None].repeat(1, a.shape[1], 1, 1))  # a copied, not broadcast, mask
        torch.testing.assert_close(got, want, equal_nan=True, rtol=1e-15, atol=0)
        torch.testing.assert_close(per_map, want, equal_nan=True, rtol=1e-15, atol=0)


def test_float64_maps_are_not_written_into():
    a = _maps("continuous").double()
    before = a.clone()
    ev.iou(a, _regions(False))
    ev.binarise(a)
    assert torch.equal(a, before)
