"""The perturbation base, feature masks and RISE: batching, memory budget, masks."""

from __future__ import annotations

import logging
import math

import pytest
import torch
from torch import nn

import xraylens as xl
from xraylens.attr import features
from xraylens.attr.rise import RiseMasks
from xraylens.errors import InputError

LABELS = ("a", "b", "c", "d", "e")
TOL = {"rtol": 1e-5, "atol": 1e-6}


def net() -> nn.Module:
    torch.manual_seed(2)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(3), nn.Flatten(),
        nn.Linear(36, len(LABELS)),
    )  # fmt: skip


def clf_of(module) -> xl.Classifier:
    return xl.Classifier(module, LABELS, min_input_size=4)


def blobs(n: int = 1, size: int = 32) -> torch.Tensor:
    """Smooth greyscale images with structure (superpixels on pure noise degenerate)."""
    g = torch.Generator().manual_seed(0)
    ys, xs = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    out = torch.zeros(n, 1, size, size)
    for i in range(n):
        for _ in range(6):
            cy, cx = torch.rand(2, generator=g) * size
            out[i, 0] += torch.exp(-((ys - cy) ** 2 + (xs - cx) ** 2) / (2 * (size / 8) ** 2))
    return out / out.amax()


@pytest.mark.parametrize("method", ["slic", "quickshift", "felzenszwalb", "grid"])
def test_segment_greyscale_without_rgb(method):
    x = blobs(2)
    ids = features.segment(x, features=method, n_features=20)
    assert ids.shape == (2, 32, 32) and ids.dtype == torch.long
    for m in ids:
        f = int(m.max()) + 1
        assert m.min() == 0 and torch.equal(torch.unique(m), torch.arange(f))  # 0 .. F-1
        assert f >= 2
    if method in ("slic", "grid"):
        assert all(10 <= n <= 40 for n in features.count(ids))  # about n_features
    rgb = features.segment(x.expand(-1, 3, -1, -1), features=method, n_features=20)
    assert rgb.shape == ids.shape


def test_region_and_user_masks():
    x = blobs(2)
    region = torch.zeros(2, 32, 32, dtype=torch.bool)
    region[0, 4:20, 4:28] = True
    region[1, 10:30, 2:16] = True
    ids = features.segment(x, n_features=12, region=region)
    assert torch.equal(ids >= 0, region)  # SLIC places its segments inside the region
    user = torch.tensor([[5, 5, 7], [-3, 7, 9]])
    got = features.segment(torch.rand(1, 1, 2, 3), features=user)[0]
    assert got.tolist() == [[0, 0, 1], [-1, 1, 2]]
    with pytest.raises(InputError, match="features mask"):
        features.segment(torch.rand(3, 1, 2, 3), features=user[None].expand(2, -1, -1))


def test_paint_and_keep_pixels():
    ids = torch.tensor([[[0, 1], [-1, 2]]])
    painted = features.paint(ids, torch.tensor([[1.0, 2.0, 3.0]]))
    assert painted.tolist() == [[[1.0, 2.0], [0.0, 3.0]]]
    keep = features.keep_pixels(ids, torch.tensor([[False, True, False]]))
    assert keep[0, 0].tolist() == [[False, True], [True, False]]  # id -1 is always kept


def test_rise_masks():
    masks = RiseMasks.draw(400, 5, 0.3, (20, 23), seed=1)
    m = masks.masks(torch.arange(400), torch.float64)
    assert m.shape == (400, 20, 23) and m.min() >= 0 and m.max() <= 1
    assert masks.cell == (4, 5) and (masks.shift < torch.tensor([4, 5])).all()
    assert abs(m.mean().item() - 0.3) < 0.03
    # smooth: neighbouring pixels differ by at most one cell's bilinear step
    assert (m[:, 1:] - m[:, :-1]).abs().max() <= 1 / 4 + 1e-9
    again = RiseMasks.draw(400, 5, 0.3, (20, 23), seed=1).masks(torch.tensor([7]), torch.float64)
    torch.testing.assert_close(again[0], m[7])


def test_rise_equals_the_weighted_sum_of_masks():
    module, x = net(), torch.rand(2, 1, 12, 12)
    base = torch.full((1, 12, 12), 0.25)
    att = xl.get_attributor("rise", n_masks=30, grid=3, p=0.4, baseline=base, seed=4)
    res = att.attribute(clf_of(module), x, [["b", "e"], ["a"]])
    m = RiseMasks.draw(30, 3, 0.4, (12, 12), 4).masks(torch.arange(30), torch.float32)[:, None]
    for i, labels in enumerate([[1, 4], [0]]):
        with torch.no_grad():
            scores = module(x[i] * m + base * (1 - m))  # [30, L]
        expected = torch.einsum("sl,shw->lhw", scores[:, labels], m[:, 0]) / (30 * 0.4)
        torch.testing.assert_close(res.values[i, : len(labels), 0], expected, **TOL)


