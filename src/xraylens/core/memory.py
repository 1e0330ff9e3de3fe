"""Memory probes: what one item of attribution work costs, and peak memory measurement.

The engine sizes chunks from a probe of one item (one input of batch size 1):

- CUDA: the peak of ``torch.cuda.max_memory_allocated`` around a real 1-item forward (and
  backward for gradient work), above what was allocated before. Exact for this model and input
  size, conservative (it includes the fixed overhead, e.g. cuDNN workspaces).
- CPU, gradient work: the bytes autograd saves for the backward pass of one item (saved-tensor
  hooks on one forward of one item, parameters and buffers left out since they do not grow
  with the batch; on fake tensors, shapes only, no arithmetic, except for small images, whose
  real forward is cheaper), plus the transient gradient buffers of the backward pass
  (``GRAD_TRANSIENTS`` x the largest activation), times a safety margin.
- CPU, no-grad work: the bytes of every leaf module's output (forward hooks on a real 1-item
  forward) times a factor; a no-grad forward frees activations as it goes, so it is small.
- CPU, fixed: one copy of the parameters per chunk (oneDNN reorders weights).

The constants are calibrated against peak RSS by ``benchmarks/calibrate_cpu_probe.py`` on the
five backbones at 512 px (results in ``benchmarks/results/calibrate_cpu_probe.json``).
Peak RSS helpers (``reset_peak_rss``, ``peak_rss``) read ``/proc/self/status`` (Linux).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from xraylens.core.classifier import eval_mode

#: CPU backward: per-item memory = (saved bytes + GRAD_TRANSIENTS x largest activation) x margin
GRAD_TRANSIENTS = 3
CPU_MARGIN_GRAD = 1.15
#: CPU backward fallback where fake tensors fail: leaf-output bytes x this factor
CPU_FACTOR_GRAD = 1.6
#: CPU no-grad forward (inference_mode): leaf-output bytes x this factor
CPU_FACTOR_NO_GRAD = 0.35
#: CPU backward probe: inputs of at most this many elements are probed on real tensors
REAL_PROBE_MAX_ELEMENTS = 3 * 128 * 128


def tensor_bytes(t: torch.Tensor) -> int:
    """Bytes of ``t``'s elements."""
    return t.numel() * t.element_size()


def _on_fake(fn: Callable[[torch.Tensor], object], example: torch.Tensor, fake: bool):
    """``fn(example)`` on a fake copy of ``example`` (no arithmetic, no memory); on real
    tensors where the model does something fake tensors cannot, or when ``fake`` is False."""
    if fake:
        try:
            from torch._subclasses.fake_tensor import FakeTensorMode

            with FakeTensorMode(allow_non_fake_inputs=True) as mode:
                return fn(mode.from_tensor(example))
        except Exception:  # an op without a fake kernel, data-dependent control flow, ...
            pass
    return fn(example)


def activation_bytes(module: nn.Module, example: torch.Tensor, *, fake: bool = False) -> int:
    """Bytes of every leaf module's output for one no-grad forward pass of ``example``.

    With ``fake`` the forward runs on fake tensors (no arithmetic; the first use in a process
    costs seconds of set-up), falling back to a real forward where it cannot. The module runs
    in eval mode; its own flags are restored.
    """
    return _on_fake(lambda ex: _leaf_outputs(module, ex)[0], example, fake)


def _leaf_outputs(module: nn.Module, example: torch.Tensor) -> tuple[int, int]:
    total, largest = 0, 0

    def hook(_m, _inp, out):
        nonlocal total, largest
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                total += tensor_bytes(t)
                largest = max(largest, tensor_bytes(t))

    leaves = [m for m in module.modules() if not list(m.children())]
    handles = [m.register_forward_hook(hook) for m in leaves]
    try:
        with eval_mode(module), torch.inference_mode():
            module(example)
    finally:
        for h in handles:
            h.remove()
    return total, largest


def saved_bytes(module: nn.Module, example: torch.Tensor) -> int:
    """Bytes of the distinct tensors autograd saves for backward in a forward of ``example``
    (saved-tensor hooks; run it on fake tensors to spend no memory). Weights saved by
    layers count too: take the difference between two batch sizes for a per-item figure."""
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        seen.setdefault(storage._cdata, storage.nbytes())
        return t

    hooks = torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t)
    with eval_mode(module), torch.enable_grad(), hooks:
        module(example.detach().clone().requires_grad_(True))
    return sum(seen.values())


def _saved_and_largest(module: nn.Module, example: torch.Tensor, skip: set[int]) -> tuple[int, int]:
    """Bytes autograd saves in one forward of ``example`` (storages in ``skip`` left out) and
    the largest leaf module output, from the same forward."""
    seen: dict[int, int] = {}
    largest = 0

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage._cdata not in skip:
            seen.setdefault(storage._cdata, storage.nbytes())
        return t

    def leaf(_m, _inp, out):
        nonlocal largest
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                largest = max(largest, tensor_bytes(t))

    leaves = [m for m in module.modules() if not list(m.children())]
    handles = [m.register_forward_hook(leaf) for m in leaves]
    hooks = torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t)
    try:
        with eval_mode(module), torch.enable_grad(), hooks:
            module(example.detach().clone().requires_grad_(True))
    finally:
        for h in handles:
            h.remove()
    return sum(seen.values()), largest


