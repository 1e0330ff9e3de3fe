"""Test helpers shared by the attribution tests (and usable by any attributor's tests).

- :func:`assert_untouched`: a context manager proving that a model is left exactly as it was
  (module objects, values, flags, hooks; see :mod:`xraylens.surgery.snapshot`).
- :func:`randomize_batchnorm`: random affine parameters and running statistics measured on
  random inputs, so that every ReLU is genuinely active for some pixels and inactive for others
  (fresh BatchNorm layers are identities and leave half the network trivially linear).
- :func:`backbone`: registry classifiers with randomised BatchNorm, cached per session.
"""

from __future__ import annotations

import contextlib
import functools

import torch
from torch import nn

import xraylens as xl
from xraylens.surgery import snapshot


@contextlib.contextmanager
def assert_untouched(model: nn.Module):
    """Fail when ``model`` differs in any way after the block."""
    snap = snapshot(model)
    yield
    snap.assert_unchanged(model)


def randomize_batchnorm(module: nn.Module, seed: int, example: torch.Tensor) -> None:
    """Random affine BN parameters; running statistics measured on ``example`` [B, C, H, W]."""
    g = torch.Generator().manual_seed(seed)
    bns = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for bn in bns:
        c, dtype = bn.num_features, bn.running_mean.dtype
        if bn.affine:
            bn.weight.data.copy_(torch.rand(c, generator=g, dtype=dtype) + 0.5)
            bn.bias.data.copy_(torch.randn(c, generator=g, dtype=dtype) * 0.5)
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average: one batch sets the statistics
    flags = [(m, m.training) for m in module.modules()]
    module.eval()
    for bn in bns:
        bn.train()
    with torch.no_grad():
        module(example)
    for m, training in flags:
        m.training = training
    for bn in bns:
        bn.momentum = 0.1


@functools.cache
def backbone(name: str, dtype: torch.dtype = torch.float32) -> xl.Classifier:
    """A registry classifier with random weights and randomised BatchNorm (do not modify)."""
    torch.manual_seed(0)
    clf = xl.get_classifier(name, dtype=dtype)
    s = clf.min_input_size
    example = torch.rand(
        8, clf.in_channels, s, s, dtype=dtype, generator=torch.Generator().manual_seed(1)
    )
    randomize_batchnorm(clf.module, 0, example)
    return clf


def tiny_input(clf: xl.Classifier, n: int = 2, seed: int = 0, extra: int = 0) -> torch.Tensor:
    """``n`` random images of the classifier's smallest size (plus ``extra`` pixels)."""
    s = clf.min_input_size + extra
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, clf.in_channels, s, s, generator=g, dtype=clf.dtype)


class SmallNet(nn.Module):
    """conv -> ReLU -> conv -> ReLU -> pool (average or max) -> adaptive average -> linear."""

    def __init__(self, in_channels: int = 1, n_labels: int = 5, pool: str = "avg"):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 6, 3, padding=1)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(6, 8, 3, padding=1)
        self.relu2 = nn.ReLU()
        self.pool = nn.AvgPool2d(2) if pool == "avg" else nn.MaxPool2d(2)
        self.fc = nn.Linear(8 * 4 * 4, n_labels)

    def forward(self, x):
        x = self.pool(self.relu2(self.conv2(self.relu1(self.conv1(x)))))
        x = nn.functional.adaptive_avg_pool2d(x, 4)
        return self.fc(x.flatten(1))


def small_classifier(pool: str = "avg", dtype=torch.float64, in_channels: int = 1) -> xl.Classifier:
    torch.manual_seed(0)
    net = SmallNet(in_channels, 5, pool).to(dtype)
    return xl.Classifier(
        net,
        labels=[f"l{i}" for i in range(5)],
        in_channels=in_channels,
        min_input_size=8,
        cam_layer="conv2",
        name="small",
    )
