"""The execution engine: budgets, chunk planning, probes, out-of-memory back-off."""

from __future__ import annotations

import logging
import mmap

import pytest
import torch
from torch import nn

from xraylens.core import engine as engine_mod
from xraylens.core import memory
from xraylens.core.engine import Engine, activation_bytes, is_oom, parse_memory
from xraylens.errors import InputError


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("4GB", 4 * 10**9),
        ("4 GB", 4 * 10**9),
        ("4gib", 4 * 2**30),
        ("4G", 4 * 2**30),
        ("512MB", 512 * 10**6),
        ("1.5GiB", int(1.5 * 2**30)),
        ("2048", 2048),
        (3_000_000, 3_000_000),
        (2.5e9, 2_500_000_000),
        (0.5, 0.5),
        (1.0, 1.0),
        (None, None),
    ],
)
def test_parse_memory(text, expected):
    assert parse_memory(text) == expected


@pytest.mark.parametrize("bad", ["4XB", "GB", "-1GB", "0", 0, -5, True, "four GB", "1.2.3GB"])
def test_parse_memory_rejects(bad):
    with pytest.raises(InputError, match="max_memory"):
        parse_memory(bad)


def test_engine_rejects_bad_options():
    with pytest.raises(InputError, match="amp"):
        Engine(amp="fp8")
    with pytest.raises(InputError, match="device"):
        Engine(device="nodevice")
    with pytest.raises(InputError, match="chunk"):
        Engine(chunk=0)


def test_budget_bytes_absolute_fraction_and_default(monkeypatch):
    monkeypatch.setattr(engine_mod, "available_cpu_memory", lambda: 10_000)
    cpu = torch.device("cpu")
    assert Engine(max_memory="4kB").budget_bytes(cpu) == 4000
    assert Engine(max_memory=0.25).budget_bytes(cpu) == 2500
    assert Engine().budget_bytes(cpu) == 5000


def test_chunk_size_fits_budget():
    cpu = torch.device("cpu")
    engine = Engine(max_memory=1000)
    assert engine.chunk_size(100, 30, cpu) == 33
    assert engine.chunk_size(100, 30, cpu, fixed_bytes=400) == 20
    assert engine.chunk_size(10, 30, cpu) == 10  # never more than the items
    assert engine.chunk_size(10, 5000, cpu) == 1  # never less than one
    assert engine.chunk_size(10, 0, cpu) == 10
    assert Engine(max_memory=1000, chunk=4).chunk_size(10, 30, cpu) == 4


def _net():
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(512, 3))


def test_cpu_chunks_are_capped_for_cache_efficiency():
    cpu = torch.device("cpu")
    engine = Engine(max_memory=10**9, cpu_chunk_bytes="1kB")
    assert engine.chunk_size(100, 100, cpu) == 10  # 1000 bytes worth, not the 10^9 budget
    assert engine.chunk_size(100, 5000, cpu) == 1  # one item bigger than the cap: still one
    assert Engine(max_memory=10**9, cpu_chunk_bytes=None).chunk_size(100, 100, cpu) == 100
    assert engine.chunk_size(100, 100, torch.device("meta")) == 100  # only the CPU is capped
    assert Engine(max_memory=500, cpu_chunk_bytes="1kB").chunk_size(100, 100, cpu) == 5
    assert Engine().cpu_chunk_bytes == engine_mod.CPU_CHUNK_BYTES


def test_activation_bytes_counts_leaf_outputs():
    x = torch.rand(1, 1, 8, 8)
    expected = (8 * 64 + 8 * 64 + 8 * 64 + 3) * 4  # conv, relu, flatten, linear outputs
    assert activation_bytes(_net(), x) == expected
    assert activation_bytes(_net().double(), x.double()) == 2 * expected