class OOMAboveBatch(nn.Module):
    """Runs out of memory (simulated) for batches larger than ``limit``."""

    def __init__(self, inner: nn.Module, limit: int):
        super().__init__()
        self.inner, self.limit, self.batches = inner, limit, []

    def forward(self, x):
        if x.shape[0] > self.limit:
            raise torch.OutOfMemoryError(f"simulated: batch {x.shape[0]}")
        self.batches.append(x.shape[0])
        return self.inner(x)


@pytest.mark.parametrize(
    ("name", "params", "n_items"),
    [
        ("lime", {"features": "grid", "n_features": 9, "n_samples": 20}, 20),
        ("kernel_shap", {"features": "grid", "n_features": 9, "n_samples": 20}, 20),
        ("feature_ablation", {"features": "grid", "n_features": 9}, 9),
        ("rise", {"n_masks": 20, "grid": 3}, 20),
    ],
)
def test_out_of_memory_back_off_and_budget(name, params, n_items, caplog):
    x = torch.rand(2, 1, 12, 12)
    expected = xl.get_attributor(name, **params).attribute(clf_of(net()), x)
    module = OOMAboveBatch(net(), limit=7)
    att = xl.get_attributor(name, **params)
    with caplog.at_level(logging.WARNING, logger="xraylens.engine"):
        res = att.attribute(clf_of(module), x)
    torch.testing.assert_close(res.values, expected.values, **TOL)
    assert max(module.batches) <= 7
    reference = 2 if name == "feature_ablation" else 0  # f(x), only ablation needs it
    assert sum(module.batches) == 1 + reference + 2 * n_items  # probe, references, once each
    assert any("out of memory" in r.getMessage() for r in caplog.records)
    small = xl.get_attributor(name, max_memory="20kB", **params)
    torch.testing.assert_close(small.attribute(clf_of(net()), x).values, expected.values, **TOL)
    plan = small.engine.last_plan
    assert plan.n_items == 2 * n_items and plan.chunk < plan.n_items
    assert plan.chunk <= max(1, math.floor(plan.budget / plan.item_bytes))


def test_progress_bars_on_long_runs(capsys):
    att = xl.get_attributor("rise", n_masks=40, grid=3, progress=True)
    att.engine.chunk = 8
    att.attribute(clf_of(net()), torch.rand(1, 1, 12, 12), [0])
    assert "rise" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("params", "match"),
    [({"n_masks": 0}, "n_masks"), ({"p": 1.0}, "p must"), ({"grid": 0}, "grid"),
     ({"seed": 1.5}, "seed")],
)  # fmt: skip
def test_rise_bad_parameters(params, match):
    with pytest.raises(InputError, match=match):
        xl.get_attributor("rise", **params)


def test_lime_inside_the_lungs_of_a_real_x_ray(shared_data):
    """A real chest X-ray and its human-drawn lung mask: only lung pixels are features."""
    import torch.nn.functional as F

    from xraylens.data.io import read_image, read_mask

    masks = sorted((shared_data / "lung-masks" / "covid-chestxray").glob("*.png"))
    images = {p.stem: p for p in (shared_data / "covid-chestxray" / "images").iterdir()}
    stem = next(m.stem for m in masks if m.stem in images)
    image = torch.from_numpy(read_image(images[stem]))[None, None].float()
    lungs = torch.from_numpy(read_mask(masks[[m.stem for m in masks].index(stem)]))
    x = F.interpolate(image / image.amax(), size=(64, 64), mode="area")
    region = F.interpolate(lungs[None, None].float(), size=(64, 64), mode="nearest")[0, 0] > 0
    ids = features.segment(x, n_features=30, region=region)[0]
    assert torch.equal(ids >= 0, region) and 10 <= int(ids.max()) + 1 <= 60
    clf = xl.get_classifier("resnet18", weights=None)
    res = xl.get_attributor("lime", n_features=30, n_samples=20, region=region, alpha=1e-4)
    values = res.attribute(clf, x, ["COVID-19"]).values[0, 0, 0]
    assert (values[~region] == 0).all() and (values[region] != 0).any()
