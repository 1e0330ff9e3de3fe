"""The exact DeepLIFT rule for max pooling, tested alone before any backbone uses it."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from model_guard import assert_untouched
from torch import nn

import xraylens as xl
from xraylens.errors import InputError
from xraylens.surgery import adaptive_geometry, fold_multipliers, pool_geometry, window_multipliers

GEOMETRIES = [  # kernel, stride, padding, dilation, ceil_mode, (H, W)
    (2, 2, 0, 1, False, (8, 9)),
    (3, 2, 1, 1, False, (9, 9)),  # overlapping windows, padding (ResNet/DenseNet stem)
    (3, 2, 0, 1, True, (10, 7)),  # ceil mode: windows that stick out
    (3, 1, 1, 1, False, (7, 7)),
    (3, 2, 0, 2, False, (11, 12)),  # dilation
    ((2, 3), (1, 2), (1, 0), 1, False, (6, 8)),  # rectangular
]


@pytest.mark.parametrize("kernel, stride, padding, dilation, ceil, size", GEOMETRIES)
def test_window_multipliers_sum_to_delta(kernel, stride, padding, dilation, ceil, size):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, *size, generator=g, dtype=torch.float64)
    x0 = torch.randn(2, 3, *size, generator=g, dtype=torch.float64)
    # ties in both input and reference
    x[..., 0, :2] = 1.5
    x0[..., 1, :3] = -0.25
    y = F.max_pool2d(x, kernel, stride, padding, dilation, ceil)
    y0 = F.max_pool2d(x0, kernel, stride, padding, dilation, ceil)
    geom = pool_geometry(size, y.shape[-2:], kernel, stride, padding, dilation)
    mult = window_multipliers(x, x0, geom)
    assert mult.min() >= 0 and mult.max() <= 1
    # per window: sum of multiplier * input difference == output difference
    torch.testing.assert_close(
        (mult * (F.unfold(geom.pad(x, -1e3), geom.kernel, geom.dilation, 0, geom.stride)
                 - F.unfold(geom.pad(x0, -1e3), geom.kernel, geom.dilation, 0, geom.stride))
         .view(*mult.shape)).sum(2).view_as(y),
        y - y0, rtol=0, atol=1e-12,
    )  # fmt: skip
    # and through the backward: <grad_in, Δx> == <grad_out, Δy> for any grad_out
    grad_out = torch.randn(y.shape, generator=g, dtype=torch.float64)
    grad_in = fold_multipliers(grad_out, mult, geom)
    assert grad_in.shape == x.shape
    lhs, rhs = (grad_in * (x - x0)).sum(), (grad_out * (y - y0)).sum()
    assert abs(float(lhs - rhs)) < 1e-12


def _pool_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2, 2), nn.Flatten(),
        nn.Linear(4 * 4 * 4, 3),
    ).double()  # fmt: skip


def test_captum_maxpool_rule_breaks_completeness_ours_is_exact():
    from captum.attr import DeepLift

    net = _pool_net()
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 1, 8, 8, generator=g, dtype=torch.float64)
    x0 = torch.rand(2, 1, 8, 8, generator=g, dtype=torch.float64)
    with torch.no_grad():
        diff = net(x)[:, 1] - net(x0)[:, 1]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, captum_delta = DeepLift(net).attribute(x, x0, target=1, return_convergence_delta=True)
    # Captum: the completeness error is larger than the output difference itself
    assert (captum_delta.abs() > diff.abs()).any()
    assert (captum_delta.abs() > 1e-3 * diff.abs().clamp_min(1)).all()
    clf = xl.Classifier(net, labels=["a", "b", "c"], min_input_size=8)
    with assert_untouched(net):
        res = xl.get_attributor("deeplift", baseline=x0).attribute(clf, x, ["b"])
    ours = res.delta[:, 0].double()
    assert ours.abs().max() < 1e-10
    # the delta is the completeness error (recomputed here from the float32 values)
    assert (res.values.double().sum((1, 2, 3, 4)) - diff).abs().max() < 1e-5


class _FunctionalPools(nn.Module):
    """Functional max pools (with padding, ceil mode, adaptive) and a functional ReLU."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 2 * 2, 3)

    def forward(self, x):
        x = torch.relu(self.conv(x))
        x = F.max_pool2d(x, 3, stride=2, padding=1, ceil_mode=True)
        x = F.adaptive_max_pool2d(x, 2)
        return self.fc(x.flatten(1))


def test_functional_max_pools_become_exact():
    torch.manual_seed(0)
    net = _FunctionalPools().double()
    clf = xl.Classifier(net, labels=["a", "b", "c"], min_input_size=8)
    g = torch.Generator().manual_seed(1)
    x = torch.rand(3, 1, 14, 14, generator=g, dtype=torch.float64)
    x0 = torch.rand(1, 1, 14, 14, generator=g, dtype=torch.float64)
    res = xl.get_attributor("deeplift", baseline=x0).attribute(clf, x, "all")
    assert res.delta.abs().max() < 1e-10


def test_adaptive_geometry_needs_even_windows():
    assert adaptive_geometry((8, 6), 2).kernel == (4, 3)
    assert adaptive_geometry((8, 6), (None, 3)).kernel == (1, 2)
    with pytest.raises(InputError, match="uneven"):
        adaptive_geometry((7, 6), 2)
