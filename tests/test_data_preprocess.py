"""preprocess: the paper's percentile clipping, aspect-keeping bicubic resize, centred padding."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import xraylens as xl
from xraylens.data.preprocess import (
    PERCENTILE_PRESETS,
    letterbox_geometry,
    normalize_intensity,
    preprocess,
    preprocess_mask,
)

RNG = np.random.default_rng(0)


def ramp(h, w, low=100.0, high=3000.0):
    """A smooth positive image with noise: every pixel value distinct."""
    y, x = np.mgrid[0:h, 0:w]
    return (low + (high - low) * (x + y) / (h + w) + RNG.random((h, w))).astype(np.float32)


def test_public_names_and_presets():
    assert xl.data.preprocess is preprocess
    assert PERCENTILE_PRESETS["paper"] == (1.0, 95.0)
    assert PERCENTILE_PRESETS["paper-code"] == (5.0, 95.0)


@pytest.mark.parametrize(
    ("h", "w", "size"), [(100, 60, 64), (60, 100, 64), (37, 37, 32), (20, 9, 64)]
)
def test_shape_range_dtype(h, w, size):
    out = preprocess(ramp(h, w), size)
    assert out.shape == (1, size, size) and out.dtype == torch.float32
    assert out.min() >= 0.0 and out.max() <= 1.0
    assert out.max() == 1.0  # the upper clip level maps to exactly 1


@pytest.mark.parametrize(("h", "w"), [(100, 60), (100, 61), (61, 100), (64, 64), (10, 200)])
def test_aspect_kept_and_padding_centred_and_exactly_zero(h, w):
    size = 64
    new_h, new_w, top, left = letterbox_geometry(h, w, size)
    assert max(new_h, new_w) == size
    scale = size / max(h, w)  # aspect kept up to rounding to whole pixels
    assert abs(new_h - h * scale) <= 0.5 and abs(new_w - w * scale) <= 0.5
    # centred: the two pads differ by at most one pixel, the extra one at the bottom/right
    assert 0 <= (size - new_h - top) - top <= 1 and 0 <= (size - new_w - left) - left <= 1
    # a positive image whose lowest 1% lie in one corner: everything else is > 0 after scaling
    img = ramp(h, w)
    out = preprocess(img, size)[0]
    inside = torch.zeros(size, size, dtype=torch.bool)
    inside[top : top + new_h, left : left + new_w] = True
    assert (out[~inside] == 0).all()  # padding exactly zero
    assert (out[inside] > 0).float().mean() > 0.95
    assert torch.equal(preprocess_mask(np.ones((h, w), bool), size), inside)


def test_matches_pillow_bicubic_of_the_normalised_image():
    from PIL import Image

    img = ramp(120, 80)
    norm = normalize_intensity(img).numpy()
    expected = np.asarray(Image.fromarray(norm).resize((43, 64), Image.Resampling.BICUBIC))
    out = preprocess(img, 64)[0, :, 10:53].numpy()
    np.testing.assert_allclose(out, np.clip(expected, 0, 1), atol=1e-6)


@pytest.mark.parametrize(("preset", "lo", "hi"), [("paper", 1, 95), ("paper-code", 5, 95)])
def test_percentile_settings_clip_the_right_shares(preset, lo, hi):
    img = RNG.permutation(np.arange(100 * 100, dtype=np.float32)).reshape(100, 100)
    for percentiles in (preset, (lo, hi)):
        out = preprocess(img, None, percentiles=percentiles)
        assert out.shape == (1, 100, 100)
        assert (out == 0).float().mean().item() == pytest.approx(lo / 100, abs=1e-3)
        assert (out == 1).float().mean().item() == pytest.approx((100 - hi) / 100, abs=1e-3)
    a, b = preprocess(img, 64, percentiles="paper"), preprocess(img, 64, percentiles="paper-code")
    assert not torch.equal(a, b)


def test_percentiles_are_taken_before_resizing_and_without_padding():
    # same image, different output sizes: the clip levels (hence the 0/1 shares) do not change
    img = RNG.permutation(np.arange(80 * 40, dtype=np.float32)).reshape(80, 40)
    direct = normalize_intensity(img)
    assert torch.equal(preprocess(img, None)[0], direct)
    big = preprocess(img, 80)[0]  # no resize needed (80 is the long side): only padding
    assert torch.equal(big[:, 20:60], direct)


@pytest.mark.parametrize("seed", range(4))
def test_histogram_percentiles_equal_numpy(seed):
    from xraylens.data.preprocess import percentiles_of

    rng = np.random.default_rng(seed)
    qs = (0, 1, 5, 37.5, 95, 99.9, 100)
    for a in (
        rng.integers(0, 256, (70, 90)).astype(np.float32),
        rng.integers(0, 65536, (64, 64)).astype(np.float32),
        np.clip(rng.normal(40, 3, (80, 81)), 0, 255).round().astype(np.float32),  # few values
    ):
        assert percentiles_of(a, qs) == [float(v) for v in np.percentile(a, qs)]
    fractional = rng.random((70, 90)).astype(np.float32) * 255  # not integers: numpy path
    assert percentiles_of(fractional, qs) == [float(v) for v in np.percentile(fractional, qs)]


def test_minmax_and_none():
    img = ramp(30, 30)
    for p in ("minmax", None, (0, 100)):
        out = preprocess(img, None, percentiles=p)
        assert out.min() == 0.0 and out.max() == 1.0


@pytest.mark.parametrize("value", [0.0, 7.0, -3.5, 65535.0])
def test_constant_image_gives_zeros(value):
    out = preprocess(np.full((50, 30), value, np.float32), 32)
    assert torch.isfinite(out).all() and (out == 0).all()


def test_nearly_constant_image_with_outliers_is_finite():
    img = np.full((50, 50), 10.0, np.float32)
    img[0, 0] = 1e6  # above the 95th percentile: clipped; the rest is constant
    out = preprocess(img, 32)
    assert torch.isfinite(out).all() and (out == 0).all()


def test_deterministic_and_input_types_agree():
    img = ramp(90, 70)
    a = preprocess(img, 48)
    assert torch.equal(a, preprocess(img, 48))
    assert torch.equal(a, preprocess(torch.from_numpy(img), 48))
    assert torch.equal(a, preprocess(torch.from_numpy(img)[None], 48))
    assert torch.equal(a, preprocess(img.astype(np.float64), 48))
    ints = (img / 20).astype(np.uint8)
    assert torch.equal(preprocess(ints, 48), preprocess(ints.astype(np.float32), 48))
    assert torch.equal(preprocess(img[::-1], 48), preprocess(img[::-1].copy(), 48))


def test_input_not_modified():
    img = ramp(40, 40)
    before = img.copy()
    preprocess(img, 32)
    np.testing.assert_array_equal(img, before)


@pytest.mark.parametrize(
    ("img", "kwargs", "match"),
    [
        (np.zeros((2, 3, 4)), {}, "shape"),
        (np.zeros((0, 4)), {}, "empty"),
        (np.array([[np.nan, 1.0], [2.0, 3.0]]), {}, "NaN"),
        ([[1, 2], [3, 4]], {}, "numpy array or torch tensor"),
        (np.zeros((8, 8)), {"size": 0}, "size"),
        (np.zeros((8, 8)), {"percentiles": (95, 1)}, "percentiles"),
        (np.zeros((8, 8)), {"percentiles": "textbook"}, "preset"),
        (np.zeros((8, 8)), {"percentiles": (1, 2, 3)}, "pair"),
    ],
)
def test_bad_input_raises_input_error(img, kwargs, match):
    with pytest.raises(xl.InputError, match=match):
        preprocess(img, **{"size": 16, **kwargs})


def test_preprocess_mask_nearest_and_aligned():
    mask = np.zeros((100, 50), bool)
    mask[:50] = True  # top half
    out = preprocess_mask(mask, 64)
    assert out.dtype == torch.bool and out.shape == (64, 64)
    assert out[:32, 16:48].all() and not out[32:].any() and not out[:, :16].any()
