"""Multi-label occlusion: equal to Captum's Occlusion per label, batched, model untouched."""

from __future__ import annotations

import logging
import math

import pytest
import torch
from captum.attr import Occlusion as CaptumOcclusion
from torch import nn

import xraylens as xl
from xraylens.attr.occlusion import Occlusion, OcclusionConfig, WindowGrid
from xraylens.core.attributor import SigmoidOutput
from xraylens.errors import InputError

LABELS = ("a", "b", "c", "d", "e")
# float32 maps: the same sums in another order, and batch-size dependent kernels
TOL = {"rtol": 1e-4, "atol": 1e-5}


def tiny_net(in_channels: int = 1) -> nn.Module:
    torch.manual_seed(1)
    return nn.Sequential(
        nn.Conv2d(in_channels, 4, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(3),
        nn.Flatten(),
        nn.Linear(36, len(LABELS)),
    )


def tiny_clf(in_channels: int = 1, **kw) -> xl.Classifier:
    return xl.Classifier(tiny_net(in_channels), LABELS, in_channels=in_channels,
                         min_input_size=4, **kw)  # fmt: skip


def captum_map(module, x, window, stride, baseline, target):
    """Captum's occlusion with the window spanning every channel: [N, C, H, W]."""
    c = x.shape[1]
    return CaptumOcclusion(module).attribute(
        x, sliding_window_shapes=(c, *window), strides=(c, *stride), baselines=baseline,
        target=target, perturbations_per_eval=64,
    )  # fmt: skip


def test_registered_with_contract_parameters():
    assert "occlusion" in xl.list_attributors()
    att = xl.get_attributor("occlusion", window=(50, 50), stride=(4, 4), baseline=0.0)
    assert isinstance(att, Occlusion)
    assert att.config == OcclusionConfig(window=(50, 50), stride=(4, 4), baseline=0.0)
    assert xl.get_attributor("occlusion", preset="paper").config == att.config


@pytest.mark.parametrize(
    ("window", "stride", "baseline"),
    [
        ((5, 4), (3, 3), 0.0),  # does not tile 20x23 evenly: last windows cut off
        ((7, 7), (7, 7), 0.5),  # no overlap
        ((20, 6), (1, 5), 0.2),  # full height
        ((3, 3), (1, 1), 0.0),  # stride 1: up to 9 windows per pixel
        ((4, 6), (2, 4), -1.0),
    ],
)
def test_matches_captum_every_label(window, stride, baseline):
    clf = tiny_clf()
    x = torch.rand(2, 1, 20, 23)
    res = xl.get_attributor("occlusion", window=window, stride=stride, baseline=baseline).attribute(
        clf, x
    )
    assert res.values.shape == (2, 5, 1, 20, 23)
    assert res.values.dtype == torch.float32 and res.delta is None
    for t in range(len(LABELS)):
        expected = captum_map(clf.module, x, window, stride, baseline, t)
        torch.testing.assert_close(res.values[:, t], expected, **TOL)


def test_matches_captum_per_image_targets_and_mask():
    clf = tiny_clf()
    x = torch.rand(3, 1, 16, 16)
    att = xl.get_attributor("occlusion", window=(5, 5), stride=(3, 3))
    targets = [["b", "e"], [0], ["d", "a"]]
    res = att.attribute(clf, x, targets)
    assert res.values.shape == (3, 2, 1, 16, 16)
    assert res.mask.tolist() == [[True, True], [True, False], [True, True]]
    for i, labels in enumerate(targets):
        for s, label in enumerate(labels):
            t = clf.label_index(label)
            expected = captum_map(clf.module, x[i : i + 1], (5, 5), (3, 3), 0.0, t)
            torch.testing.assert_close(res.values[i, s], expected[0], **TOL)
    assert torch.all(res.values[1, 1] == 0)
    mask = torch.tensor([[0, 1, 0, 0, 0], [0, 0, 0, 0, 0], [1, 0, 0, 0, 1]])
    by_mask = att.attribute(clf, x, mask)
    torch.testing.assert_close(by_mask.values[0, 0], res.values[0, 0])  # label b
    torch.testing.assert_close(by_mask.values[2, 0], res.values[2, 1])  # label a


def test_float64_model():
    clf = tiny_clf()
    clf.module.double()
    x = torch.rand(2, 1, 12, 14, dtype=torch.float64)
    res = xl.get_attributor("occlusion", window=(4, 5), stride=(3, 2)).attribute(clf, x, [1, 3])
    assert res.values.dtype == torch.float32
    for s, t in enumerate([1, 3]):
        expected = captum_map(clf.module, x, (4, 5), (3, 2), 0.0, t)
        torch.testing.assert_close(res.values[:, s], expected.float(), rtol=1e-5, atol=1e-7)


def test_probs_output():
    clf = tiny_clf()
    x = torch.rand(2, 1, 12, 12)
    res = xl.get_attributor("occlusion", window=(4, 4), stride=(2, 2)).attribute(
        clf, x, output="probs"
    )
    assert res.output == "probs"
    for t in range(len(LABELS)):
        expected = captum_map(SigmoidOutput(clf.module), x, (4, 4), (2, 2), 0.0, t)
        torch.testing.assert_close(res.values[:, t], expected, **TOL)


def test_rgb_window_spans_channels_and_normalisation():
    clf = tiny_clf(3, input_mean=(0.4, 0.5, 0.6), input_std=(0.2, 0.25, 0.3))
    x = torch.rand(1, 3, 12, 12)
    res = xl.get_attributor("occlusion", window=(3, 5), stride=(3, 3), baseline=0.3).attribute(
        clf, x, ["c"]
    )
    expected = captum_map(clf.forward_module(), x, (3, 5), (3, 3), 0.3, 2)
    torch.testing.assert_close(res.values[:, 0], expected, **TOL)
    assert torch.equal(res.values[0, 0, 0], res.values[0, 0, 2])  # same map in every channel


def test_tensor_baselines():
    clf = tiny_clf()
    x = torch.rand(2, 1, 12, 12)
    shared = torch.rand(1, 12, 12)  # [C, H, W], the same for both images
    per_image = torch.rand(2, 1, 12, 12)
    for baseline in (shared, per_image, torch.tensor(0.7)):
        res = xl.get_attributor("occlusion", window=(5, 5), stride=(2, 3), baseline=baseline)
        values = res.attribute(clf, x).values
        captum_base = baseline if baseline.dim() != 3 else baseline[None].expand(2, -1, -1, -1)
        for t in (0, 4):
            expected = captum_map(clf.module, x, (5, 5), (2, 3), captum_base, t)
            torch.testing.assert_close(values[:, t], expected, **TOL)


def test_chunking_gives_the_same_maps_across_image_boundaries():
    clf = tiny_clf()
    x = torch.rand(3, 1, 12, 12)
    whole = xl.get_attributor("occlusion", window=(4, 4), stride=(3, 3)).attribute(clf, x)
    att = xl.get_attributor("occlusion", window=(4, 4), stride=(3, 3))
    att.engine.chunk = 7  # 16 windows per image: chunks straddle images
    torch.testing.assert_close(att.attribute(clf, x).values, whole.values, **TOL)
    assert att.engine.last_plan.chunk == 7 and att.engine.last_plan.n_items == 48


class OOMAboveBatch(nn.Module):
    """A model that runs out of memory (simulated) for batches larger than ``limit``."""

    def __init__(self, inner: nn.Module, limit: int):
        super().__init__()
        self.inner = inner
        self.limit = limit
        self.batches: list[int] = []

    def forward(self, x):
        if x.shape[0] > self.limit:
            raise torch.OutOfMemoryError(f"simulated: batch {x.shape[0]}")
        self.batches.append(x.shape[0])
        return self.inner(x)


def test_out_of_memory_back_off(caplog):
    x = torch.rand(2, 1, 12, 12)
    expected = xl.get_attributor("occlusion", window=(4, 4), stride=(2, 2)).attribute(tiny_clf(), x)
    module = OOMAboveBatch(tiny_net(), limit=5)
    clf = xl.Classifier(module, LABELS, min_input_size=4)
    att = xl.get_attributor("occlusion", window=(4, 4), stride=(2, 2))
    with caplog.at_level(logging.WARNING, logger="xraylens.engine"):
        res = att.attribute(clf, x)
    torch.testing.assert_close(res.values, expected.values, **TOL)
    assert max(module.batches) <= 5
    assert module.batches[0] == 1  # the engine's memory probe
    assert sum(module.batches) == 1 + 2 + 2 * 25  # probe, references, every window once
    assert any("out of memory" in r.getMessage() for r in caplog.records)


def test_engine_options_keep_results():
    clf = tiny_clf()
    x = torch.rand(2, 1, 12, 12)
    plain = xl.get_attributor("occlusion", window=(4, 4), stride=(2, 2)).attribute(clf, x)
    fast = xl.get_attributor(
        "occlusion", window=(4, 4), stride=(2, 2), channels_last=True, max_memory="1MB"
    ).attribute(clf, x)
    torch.testing.assert_close(fast.values, plain.values, **TOL)
    bf16 = xl.get_attributor("occlusion", window=(4, 4), stride=(2, 2), amp="bf16")
    approx = bf16.attribute(clf, x).values
    # bf16 keeps 8 bits of mantissa: differences of logits lose about 2-3 digits
    scale = plain.values.abs().max()
    assert (approx - plain.values).abs().max() <= 0.1 * scale


def test_window_grid_placement_like_captum():
    grid = WindowGrid.build((50, 50), (4, 4), 512, 512)
    assert (grid.rows, grid.cols) == (117, 117)  # ceil((512 - 50) / 4) + 1, as Captum
    assert len(grid) == 13_689
    default = WindowGrid.build(OcclusionConfig().window, OcclusionConfig().stride, 512, 512)
    assert default.window == (64, 64) and default.stride == (32, 32) and len(default) == 225
    assert len(WindowGrid.build((0.125, 0.125), (0.0625, 0.0625), 224, 224)) == 225
    masks = grid.masks(torch.tensor([0, 116, 117 * 117 - 1]))
    assert masks[0, :50, :50].all() and masks[0].sum() == 2500
    assert masks[1, :50, 464:].all() and masks[1].sum() == 50 * 48  # cut off at the border
    assert masks[2, 464:, 464:].all() and masks[2].sum() == 48 * 48


def test_window_grid_average_counts_covering_windows():
    grid = WindowGrid.build((3, 2), (2, 1), 5, 4)
    ones = grid.average(torch.ones(1, len(grid)))
    torch.testing.assert_close(ones, torch.ones(1, 5, 4, dtype=torch.float64))
    values = torch.arange(len(grid), dtype=torch.float64)[None]
    masks = grid.masks(torch.arange(len(grid))).double()
    brute = (values[0, :, None, None] * masks).sum(0) / masks.sum(0)
    torch.testing.assert_close(grid.average(values)[0], brute)


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"window": 0}, "window"),
        ({"window": (3, 3, 3)}, "window"),
        ({"window": 1.5}, "fractions"),
        ({"window": "big"}, "window"),
        ({"stride": -2}, "stride"),
        ({"baseline": "zero"}, "baseline"),
    ],
)
def test_bad_config(params, match):
    with pytest.raises(InputError, match=match):
        xl.get_attributor("occlusion", **params)


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"window": (4, 4), "stride": (5, 5)}, "stride"),
        ({"window": (40, 4), "stride": (1, 1)}, "larger than the image"),
        ({"baseline": torch.zeros(2, 5, 5)}, "baseline"),
        ({"baseline": torch.zeros(3, 1, 12, 12)}, "baseline"),
    ],
)
def test_bad_config_for_the_input(params, match):
    with pytest.raises(InputError, match=match):
        xl.get_attributor("occlusion", **params).attribute(tiny_clf(), torch.rand(2, 1, 12, 12))