def cpu_grad_item_bytes(module: nn.Module, example: torch.Tensor) -> tuple[int, str]:
    """Backward working memory of one item on the CPU, and how it was estimated."""
    # parameters and buffers (saved as the real tensors) do not grow with the batch: leaving
    # them out makes one forward enough (the slope between two batch sizes took two)
    weights = {t.untyped_storage()._cdata for t in (*module.parameters(), *module.buffers())}
    try:
        if example.dim() == 4 and example[:1].numel() <= REAL_PROBE_MAX_ELEMENTS:
            # a small image: a real forward is cheaper than a fake one (~1 ms per op) and
            # holds no more than the item itself will
            per_item_saved, largest = _saved_and_largest(module, example[:1], weights)
        else:
            from torch._subclasses.fake_tensor import FakeTensorMode

            with FakeTensorMode(allow_non_fake_inputs=True) as mode:
                one = mode.from_tensor(example[:1])
                per_item_saved, largest = _saved_and_largest(module, one, weights)
    except Exception:  # fake tensors cannot run this model: leaf outputs x calibrated factor
        acts = activation_bytes(module, example, fake=False)
        return int(acts * CPU_FACTOR_GRAD), f"cpu activations x {CPU_FACTOR_GRAD}"
    per_item = int((per_item_saved + GRAD_TRANSIENTS * largest) * CPU_MARGIN_GRAD)
    return per_item, f"cpu saved tensors x {CPU_MARGIN_GRAD}"


def _scalar_output(out) -> torch.Tensor:
    if isinstance(out, (tuple, list)):
        out = out[0]
    return out.float().sum()


def run_item(module: nn.Module, example: torch.Tensor, *, grad: bool) -> None:
    """One forward of ``example`` (and a backward to the input when ``grad``), as a probe."""
    with eval_mode(module):
        _run_item(module, example, grad=grad)


def _run_item(module: nn.Module, example: torch.Tensor, *, grad: bool) -> None:
    if grad:
        with torch.enable_grad():
            xi = example.detach().clone().requires_grad_(True)
            torch.autograd.grad(_scalar_output(module(xi)), xi)
    else:
        with torch.inference_mode():
            module(example)


def cuda_peak_bytes(fn: Callable[[], object], device: torch.device) -> int:
    """Peak CUDA memory ``fn()`` allocates above what was allocated before (resets the
    device's peak statistics)."""
    torch.cuda.synchronize(device)
    before = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    fn()
    torch.cuda.synchronize(device)
    return max(0, torch.cuda.max_memory_allocated(device) - before)


def probe_item_bytes(module: nn.Module, example: torch.Tensor, *, grad: bool) -> tuple[int, str]:
    """Working memory of one item: ``example`` is one input [1, ...] on the module's device.

    Returns ``(bytes, how)`` where ``how`` names the probe (``"cuda peak"`` or
    ``"cpu activations x factor"``). The item's own input copies are included.
    """
    inputs = tensor_bytes(example) * (3 if grad else 2)  # the item's input, its copy, its grad
    if example.device.type == "cuda":
        peak = cuda_peak_bytes(lambda: run_item(module, example, grad=grad), example.device)
        return peak + inputs, "cuda peak"
    if grad:
        per_item, how = cpu_grad_item_bytes(module, example)
        return per_item + inputs, how
    factor = CPU_FACTOR_NO_GRAD
    return int(activation_bytes(module, example) * factor) + inputs, f"cpu activations x {factor}"


def fixed_bytes(module: nn.Module, device: torch.device) -> int:
    """Memory a chunk needs once, besides its items: on CPU one copy of the parameters (oneDNN
    reorders weights into its own layouts); on CUDA 0 (the peak probe already includes it)."""
    if device.type == "cuda":
        return 0
    return sum(tensor_bytes(p) for p in module.parameters())


def _status_kb(key: str) -> int | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def current_rss() -> int | None:
    """Resident set size of this process in bytes (None where /proc is absent)."""
    return _status_kb("VmRSS")


def peak_rss() -> int | None:
    """Peak resident set size of this process in bytes since start or the last reset."""
    return _status_kb("VmHWM")


def reset_peak_rss() -> bool:
    """Reset the peak RSS to the current RSS (Linux ``clear_refs``); False where unsupported."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        return False
    return True


def format_bytes(n: float | None) -> str:
    """``1.5 GB``-style text (powers of 1000), for logs and tables."""
    if n is None:
        return "n/a"
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{int(n)} B"
