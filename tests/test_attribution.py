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


def test_repr_shows_shapes_and_labels_not_the_tensor():
    res = xl.Attribution(
        values=torch.randn(3, 2, 1, 64, 64),
        labels=("COVID-19", "No Finding"),
        delta=torch.zeros(3, 2),
        method="deeplift",
        model="resnet18",
        probs=torch.rand(3, 4),
        classes=("COVID-19", "No Finding", "ARDS", "SARS"),
    )
    text = repr(res)
    assert text == (
        "Attribution(method='deeplift', model='resnet18', values=[N=3, T=2, C=1, H=64, W=64], "
        "labels=[COVID-19, No Finding], output='logits', delta=[3, 2], probs=[3, 4])"
    )
    assert "tensor(" not in str(res) and len(text) < 200
    per_image = xl.Attribution(
        values=torch.zeros(2, 2, 1, 8, 8),
        labels=[("a",), ("a", "b")],
        mask=torch.tensor([[True, False], [True, True]]),
    )
    assert "per-image (3 maps)" in repr(per_image)


def test_probabilities_round_trip_and_are_checked(tmp_path):
    probs = torch.tensor([[0.9, 0.1, 0.5]])
    res = xl.Attribution(
        values=torch.ones(1, 1, 1, 4, 4), labels=("b",), probs=probs, classes=("a", "b", "c")
    )
    back = xl.Attribution.load(res.save(tmp_path / "r.npz"))
    torch.testing.assert_close(back.probs, probs)
    assert back.classes == ("a", "b", "c") and back.prob(0, "a") == pytest.approx(0.9)
    assert back.prob(0, "zzz") is None
    with pytest.raises(xl.InputError, match="classes"):
        xl.Attribution(values=torch.ones(1, 1, 1, 4, 4), labels=("b",), probs=probs)
    with pytest.raises(xl.InputError, match="probs must be"):
        xl.Attribution(
            values=torch.ones(2, 1, 1, 4, 4), labels=("b",), probs=probs, classes=("a", "b", "c")
        )