def _model_state(module: nn.Module):
    return {
        "params": {n: (p, p.detach().clone()) for n, p in module.named_parameters()},
        "buffers": {n: b.detach().clone() for n, b in module.named_buffers()},
        "modules": dict(module.named_modules()),
        "inplace": {n: m.inplace for n, m in module.named_modules() if hasattr(m, "inplace")},
        "training": {n: m.training for n, m in module.named_modules()},
    }


def _assert_untouched(module: nn.Module, before) -> None:
    after = _model_state(module)
    assert after["modules"].keys() == before["modules"].keys()
    assert all(after["modules"][n] is m for n, m in before["modules"].items())
    for n, (p, value) in before["params"].items():
        assert after["params"][n][0] is p and torch.equal(p.detach(), value)
    assert all(torch.equal(after["buffers"][n], b) for n, b in before["buffers"].items())
    assert after["inplace"] == before["inplace"]
    assert after["training"] == before["training"]


@pytest.mark.parametrize("name", xl.list_classifiers())
def test_every_backbone_matches_captum_and_is_untouched(name):
    clf = xl.get_classifier(name)
    size = clf.min_input_size
    x = torch.rand(1, 1, size, size)
    module = clf.module
    module.train()  # the caller's mixed flags must come back as they were
    first_child = next(module.children())
    first_child.eval()
    before = _model_state(module)
    att = xl.get_attributor("occlusion", window=0.5, stride=0.5)
    res = att.attribute(clf, x, [0, 13])
    _assert_untouched(module, before)
    side = round(0.5 * size)
    n_windows = (math.ceil((size - side) / side) + 1) ** 2
    assert att.engine.last_plan.n_items == n_windows
    module.eval()
    expected = captum_map(clf.forward_module(), x, (side, side), (side, side), 0.0, 13)
    torch.testing.assert_close(res.values[:, 1], expected, rtol=1e-3, atol=1e-5)
