"""The Attribution result type and its .npz format."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import xraylens as xl


def make(per_image=False, delta=True, dtype=torch.float64):
    values = torch.randn(2, 3, 1, 8, 8, dtype=dtype)
    labels = [("A", "B", "C"), ("B",)] if per_image else ("A", "B", "C")
    mask = torch.tensor([[True] * 3, [True, False, False]]) if per_image else None
    return xl.Attribution(
        values=values,
        labels=labels,
        mask=mask,
        delta=torch.randn(2, 3, dtype=torch.float64) if delta else None,
        method="integrated_gradients",
        params={
            "n_steps": 50,
            "window": (50, 50),
            "baseline": torch.tensor([0.5, 0.25]),
            "nested": {"a": [1, (2, 3)]},
            "name": None,
        },
        output="probs",
        model="resnet18",
    )


def test_values_are_float32_on_cpu():
    res = make()
    assert res.values.dtype == torch.float32 and res.values.device.type == "cpu"
    assert res.mask.all() and res.mask.shape == (2, 3)


@pytest.mark.parametrize("per_image", [False, True])
@pytest.mark.parametrize("delta", [False, True])
def test_npz_round_trip_is_lossless(tmp_path, per_image, delta):
    res = make(per_image, delta)
    path = res.save(tmp_path / "sub" / "res.npz")
    again = xl.Attribution.load(path)
    assert torch.equal(again.values, res.values)
    assert torch.equal(again.mask, res.mask)
    assert again.labels == res.labels
    if delta:
        assert again.delta.dtype == torch.float64 and torch.equal(again.delta, res.delta)
    else:
        assert again.delta is None
    assert again.method == res.method and again.output == "probs" and again.model == "resnet18"
    assert again.params["window"] == (50, 50) and again.params["nested"] == {"a": [1, (2, 3)]}
    assert torch.equal(again.params["baseline"], res.params["baseline"])
    assert not list(path.parent.glob(".*tmp")), "no temporary file left behind"


def test_map_lookup():
    res = make(per_image=True)
    assert torch.equal(res.map(1, "B"), res.values[1, 0])
    with pytest.raises(xl.InputError, match="has no map for 'C'"):
        res.map(1, "C")
    with pytest.raises(xl.InputError, match="empty"):
        res.map(1, 2)


def test_shapes_are_checked():
    with pytest.raises(xl.InputError, match=r"\[N, T, C, H, W\]"):
        xl.Attribution(values=torch.zeros(2, 8, 8), labels=("A",))
    with pytest.raises(xl.InputError, match="labels: 1 names for 2"):
        xl.Attribution(values=torch.zeros(1, 2, 1, 4, 4), labels=("A",))


def test_load_rejects_other_files(tmp_path):
    np.savez(tmp_path / "other.npz", values=np.zeros(3))
    with pytest.raises(xl.InputError, match="not an xraylens Attribution"):
        xl.Attribution.load(tmp_path / "other.npz")
