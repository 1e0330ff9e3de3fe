"""Sparseness (Gini) and entropy: known answers and Quantus parity looped over labels."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

from xraylens import evaluate as ev


def test_known_answers():
    maps = torch.zeros(1, 3, 4, 4)
    maps[0, 0] = 1.0  # uniform
    maps[0, 1, 2, 2] = -5.0  # one pixel (sign ignored)
    g = ev.sparseness(maps)
    h = ev.entropy(maps)
    assert g[0, 0] == pytest.approx(0.0, abs=1e-12) and g[0, 1] == pytest.approx(1 - 1 / 16)
    assert h[0, 0] == pytest.approx(math.log(16)) and h[0, 1] == 0.0
    assert g[0, 2].isnan() and h[0, 2].isnan()  # all zero


@pytest.mark.parametrize("name,fn", [("Sparseness", ev.sparseness), ("Complexity", ev.entropy)])
def test_quantus_parity_per_label(name, fn):
    quantus = pytest.importorskip("quantus")
    g = torch.Generator().manual_seed(0)
    maps = torch.randn(3, 2, 1, 12, 12, generator=g)
    ours = fn(maps).numpy()
    for t in range(2):
        metric = getattr(quantus, name)(disable_warnings=True)  # abs=True, normalise=True
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            a = maps[:, t].numpy().copy()
            ref = metric(model=None, x_batch=np.zeros_like(a), y_batch=np.zeros(3, int), a_batch=a)
        # Quantus adds 1e-7 (Gini) / 1e-12 (log) to the values: differences below 1e-5
        np.testing.assert_allclose(ours[:, t], np.asarray(ref, float), atol=1e-5)
