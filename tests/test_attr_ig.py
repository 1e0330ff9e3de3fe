"""Integrated gradients: completeness improves with more steps; chunking never changes it."""

from __future__ import annotations

import pytest
import torch
from model_guard import backbone, tiny_input

import xraylens as xl


@pytest.mark.parametrize("method", ["riemann_trapezoid", "gausslegendre"])
def test_completeness_error_shrinks_with_steps(method):
    clf = backbone("resnet18", torch.float64)
    x = tiny_input(clf, n=2, seed=7)
    errors = []
    for steps in (2, 8, 32):
        res = xl.get_attributor("integrated_gradients", n_steps=steps, method=method)
        res = res.attribute(clf, x, [0, 4, 9])
        with torch.no_grad():
            diff = (clf(x) - clf(torch.zeros_like(x)))[:, [0, 4, 9]]
        # the delta is the completeness error, computed in float64
        torch.testing.assert_close(res.delta, res.values.double().sum((2, 3, 4)) - diff,
                                   rtol=0, atol=1e-5 * float(diff.abs().max()))  # fmt: skip
        errors.append(float((res.delta.abs() / diff.abs().clamp_min(1)).mean()))
    assert errors[0] > errors[1] > errors[2], errors
    assert errors[2] < 0.25 * errors[0], errors


def test_internal_batch_size_splits_paths_without_changing_them():
    clf = backbone("resnet18", torch.float64)
    x = tiny_input(clf, n=2, seed=8)
    whole = xl.get_attributor("integrated_gradients", n_steps=10).attribute(clf, x, [1, 2])
    parts = xl.get_attributor("integrated_gradients", n_steps=10, internal_batch_size=3)
    parts = parts.attribute(clf, x, [1, 2])
    torch.testing.assert_close(parts.values, whole.values, rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(parts.delta, whole.delta, rtol=1e-9, atol=1e-12)


def test_memory_budget_gives_chunks_and_the_same_maps():
    clf = backbone("resnet18", torch.float64)
    x = tiny_input(clf, n=1, seed=9, extra=32)
    free = xl.get_attributor("integrated_gradients", n_steps=8).attribute(clf, x, [0, 1])
    att = xl.get_attributor("integrated_gradients", n_steps=8, max_memory="40MB")
    tight = att.attribute(clf, x, [0, 1])
    assert att.engine.last_plan.chunk < 8
    torch.testing.assert_close(tight.values, free.values, rtol=1e-6, atol=1e-9)
