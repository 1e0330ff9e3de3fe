"""The execution engine: device, memory budget and chunking shared by every attributor.

Work is expressed as ``n_items`` independent items (image-label pairs, IG steps, occlusion
perturbations, noise samples). The engine picks how many go through the model at once from a
memory budget and a per-item cost, and halves the chunk on CUDA out-of-memory, keeping the
chunks already finished.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable
from typing import Any

import attrs
import torch
from torch import nn

from xraylens.errors import InputError

log = logging.getLogger("xraylens.engine")

_UNITS = {
    "": 1, "B": 1,
    "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
    "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40,
    "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40,
}


def parse_memory(value: int | float | str | None) -> int | float | None:
    """Bytes from ``"4GB"`` (10^9), ``"4GiB"``/``"4G"`` (2^30), ``"512MB"`` or an int.

    A float in (0, 1] is returned unchanged: a fraction of the device's free memory.
    """
    if value is None:
        return None
    if isinstance(value, bool):
        raise InputError(f"max_memory must be bytes, a size like '4GB' or a fraction, got {value!r}")
    if isinstance(value, float) and 0 < value <= 1:
        return value
    if isinstance(value, (int, float)):
        if value <= 0:
            raise InputError(f"max_memory must be positive, got {value!r}")
        return int(value)
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([A-Za-z]*)\s*", str(value))
    if not match or match.group(2).upper() not in _UNITS:
        raise InputError(
            f"max_memory {value!r} is not a size; use e.g. '4GB', '512MiB' or a fraction like 0.5"
        )
    number = float(match.group(1))
    if number <= 0:
        raise InputError(f"max_memory must be positive, got {value!r}")
    return int(number * _UNITS[match.group(2).upper()])


def available_cpu_memory() -> int:
    """Bytes of RAM available to new allocations (``MemAvailable``), or total RAM as a fallback."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def _device(value) -> torch.device | None:
    if value is None or isinstance(value, torch.device):
        return value
    try:
        return torch.device(value)
    except (RuntimeError, TypeError) as exc:
        raise InputError(f"device {value!r} is not a torch device ({exc})") from exc


def is_oom(exc: BaseException) -> bool:
    """Whether ``exc`` is a CUDA (or other accelerator) out-of-memory error."""
    oom = getattr(torch, "OutOfMemoryError", None) or getattr(torch.cuda, "OutOfMemoryError", ())
    return isinstance(exc, oom) or (
        isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()
    )


@attrs.define
class Engine:
    """Device, memory budget and chunking for attribution work.

    Attributes:
        device: where to compute; None: the classifier's device.
        max_memory: budget for one chunk's working memory: bytes, ``"4GB"``, or a float in
            (0, 1] = that fraction of the device's free memory; None: half of the free memory.
        amp: autocast dtype for perturbation methods on CUDA (``"bf16"``/``"fp16"``), or None.
        channels_last: run convolutions in channels-last memory format.
        progress: show tqdm progress bars over chunks.
    """

    device: torch.device | None = attrs.field(default=None, converter=_device)
    max_memory: int | float | None = attrs.field(default=None, converter=parse_memory)
    amp: str | None = attrs.field(default=None)
    channels_last: bool = False
    progress: bool = False

    @amp.validator
    def _check_amp(self, _attribute, value) -> None:
        if value not in (None, "bf16", "fp16"):
            raise InputError(f"amp must be None, 'bf16' or 'fp16', got {value!r}")

    def resolve_device(self, module: nn.Module) -> torch.device:
        """The engine's device, or the module's when none was given."""
        if self.device is not None:
            return self.device
        first = next(iter(module.parameters()), None)
        return first.device if first is not None else torch.device("cpu")

    def budget_bytes(self, device: torch.device) -> int:
        """The memory budget in bytes on ``device``."""
        if device.type == "cuda":
            free = torch.cuda.mem_get_info(device)[0]
        else:
            free = available_cpu_memory()
        if self.max_memory is None:
            return int(free * 0.5)
        if isinstance(self.max_memory, float):
            return int(free * self.max_memory)
        return int(self.max_memory)

    def chunk_size(self, n_items: int, bytes_per_item: int, device: torch.device,
                   fixed_bytes: int = 0) -> int:
        """How many items fit in the budget at once (at least 1, at most ``n_items``)."""
        budget = self.budget_bytes(device) - fixed_bytes
        if bytes_per_item <= 0:
            return max(1, n_items)
        return int(max(1, min(n_items, budget // bytes_per_item)))

    def map_chunks(
        self,
        fn: Callable[[int, int], Any],
        n_items: int,
        *,
        chunk: int,
        desc: str | None = None,
    ) -> list[Any]:
        """Call ``fn(start, stop)`` over ``range(n_items)`` in chunks of at most ``chunk``.

        On an out-of-memory error the chunk is halved and retried; finished chunks are kept.
        Returns the list of ``fn`` results in order.
        """
        from tqdm.auto import tqdm

        chunk = max(1, min(int(chunk), n_items))
        results: list[Any] = []
        start = 0
        bar = tqdm(total=n_items, desc=desc, disable=not self.progress or n_items <= chunk,
                   leave=False)
        try:
            while start < n_items:
                stop = min(start + chunk, n_items)
                try:
                    results.append(fn(start, stop))
                except Exception as exc:
                    if not is_oom(exc) or chunk == 1:
                        raise
                    chunk = max(1, chunk // 2)
                    log.warning("out of memory; retrying with chunks of %d items", chunk)
                    if torch.cuda.is_available():
                        torch.cuda.empty_cache()
                    continue
                bar.update(stop - start)
                start = stop
        finally:
            bar.close()
        return results


def activation_bytes(module: nn.Module, example: torch.Tensor) -> int:
    """Bytes of every leaf module's output for one forward pass of ``example`` (a CPU probe of
    the memory a forward needs; backward roughly doubles to triples it)."""
    total = 0

    def hook(_m, _inp, out):
        nonlocal total
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                total += t.numel() * t.element_size()

    handles = [m.register_forward_hook(hook) for m in module.modules() if not list(m.children())]
    try:
        with torch.no_grad():
            module(example)
    finally:
        for h in handles:
            h.remove()
    return total
