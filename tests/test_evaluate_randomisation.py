"""Randomisation sanity checks: gradient and Grad-CAM pass, an edge filter of the input fails."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import xraylens as xl
from xraylens.evaluate import randomisation_check
from xraylens.evaluate.randomisation import default_layers, similarity, spearman


def _images():
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 64), torch.linspace(-1, 1, 64), indexing="ij")
    blobs = [((xx - 0.3 * i) ** 2 + yy**2 < 0.3).float() * 0.6 + 0.2 for i in range(2)]
    return torch.stack(blobs)[:, None]


def edge_filter(clf, x):
    """A map that ignores the model: the Sobel magnitude of the input, for every label."""
    k = torch.tensor([[1.0, 0, -1], [2, 0, -2], [1, 0, -1]])[None, None]
    g = F.conv2d(x, k, padding=1).abs()
    return g[:, None].expand(-1, clf.num_classes, -1, -1, -1)


@pytest.fixture(scope="module")
def clf():
    torch.manual_seed(0)
    return xl.get_classifier("resnet18", num_classes=3, in_channels=1, weights=None)


@pytest.mark.parametrize("name", ["saliency", "grad_cam"])
def test_model_dependent_methods_pass(clf, name):
    before = {k: v.clone() for k, v in clf.module.state_dict().items()}
    r = randomisation_check(
        clf, _images(), xl.get_attributor(name), layers=("fc", "layer4", "layer3")
    )
    assert r.layers == ("fc", "layer4", "layer3")
    assert r.similarity["spearman_abs"].shape == (3, 2, 3)
    assert r.passed, r.curve()
    assert r.score < 0.5
    after = clf.module.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # the caller's model is untouched


@pytest.mark.parametrize("mode", ["cascading", "independent"])
def test_edge_filter_fails(clf, mode):
    r = randomisation_check(clf, _images(), edge_filter, mode=mode, layers=("fc", "layer4"))
    for name in ("spearman_abs", "spearman", "ssim", "hog"):
        assert torch.allclose(r.curve(name), torch.ones(2, dtype=torch.float64)), name
    assert not r.passed


def test_default_layers_are_output_side_first(clf):
    assert default_layers(clf.module)[:2] == ["fc", "layer4"]
    assert default_layers(clf.module)[-1] == "conv1"


def test_similarities_match_scipy_and_skimage():
    from scipy.stats import pearsonr, spearmanr
    from skimage.feature import hog
    from skimage.metrics import structural_similarity

    g = torch.Generator().manual_seed(0)
    a = torch.rand(3, 32, 32, generator=g).round(decimals=1)  # ties
    b = a + 0.3 * torch.rand(3, 32, 32, generator=g)
    ours = spearman(a.flatten(1), b.flatten(1))
    for i in range(3):
        assert ours[i].item() == pytest.approx(spearmanr(a[i].flatten(), b[i].flatten())[0])
    norm = [(m - m.min()) / (m.max() - m.min()) for m in (a[0].double(), b[0].double())]
    ssim = structural_similarity(norm[0].numpy(), norm[1].numpy(), data_range=1.0)
    assert similarity(a[:1], b[:1], "ssim")[0].item() == pytest.approx(ssim)
    fa, fb = (hog(m.numpy(), pixels_per_cell=(4, 4), cells_per_block=(2, 2)) for m in norm)
    assert similarity(a[:1], b[:1], "hog")[0].item() == pytest.approx(pearsonr(fa, fb)[0])


def test_bad_arguments(clf):
    x = _images()
    with pytest.raises(xl.InputError, match="mode"):
        randomisation_check(clf, x, edge_filter, mode="top-down")
    with pytest.raises(xl.InputError, match="not modules"):
        randomisation_check(clf, x, edge_filter, layers=("layer9",))
    with pytest.raises(xl.InputError, match="similarities"):
        randomisation_check(clf, x, edge_filter, similarities=("cosine",))