class DataDependent(nn.Module):
    """Branches on a value: fake tensors cannot run it, so the probe falls back."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 2)

    def forward(self, x):
        return self.lin(x) if x.sum() > -1 else self.lin(-x)


def test_activation_bytes_fake_equals_real_and_falls_back():
    net = _net()
    net.train()
    x = torch.rand(1, 1, 8, 8)
    assert activation_bytes(net, x, fake=True) == activation_bytes(net, x, fake=False)
    assert all(m.training for m in net.modules())  # flags restored after the eval-mode probe
    assert activation_bytes(DataDependent(), torch.rand(1, 4)) == 2 * 4


def test_cpu_probe_scales_with_input_and_grad():
    net = _net()
    x = torch.rand(1, 1, 8, 8)
    no_grad, how = memory.probe_item_bytes(net, x, grad=False)
    grad, how_grad = memory.probe_item_bytes(net, x, grad=True)
    assert how.startswith("cpu activations") and how_grad.startswith("cpu saved tensors")
    assert 0 < no_grad < grad
    acts = activation_bytes(net, x)
    assert no_grad == int(acts * memory.CPU_FACTOR_NO_GRAD) + 2 * 256
    # saved per item: the conv's input (256 B) and the ReLU output (2048 B; Flatten and Linear
    # reuse its storage); largest activation 2048 B; plus input, copy and gradient (3 x 256 B)
    expected = int((256 + 2048 + memory.GRAD_TRANSIENTS * 2048) * memory.CPU_MARGIN_GRAD)
    assert grad == expected + 3 * 256
    conv = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU())
    small = memory.probe_item_bytes(conv, torch.rand(1, 1, 8, 8), grad=True)[0]
    assert memory.probe_item_bytes(conv, torch.rand(1, 1, 16, 16), grad=True)[0] > 3 * small


def test_saved_bytes_fake_equals_real_and_grad_fallback():
    net = _net()
    x = torch.rand(2, 1, 8, 8)
    real = memory.saved_bytes(net, x)
    weights = (8 * 9 + 512 * 3) * 4  # conv and linear weights are saved too
    assert real == 2 * (256 + 2048) + weights
    bytes_, how = memory.probe_item_bytes(DataDependent(), torch.rand(1, 4), grad=True)
    assert how == f"cpu activations x {memory.CPU_FACTOR_GRAD}"
    assert bytes_ == int(2 * 4 * memory.CPU_FACTOR_GRAD) + 3 * 16


def test_plan_uses_probe_budget_and_logs(caplog):
    net = _net()
    x = torch.rand(1, 1, 8, 8)
    per_item, _ = memory.probe_item_bytes(net, x, grad=True)
    params = sum(p.numel() * 4 for p in net.parameters())  # the CPU's fixed overhead
    assert memory.fixed_bytes(net, torch.device("cpu")) == params
    engine = Engine(max_memory=params + per_item * 7 + 3)
    with caplog.at_level(logging.INFO, logger="xraylens.engine"):
        chunk = engine.plan(100, module=net, example=x, grad=True, what="pairs")
    assert chunk == 7
    assert engine.last_plan.chunk == 7
    assert engine.last_plan.item_bytes == per_item
    assert engine.last_plan.n_items == 100
    assert engine.last_plan.budget == per_item * 7 + 3
    assert any("pairs: 100 items, 7 per pass" in r.getMessage() for r in caplog.records)
    assert engine.plan(100, module=net, example=x, grad=True, item_scale=2.0) == 3


def test_plan_warns_when_one_item_exceeds_budget(caplog):
    engine = Engine(max_memory=10)
    with caplog.at_level(logging.INFO, logger="xraylens.engine"):
        chunk = engine.plan(5, module=_net(), example=torch.rand(1, 1, 8, 8), grad=False)
    assert chunk == 1
    assert any(r.levelno == logging.WARNING for r in caplog.records)


def test_plan_fixed_chunk_skips_probe(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("probe must not run when the chunk is fixed")

    monkeypatch.setattr(engine_mod, "probe_item_bytes", fail)
    engine = Engine(chunk=5)
    assert engine.plan(12, module=_net(), example=torch.rand(1, 1, 8, 8), grad=True) == 5
    assert engine.last_plan.probe == "fixed"


def test_is_oom():
    assert is_oom(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert is_oom(RuntimeError("CUDA error: out of memory"))
    assert is_oom(RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried"))
    assert not is_oom(RuntimeError("shape mismatch"))
    assert not is_oom(ValueError("out of memory"))  # only runtime errors carry OOMs


class OOMAbove:
    """``fn(start, stop)`` that raises OutOfMemoryError for chunks larger than ``limit``."""

    def __init__(self, limit: int, from_item: int = 0):
        self.limit = limit
        self.from_item = from_item
        self.calls: list[tuple[int, int]] = []
        self.done: list[tuple[int, int]] = []

    def __call__(self, start: int, stop: int):
        self.calls.append((start, stop))
        if stop - start > self.limit and start >= self.from_item:
            raise torch.OutOfMemoryError(f"simulated: {stop - start} items")
        self.done.append((start, stop))
        return torch.arange(start, stop)


def test_map_chunks_backs_off_and_keeps_order(caplog):
    fn = OOMAbove(limit=3)
    with caplog.at_level(logging.WARNING, logger="xraylens.engine"):
        out = Engine().map_chunks(fn, 10, chunk=16, desc="test")
    assert torch.equal(torch.cat(out), torch.arange(10))
    assert fn.calls[:3] == [(0, 10), (0, 5), (0, 2)]  # 16 -> capped at 10, halved twice
    assert all(b - a <= 2 for a, b in fn.done)
    assert sum("out of memory" in r.getMessage() for r in caplog.records) == 2


def test_map_chunks_keeps_finished_chunks():
    fn = OOMAbove(limit=2, from_item=4)  # first chunk fits, later ones need smaller chunks
    out = Engine().map_chunks(fn, 11, chunk=4)
    assert torch.equal(torch.cat(out), torch.arange(11))
    assert fn.done[0] == (0, 4)
    assert fn.calls.count((0, 4)) == 1  # the finished chunk is not recomputed
    assert fn.done[1:] == [(4, 6), (6, 8), (8, 10), (10, 11)]


def test_map_chunks_raises_when_one_item_does_not_fit():
    with pytest.raises(torch.OutOfMemoryError):
        Engine().map_chunks(OOMAbove(limit=0), 3, chunk=2)


def test_map_chunks_propagates_other_errors():
    def fn(start, stop):
        raise ValueError("bad input")

    with pytest.raises(ValueError, match="bad input"):
        Engine().map_chunks(fn, 4, chunk=2)


def test_map_chunks_empty_and_exact():
    assert Engine().map_chunks(OOMAbove(limit=9), 0, chunk=4) == []
    fn = OOMAbove(limit=9)
    Engine(progress=True).map_chunks(fn, 9, chunk=3)
    assert fn.calls == [(0, 3), (3, 6), (6, 9)]


def test_autocast_and_channels_last():
    cpu = torch.device("cpu")
    lin = nn.Linear(4, 2)
    with Engine(amp="bf16").autocast(cpu):
        assert lin(torch.rand(3, 4)).dtype == torch.bfloat16
    with Engine().autocast(cpu):
        assert lin(torch.rand(3, 4)).dtype == torch.float32
    x = torch.rand(2, 3, 5, 5)
    y = Engine(channels_last=True).prepare_input(x)
    assert y.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(y, x)
    assert Engine().prepare_input(x) is x


def test_resolve_device():
    assert Engine().resolve_device(_net()) == torch.device("cpu")
    assert Engine().resolve_device(nn.ReLU()) == torch.device("cpu")
    assert Engine(device="cpu").resolve_device(_net()) == torch.device("cpu")


def test_peak_rss_helpers():
    rss = memory.current_rss()
    if rss is None or not memory.reset_peak_rss():
        pytest.skip("no /proc peak RSS on this system")
    assert memory.peak_rss() >= rss > 0
    before = memory.current_rss()
    # 64 MiB of fresh anonymous pages, written so they are resident (a tensor could reuse heap
    # memory the process already holds after earlier tests, and not grow the RSS)
    block = mmap.mmap(-1, 64 * 2**20)
    block.write(b"\x01" * len(block))
    assert memory.peak_rss() >= before + 60 * 2**20
    block.close()


def test_format_bytes():
    assert memory.format_bytes(4e9) == "4.00 GB"
    assert memory.format_bytes(1500) == "1.50 kB"
    assert memory.format_bytes(12) == "12 B"
    assert memory.format_bytes(None) == "n/a"


def test_gradient_methods_ignore_amp_with_a_warning_and_probe_in_full_precision(caplog):
    """amp applies to no-grad perturbation methods only: a gradient method warns once, probes
    and computes in full precision, and names the probe it used in its plan."""
    import xraylens as xl

    clf = xl.get_classifier("resnet18", num_classes=3, labels=("a", "b", "c"))
    x = torch.rand(2, 1, 32, 32)
    plain = xl.get_attributor("saliency").attribute(clf, x)
    att = xl.get_attributor("saliency", amp="bf16")
    with caplog.at_level(logging.WARNING, logger="xraylens.engine"):
        first = att.attribute(clf, x)
        att.attribute(clf, x)
    warnings = [r for r in caplog.records if "amp='bf16' is ignored" in r.getMessage()]
    assert len(warnings) == 1
    torch.testing.assert_close(first.values, plain.values)
    assert att.engine.last_plan.probe.startswith("cpu ")
    assert att.engine.last_plan.probe.endswith(", remembered")
    module = clf.forward_module()
    example = x[:1]
    assert att.engine.item_bytes(module, example, grad=True) == Engine().item_bytes(
        module, example, grad=True
    )
