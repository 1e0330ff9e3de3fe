"""CUDA-only checks of the engine: real out-of-memory back-off, probes, autocast, device copy.

Skipped without a CUDA device.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import xraylens as xl
from xraylens.core.engine import Engine

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

LABELS = ("a", "b", "c", "d", "e")


def tiny_net() -> nn.Module:
    torch.manual_seed(1)
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(3), nn.Flatten(),
        nn.Linear(72, len(LABELS)),
    )  # fmt: skip


def _free_bytes() -> int:
    torch.cuda.empty_cache()
    return torch.cuda.mem_get_info()[0]


def test_real_cuda_oom_backs_off_and_keeps_results():
    per_item = int(_free_bytes() / 2.5)  # 3 items never fit, 2 do
    calls = []

    def fn(start, stop):
        calls.append((start, stop))
        block = torch.empty((stop - start) * per_item, dtype=torch.uint8, device="cuda")
        del block
        return torch.arange(start, stop, device="cuda")

    out = Engine().map_chunks(fn, 9, chunk=8, desc="cuda oom test")
    assert torch.equal(torch.cat(out).cpu(), torch.arange(9))
    assert calls[:3] == [(0, 8), (0, 4), (0, 2)]
    assert all(b - a <= 2 for a, b in calls[3:])


class AllocatesPerImage(nn.Module):
    """Allocates ``per_image`` bytes for every image of the batch: big batches run out."""

    def __init__(self, inner: nn.Module, per_image: int):
        super().__init__()
        self.inner = inner
        self.per_image = per_image

    def forward(self, x):
        scratch = torch.empty(x.shape[0] * self.per_image, dtype=torch.uint8, device=x.device)
        del scratch
        return self.inner(x)


def test_occlusion_survives_real_cuda_oom():
    x = torch.rand(2, 1, 16, 16)
    cpu_clf = xl.Classifier(tiny_net(), LABELS, min_input_size=4)
    expected = xl.get_attributor("occlusion", window=(4, 4), stride=(2, 2)).attribute(cpu_clf, x)
    module = AllocatesPerImage(tiny_net(), per_image=_free_bytes() // 8).cuda()
    clf = xl.Classifier(module, LABELS, min_input_size=4)
    att = xl.get_attributor("occlusion", window=(4, 4), stride=(2, 2))
    att.engine.chunk = 64  # forces out-of-memory until the chunk is small enough
    res = att.attribute(clf, x)
    torch.testing.assert_close(res.values, expected.values, rtol=1e-3, atol=1e-5)


def test_cuda_probe_and_plan_within_budget():
    module = tiny_net().cuda()
    example = torch.rand(1, 1, 64, 64, device="cuda")
    engine = Engine()
    per_item = engine.item_bytes(module, example, grad=True)
    assert per_item > example.numel() * 4
    assert engine.item_bytes(module, example, grad=False) <= per_item
    engine = Engine(max_memory=per_item * 3)
    assert engine.plan(50, module=module, example=example, grad=True) == 3
    assert engine.last_plan.probe == "cuda peak"
    # the planned chunk really stays within the budget
    before = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    batch = example.expand(3, -1, -1, -1).clone().requires_grad_(True)
    torch.autograd.grad(module(batch).sum(), batch)
    assert torch.cuda.max_memory_allocated() - before <= per_item * 3


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_occlusion_autocast_tolerance(amp):
    clf = xl.get_classifier("resnet18")
    clf.module.cuda()
    x = torch.rand(1, 1, 64, 64)
    exact = xl.get_attributor("occlusion", window=16, stride=8).attribute(clf, x)
    approx = xl.get_attributor("occlusion", window=16, stride=8, amp=amp).attribute(clf, x)
    scale = exact.values.abs().max()
    # documented tolerance: max error <= 10% (bf16) / 2% (fp16) of the largest attribution
    # (measured on CPU autocast, ResNet18 at 64 px: 6.8% and 0.8%)
    bound = 0.10 if amp == "bf16" else 0.02
    assert (approx.values - exact.values).abs().max() <= bound * scale


def test_engine_device_copies_the_model():
    clf = xl.Classifier(tiny_net(), LABELS, min_input_size=4)
    x = torch.rand(1, 1, 12, 12)
    on_cpu = xl.get_attributor("occlusion", window=4, stride=2).attribute(clf, x)
    on_gpu = xl.get_attributor("occlusion", window=4, stride=2, device="cuda").attribute(clf, x)
    assert clf.device.type == "cpu"  # the caller's model did not move
    torch.testing.assert_close(on_gpu.values, on_cpu.values, rtol=1e-3, atol=1e-5)
