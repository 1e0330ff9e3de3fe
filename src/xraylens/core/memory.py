"""Memory probes: what one item of attribution work costs, and peak memory measurement.

The engine sizes chunks from a probe of one item (one input of batch size 1):

- CUDA: the peak of ``torch.cuda.max_memory_allocated`` around a real 1-item forward (and
  backward for gradient work), above what was allocated before. Exact for this model and input
  size, conservative (it includes the fixed overhead, e.g. cuDNN workspaces).
- CPU: the bytes of every leaf module's output for one forward (forward hooks), times a factor
  calibrated against peak RSS (``benchmarks/calibrate_cpu_probe.py``, measured on the five
  backbones at 512 px: see the table there). Backward keeps roughly every activation alive;
  a no-grad forward frees them as it goes, so its factor is much smaller. A fixed overhead of
  one copy of the parameters per chunk (oneDNN weight reorders) is added on CPU.

Peak RSS helpers (``reset_peak_rss``, ``peak_rss``) read ``/proc/self/status`` (Linux).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from xraylens.core.classifier import eval_mode

#: peak working memory / leaf-output bytes, worst case over the five backbones at 512 px on CPU
#: (benchmarks/results/calibrate_cpu_probe.json), rounded up. Backward (input gradients) and a
#: no-grad forward (inference_mode).
CPU_FACTOR_GRAD = 1.6
CPU_FACTOR_NO_GRAD = 0.35


def tensor_bytes(t: torch.Tensor) -> int:
    """Bytes of ``t``'s elements."""
    return t.numel() * t.element_size()


def activation_bytes(module: nn.Module, example: torch.Tensor, *, fake: bool = True) -> int:
    """Bytes of every leaf module's output for one no-grad forward pass of ``example``.

    With ``fake`` (default) the forward runs on fake tensors (shapes only, no arithmetic, no
    memory), falling back to a real forward where the model does something fake tensors
    cannot. The module runs in eval mode; its own flags are restored.
    """
    if fake:
        try:
            from torch._subclasses.fake_tensor import FakeTensorMode

            with FakeTensorMode(allow_non_fake_inputs=True) as mode:
                return _leaf_output_bytes(module, mode.from_tensor(example))
        except Exception:  # an op without a fake kernel: measure on real tensors instead
            pass
    return _leaf_output_bytes(module, example)


def _leaf_output_bytes(module: nn.Module, example: torch.Tensor) -> int:
    total = 0

    def hook(_m, _inp, out):
        nonlocal total
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                total += tensor_bytes(t)

    leaves = [m for m in module.modules() if not list(m.children())]
    handles = [m.register_forward_hook(hook) for m in leaves]
    try:
        with eval_mode(module), torch.inference_mode():
            module(example)
    finally:
        for h in handles:
            h.remove()
    return total


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
    factor = CPU_FACTOR_GRAD if grad else CPU_FACTOR_NO_GRAD
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
