"""Deletion, insertion and ROAD curves: known answers, Quantus parity, batching, bad input."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn

import xraylens as xl
from xraylens.evaluate import perturbation_curves
from xraylens.evaluate._impute import linear_imputation


class OnePixel(nn.Module):
    """Label j's logit is ``(j + 1) * x`` at one pixel: everything else is ignored."""

    def __init__(self, r=3, c=5, labels=3):
        super().__init__()
        self.r, self.c, self.labels = r, c, labels

    def forward(self, x):
        v = x[:, 0, self.r, self.c]
        return v[:, None] * torch.arange(1, self.labels + 1, dtype=x.dtype)


def test_one_pixel_model_drops_at_the_first_deletion_step():
    model = OnePixel()
    x = torch.rand(2, 1, 12, 12) * 0.5 + 0.5
    maps = torch.rand(2, 3, 1, 12, 12) * 0.1
    maps[:, :, 0, 3, 5] = 1.0  # the map points at the pixel the model reads
    curves = perturbation_curves(model, x, maps, targets="all", steps=10)
    s = curves.scores
    assert s.shape == (2, 3, 11)
    want = x[:, 0, 3, 5, None].double() * torch.arange(1, 4)
    assert torch.allclose(s[..., 0], want)
    assert (s[..., 1:] == 0).all()  # gone at the first step and after
    lerf = perturbation_curves(model, x, maps, targets="all", steps=10, order="lerf")
    assert torch.allclose(lerf.scores[..., :-1], want[..., None].expand(-1, -1, 10))
    assert (lerf.scores[..., -1] == 0).all()
    assert (curves.auc() < lerf.auc()).all()
    ins = perturbation_curves(model, x, maps, targets="all", steps=10, mode="insertion")
    assert (ins.scores[..., 0] == 0).all() and torch.allclose(ins.scores[..., 1], want)


def test_probs_are_sigmoid_not_softmax_and_softmax_only_when_asked():
    model = OnePixel()
    x = torch.rand(1, 1, 12, 12)
    maps = torch.rand(1, 3, 12, 12)
    logits = perturbation_curves(model, x, maps, targets="all", steps=4)
    probs = perturbation_curves(model, x, maps, targets="all", steps=4, output="probs")
    soft = perturbation_curves(model, x, maps, targets="all", steps=4, output="softmax")
    assert torch.allclose(probs.scores, torch.sigmoid(logits.scores))
    assert torch.allclose(soft.scores[0, :, 0], torch.softmax(logits.scores[0, :, 0], 0))


def test_attribution_output_kind_is_the_default():
    clf = xl.get_classifier("resnet18", num_classes=3, in_channels=1, weights=None)
    x = torch.rand(2, 1, 32, 32)
    res = xl.get_attributor("saliency").attribute(clf, x, targets=[0, 2], output="probs")
    c = perturbation_curves(clf, x, res, steps=3)
    assert c.output == "probs"
    with torch.no_grad():
        p = torch.sigmoid(clf(x)).double()
    assert torch.allclose(c.scores[:, :, 0], p[:, [0, 2]], atol=1e-6)


def test_chunking_does_not_change_the_numbers():
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.LazyLinear(5))
    x = torch.rand(3, 1, 10, 10)
    model(x)
    maps = torch.randn(3, 5, 10, 10)
    targets = [[0, 1], [4], [2, 3]]
    ref = perturbation_curves(model, x, maps[:, :2], targets=targets, steps=5,
                              engine=xl.Engine(chunk=1))  # fmt: skip
    for mode in ("deletion", "road"):
        a = perturbation_curves(model, x, maps[:, :2], targets=targets, steps=5, mode=mode,
                                engine=xl.Engine(chunk=1))  # fmt: skip
        b = perturbation_curves(model, x, maps[:, :2], targets=targets, steps=5, mode=mode,
                                engine=xl.Engine(chunk=7))  # fmt: skip
        assert torch.allclose(a.scores, b.scores, equal_nan=True, atol=1e-6)
    assert ref.scores[1, 1].isnan().all()  # image 1 has one target: its second slot is empty
    assert not ref.scores[1, 0].isnan().any()


def test_blur_substrate_keeps_a_constant_image():
    model = OnePixel()
    x = torch.full((1, 1, 12, 12), 0.7)
    maps = torch.rand(1, 3, 12, 12)
    c = perturbation_curves(model, x, maps, targets="all", steps=4, substrate="blur", sigma=2.0)
    assert torch.allclose(c.scores, c.scores[..., :1].expand_as(c.scores))


def test_linear_imputation_matches_quantus():
    pytest.importorskip("quantus")
    from quantus.functions.perturb_func import noisy_linear_imputation

    rng = np.random.default_rng(0)
    x = rng.random((2, 20, 20))
    idx = rng.permutation(400)[:250]
    ref = noisy_linear_imputation(x.copy(), idx, noise=0.0)
    removed = torch.zeros(400, dtype=torch.bool)
    removed[idx] = True
    ours = linear_imputation(torch.from_numpy(x)[None], removed.view(1, 1, 20, 20))[0]
    np.testing.assert_allclose(ours.numpy(), ref, atol=1e-6)


def _quantus_model(model):
    import quantus

    return quantus.helpers.model.pytorch_model.PyTorchModel(
        model, channel_first=True, softmax=False, device="cpu"
    )


def test_pixel_flipping_matches_quantus_per_label_without_softmax():
    quantus = pytest.importorskip("quantus")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.Tanh(), nn.Flatten(),
                          nn.Linear(3 * 64, 4)).eval()  # fmt: skip
    x = torch.rand(3, 1, 8, 8)
    maps = torch.rand(3, 4, 1, 8, 8)
    ours = perturbation_curves(model, x, maps, targets="all", pixels_per_step=8)
    for t in range(4):  # Quantus is single-label: loop over labels
        metric = quantus.PixelFlipping(features_in_step=8, perturb_baseline=0.0, abs=False,
                                       normalise=False, disable_warnings=True)  # fmt: skip
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref = metric(model=model, x_batch=x.numpy(), y_batch=np.full(3, t),
                         a_batch=maps[:, t].numpy(), softmax=False, device="cpu")  # fmt: skip
        # Quantus' curve starts after the first step; ours includes the unperturbed image
        np.testing.assert_allclose(ours.scores[:, t, 1:].numpy(), np.array(ref), atol=1e-5)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"mode": "shuffle"}, "mode must be"),
        ({"order": "random"}, "order must be"),
        ({"substrate": "noise"}, "substrate must be"),
        ({"fractions": [0.5, 0.2]}, "fractions must increase"),
        ({"mode": "road", "fractions": [0.0, 1.0]}, "below 1"),
        ({"output": "softmax2"}, "output must be"),
        ({"steps": 0}, "steps must be"),
    ],
)
def test_bad_arguments(kwargs, match):
    x = torch.rand(1, 1, 12, 12)
    with pytest.raises(xl.InputError, match=match):
        perturbation_curves(OnePixel(), x, torch.rand(1, 3, 12, 12), targets="all", **kwargs)


def test_maps_must_match_x():
    with pytest.raises(xl.InputError, match="explain x itself"):
        perturbation_curves(OnePixel(), torch.rand(2, 1, 12, 12), torch.rand(1, 3, 12, 12),
                            targets="all")  # fmt: skip
    with pytest.raises(xl.InputError, match="NaN"):
        perturbation_curves(OnePixel(), torch.rand(1, 1, 12, 12),
                            torch.full((1, 3, 12, 12), float("nan")), targets="all")  # fmt: skip
