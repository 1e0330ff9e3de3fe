"""Localisation measures: known answers, Quantus / scikit parity, bad input."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

import xraylens as xl
from xraylens import evaluate as ev


def _blob_masks(n=3, size=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    masks = torch.zeros(n, size, size, dtype=torch.bool)
    for i in range(n):
        r, c = torch.randint(0, size - 6, (2,), generator=g).tolist()
        masks[i, r : r + 4 + i % 3, c : c + 5] = True
    return masks


def test_map_equal_to_mask_scores_one():
    masks = _blob_masks()
    maps = masks[:, None].float().repeat(1, 2, 1, 1)  # two labels, [N, T, H, W]
    for fn in (ev.region_share, ev.iou, ev.pointing_game, ev.rank_accuracy, ev.pixel_auroc):
        assert torch.equal(fn(maps, masks), torch.ones(3, 2, dtype=torch.float64)), fn.__name__
    assert torch.allclose(ev.share_ratio(maps, masks), 1 / ev.area_share(masks)[:, None])


def test_uniform_map_is_at_chance():
    masks = _blob_masks()
    maps = torch.ones(3, 1, 1, 16, 16)  # [N, T, C, H, W]
    assert torch.allclose(ev.share_ratio(maps, masks), torch.ones(3, 1, dtype=torch.float64))
    assert torch.allclose(ev.region_share(maps, masks)[:, 0], ev.area_share(masks))
    assert torch.allclose(ev.pixel_auroc(maps, masks), torch.full((3, 1), 0.5, dtype=torch.float64))
    assert ev.pointing_game(maps, masks).isnan().all()  # constant: nothing to point with
    assert ev.iou(maps, masks).isnan().all()


def test_region_share_counts_positive_mass_only_and_nan_without_it():
    masks = torch.zeros(1, 4, 4, dtype=torch.bool)
    masks[0, 0, 0] = True
    maps = torch.zeros(1, 3, 4, 4)
    maps[0, 0, 0, 0], maps[0, 0, 3, 3] = 3.0, 1.0
    maps[0, 0, 2, 2] = -100.0  # negative evidence does not count
    maps[0, 2] = -1.0
    share = ev.region_share(maps, masks)
    assert share[0, 0] == 0.75
    assert share[0, 1].isnan() and share[0, 2].isnan()  # all zero, all negative
    per_map = torch.zeros(1, 3, 4, 4, dtype=torch.bool)  # an empty region: share 0, ratio NaN
    assert ev.region_share(maps[:, :1], per_map[:, :1])[0, 0] == 0
    assert ev.share_ratio(maps[:, :1], per_map[:, :1]).isnan().all()
    assert ev.area_share(per_map).shape == (1, 3)


def test_pointing_game_tolerance():
    masks = torch.zeros(1, 9, 9, dtype=torch.bool)
    masks[0, 4, 4] = True
    maps = torch.zeros(1, 1, 9, 9)
    maps[0, 0, 4, 6] = 1.0  # two pixels away
    assert ev.pointing_game(maps, masks)[0, 0] == 0
    assert ev.pointing_game(maps, masks, tolerance=1)[0, 0] == 0
    assert ev.pointing_game(maps, masks, tolerance=2)[0, 0] == 1


def test_otsu_matches_skimage():
    from skimage.filters import threshold_otsu

    g = torch.Generator().manual_seed(1)
    rows = torch.cat([torch.rand(3, 400, generator=g) ** 3, torch.randn(2, 400, generator=g)])
    ours = ev.otsu_threshold(rows)
    ref = torch.tensor([threshold_otsu(r.double().numpy()) for r in rows], dtype=torch.float64)
    assert torch.allclose(ours, ref, rtol=0, atol=1e-9)


def test_iou_fixed_threshold_and_otsu():
    masks = _blob_masks()
    g = torch.Generator().manual_seed(2)
    maps = masks[:, None].float() + 0.3 * torch.rand(3, 1, 16, 16, generator=g)
    assert torch.equal(ev.iou(maps, masks, threshold=0.5), torch.ones(3, 1, dtype=torch.float64))
    b = ev.binarise(maps, threshold=0.5)
    assert torch.equal(b[:, 0], masks)
    with pytest.raises(xl.InputError, match="threshold"):
        ev.iou(maps, masks, threshold=1.5)


def test_pixel_auroc_matches_sklearn_with_ties():
    from sklearn.metrics import roc_auc_score

    masks = _blob_masks(4)
    g = torch.Generator().manual_seed(3)
    maps = (torch.rand(4, 2, 16, 16, generator=g) * 5).round()  # many ties
    ours = ev.pixel_auroc(maps, masks)
    for i in range(4):
        for t in range(2):
            ref = roc_auc_score(masks[i].flatten().numpy(), maps[i, t].flatten().numpy())
            assert ours[i, t].item() == pytest.approx(ref, abs=1e-12)


def _quantus(metric, a, s, **kw):
    x = np.zeros_like(a)
    y = np.zeros(len(a), dtype=int)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = metric(disable_warnings=True, abs=False, normalise=False, **kw)
        return np.asarray(m(model=None, x_batch=x, y_batch=y, a_batch=a, s_batch=s), float)


@pytest.mark.parametrize(
    "name,ours",
    [
        ("PointingGame", ev.pointing_game),
        ("RelevanceMassAccuracy", ev.region_share),
        ("RelevanceRankAccuracy", ev.rank_accuracy),
        ("AUC", ev.pixel_auroc),
    ],
)
def test_quantus_parity_multilabel_loops_over_labels(name, ours):
    quantus = pytest.importorskip("quantus")
    masks = _blob_masks(4)
    g = torch.Generator().manual_seed(4)
    # non-negative continuous maps: Quantus' mass accuracy sums signed values, ours positive ones
    maps = torch.rand(4, 3, 1, 16, 16, generator=g)
    mine = ours(maps, masks).numpy()
    s = masks[:, None].numpy().astype(np.float32)
    for t in range(3):  # Quantus has no multi-label: one call per label
        ref = _quantus(getattr(quantus, name), maps[:, t].numpy(), s)
        np.testing.assert_allclose(mine[:, t], ref, rtol=1e-6, atol=1e-7)


def test_works_on_an_attribution_and_per_label_masks():
    masks = _blob_masks(2)
    values = torch.rand(2, 3, 1, 16, 16)
    res = xl.Attribution(values=values, labels=("a", "b", "c"))
    per_label = masks[:, None].expand(-1, 3, -1, -1)
    assert torch.equal(ev.region_share(res, masks), ev.region_share(values, per_label))


@pytest.mark.parametrize(
    "maps,region,match",
    [
        (torch.rand(2, 1, 8, 8), torch.ones(3, 8, 8, dtype=torch.bool), "3 masks for 2 images"),
        (torch.rand(2, 1, 8, 8), torch.ones(2, 9, 9, dtype=torch.bool), "preprocess_mask"),
        (torch.rand(2, 2, 8, 8), torch.ones(2, 3, 8, 8, dtype=torch.bool), "per image for 2"),
        (torch.rand(2, 8, 8), torch.ones(2, 8, 8, dtype=torch.bool), r"maps must be \[N, T"),
        (torch.full((1, 1, 4, 4), float("nan")), torch.ones(1, 4, 4), "NaN"),
        (torch.rand(1, 1, 4, 4), "lungs.png", "region must be"),
    ],
)
def test_bad_input_names_the_argument(maps, region, match):
    for fn in (ev.region_share, ev.iou, ev.pointing_game, ev.pixel_auroc, ev.rank_accuracy):
        with pytest.raises(xl.InputError, match=match):
            fn(maps, region)


def test_empty_region_is_nan_not_a_number():
    maps = torch.rand(1, 1, 8, 8)
    empty = torch.zeros(1, 8, 8, dtype=torch.bool)
    for fn in (ev.iou, ev.pointing_game, ev.pixel_auroc, ev.rank_accuracy, ev.share_ratio):
        assert fn(maps, empty).isnan().all(), fn.__name__
