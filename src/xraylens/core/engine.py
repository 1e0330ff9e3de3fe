"""The execution engine: device, memory budget and chunking shared by every attributor.

Work is expressed as ``n_items`` independent items (image-label pairs, IG steps, occlusion
perturbations, noise samples). The engine picks how many go through the model at once from a
memory budget and a per-item cost measured by a probe (:mod:`xraylens.core.memory`), logs its
choice on the ``xraylens.engine`` logger, and halves the chunk on out-of-memory, keeping the
chunks already finished.

Budget semantics: ``max_memory`` bounds the *working* memory of one chunk (activations,
gradients, perturbed inputs) on top of what is already allocated (the model, the inputs).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from collections.abc import Callable
from typing import Any

import attrs
import torch
from torch import nn

from xraylens.core.memory import activation_bytes, format_bytes, probe_item_bytes
from xraylens.core.memory import fixed_bytes as module_fixed_bytes
from xraylens.errors import InputError

__all__ = [
    "ChunkPlan",
    "Engine",
    "activation_bytes",
    "available_cpu_memory",
    "is_oom",
    "parse_memory",
]

log = logging.getLogger("xraylens.engine")

#: default of :attr:`Engine.cpu_chunk_bytes` (see there)
CPU_CHUNK_BYTES = 128 * 10**6

_UNITS = {
    "": 1, "B": 1,
    "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
    "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40,
    "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40,
}  # fmt: skip

_AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def parse_memory(value: int | float | str | None) -> int | float | None:
    """Bytes from ``"4GB"`` (10^9), ``"4GiB"``/``"4G"`` (2^30), ``"512MB"`` or an int.

    A float in (0, 1] is returned unchanged: a fraction of the device's free memory.
    """
    if value is None:
        return None
    if isinstance(value, bool):
        raise InputError(
            f"max_memory must be bytes, a size like '4GB' or a fraction, got {value!r}"
        )
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


def _chunk(value) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InputError(f"chunk must be a positive int or None, got {value!r}")
    return value


def is_oom(exc: BaseException) -> bool:
    """Whether ``exc`` is an out-of-memory error (CUDA or another accelerator, or a failed CPU
    allocation)."""
    oom = getattr(torch, "OutOfMemoryError", None) or getattr(torch.cuda, "OutOfMemoryError", ())
    if isinstance(exc, oom):
        return True
    message = str(exc).lower() if isinstance(exc, RuntimeError) else ""
    return "out of memory" in message or "can't allocate memory" in message


@attrs.frozen
class ChunkPlan:
    """What the engine chose for one piece of work (also logged).

    Attributes:
        what: the kind of item ("occlusion perturbations", "pairs", ...).
        n_items: items to process; chunk: items per pass (forward or forward+backward).
        item_bytes: estimated working memory of one item; budget: usable bytes per chunk.
        probe: how ``item_bytes`` was obtained (``"cuda peak"``, ``"cpu saved tensors ..."``,
            ``"cpu activations x 0.35"``, ``"fixed"``; ``", remembered"`` when reused).
        device: where the work runs.
    """

    what: str
    n_items: int
    chunk: int
    item_bytes: int
    budget: int
    probe: str
    device: torch.device


@attrs.define
class Engine:
    """Device, memory budget and chunking for attribution work.

    Attributes:
        device: where to compute; None: the classifier's device.
        max_memory: budget for one chunk's working memory: bytes, ``"4GB"``, or a float in
            (0, 1] = that fraction of the device's free memory; None: half of the free memory.
        amp: autocast dtype for perturbation methods (``"bf16"``/``"fp16"``), or None. Meant for
            CUDA; on CPU only bf16 is useful (and only on CPUs with bf16 instructions).
        channels_last: feed convolutions channels-last inputs (the model is left as it is).
        progress: show tqdm progress bars over chunks.
        chunk: fixed items per pass, overriding the planner (tests, benchmarks); None: plan.
        cpu_chunk_bytes: on the CPU, also keep a chunk's estimated working memory under this
            (bytes or a size like ``"128MB"``; None: no cap). Bigger batches are slower per item
            on a CPU once their activations outgrow the caches (measured: DenseNet161 at 512 px
            runs 542 ms per image in batches of 1 and 870 ms in batches of 8; ResNet18 at
            224 px is fastest in batches of 8-16), so the budget alone would pick slow chunks.
        last_plan: the most recent :class:`ChunkPlan` (None before any planning).
    """

    device: torch.device | None = attrs.field(default=None, converter=_device)
    max_memory: int | float | None = attrs.field(default=None, converter=parse_memory)
    amp: str | None = attrs.field(default=None)
    channels_last: bool = False
    progress: bool = False
    chunk: int | None = attrs.field(default=None, converter=_chunk, kw_only=True)
    cpu_chunk_bytes: int | None = attrs.field(
        default=CPU_CHUNK_BYTES, converter=parse_memory, kw_only=True
    )
    last_plan: ChunkPlan | None = attrs.field(default=None, init=False, repr=False)

    @amp.validator
    def _check_amp(self, _attribute, value) -> None:
        if value not in (None, *_AMP_DTYPES):
            raise InputError(f"amp must be None, 'bf16' or 'fp16', got {value!r}")

    def resolve_device(self, module: nn.Module) -> torch.device:
        """The engine's device, or the module's when none was given."""
        if self.device is not None:
            return self.device
        first = next(iter(module.parameters()), None)
        if first is None:
            first = next(iter(module.buffers()), None)
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

    def chunk_size(
        self, n_items: int, bytes_per_item: int, device: torch.device, fixed_bytes: int = 0
    ) -> int:
        """How many items fit in the budget at once (at least 1, at most ``n_items``; on the CPU
        at most ``cpu_chunk_bytes`` worth); ``self.chunk`` when set."""
        if self.chunk is not None:
            return max(1, min(n_items, self.chunk))
        budget = self.budget_bytes(device) - fixed_bytes
        if bytes_per_item <= 0:
            return max(1, n_items)
        if device.type == "cpu" and self.cpu_chunk_bytes is not None:
            budget = min(budget, max(self.cpu_chunk_bytes, bytes_per_item))
        return int(max(1, min(n_items, budget // bytes_per_item)))

    def probe(self, module: nn.Module, example: torch.Tensor, *, grad: bool) -> tuple[int, str]:
        """Working memory of one item and how it was measured (e.g. ``"cuda peak"``);
        ``example`` is one input [1, ...]. Gradient work always runs in full precision (``amp``
        applies to no-grad perturbation methods only), so only no-grad probes autocast."""
        amp = contextlib.nullcontext() if grad else self.autocast(example.device)
        with amp:
            return probe_item_bytes(module, self.prepare_input(example), grad=grad)

    def item_bytes(self, module: nn.Module, example: torch.Tensor, *, grad: bool) -> int:
        """Probe the working memory of one item; ``example`` is one input [1, ...]."""
        return self.probe(module, example, grad=grad)[0]

    def plan(
        self,
        n_items: int,
        *,
        module: nn.Module,
        example: torch.Tensor,
        grad: bool,
        what: str = "items",
        fixed_bytes: int = 0,
        item_scale: float = 1.0,
        extra_item_bytes: int = 0,
        probed: tuple[int, str] | None = None,
    ) -> int:
        """Items per pass for ``n_items`` items, from a probe of one item, within the budget.

        Args:
            module: the module each item goes through; example: one item's input [1, ...] on
                the device the work runs on.
            grad: whether each item needs a backward pass (gradient methods) or only a
                no-grad forward (perturbation methods).
            what: the kind of item, for the log line.
            fixed_bytes: memory needed once per chunk besides the items (on CPU one copy of
                the module's parameters is added to it).
            item_scale: items that need more than one input's memory (e.g. 2 for a pair
                that holds an input and a baseline) scale the probe by this.
            extra_item_bytes: memory each item needs besides its pass through ``module``
                (e.g. its output maps), added after scaling.
            probed: ``(bytes, how)`` of a probe already made of ``module`` on ``example``
                (callers that remember probes); None: probe now.
        Logs the choice on ``xraylens.engine`` and stores it in :attr:`last_plan`.
        """
        device = example.device
        if self.chunk is not None:
            per_item, how = 0, "fixed"
        else:
            per_item, how = probed or self.probe(module, example, grad=grad)
            per_item = int(per_item * item_scale) + extra_item_bytes
            fixed_bytes += module_fixed_bytes(module, device)
        chunk = self.chunk_size(n_items, per_item, device, fixed_bytes)
        budget = self.budget_bytes(device) - fixed_bytes
        self.last_plan = ChunkPlan(what, n_items, chunk, per_item, budget, how, device)
        log.info(
            "%s: %d items, %d per pass on %s (about %s each by %s; budget %s)",
            what, n_items, chunk, device, format_bytes(per_item), how, format_bytes(budget),
        )  # fmt: skip
        if per_item > budget and self.chunk is None:
            log.warning(
                "%s: one item needs about %s, more than the budget of %s; running one at a time",
                what, format_bytes(per_item), format_bytes(budget),
            )  # fmt: skip
        return chunk

    def autocast(self, device: torch.device) -> contextlib.AbstractContextManager:
        """Autocast to the ``amp`` dtype on ``device`` (a no-op context when ``amp`` is None)."""
        if self.amp is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=device.type, dtype=_AMP_DTYPES[self.amp])

    def prepare_input(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` in channels-last memory format when enabled (4-d tensors only); convolutions
        then run channels-last without converting (and so touching) the caller's model."""
        if self.channels_last and x.dim() == 4:
            return x.contiguous(memory_format=torch.channels_last)
        return x

    def map_chunks(
        self,
        fn: Callable[[int, int], Any],
        n_items: int,
        *,
        chunk: int,
        desc: str | None = None,
    ) -> list[Any]:
        """Call ``fn(start, stop)`` over ``range(n_items)`` in chunks of at most ``chunk``.

        On an out-of-memory error the chunk is halved and retried (down to 1 item; then the
        error is raised); finished chunks are kept. Returns the ``fn`` results in order.
        """
        from tqdm.auto import tqdm

        if n_items <= 0:
            return []
        chunk = max(1, min(int(chunk), n_items))
        results: list[Any] = []
        start = 0
        bar = tqdm(
            total=n_items, desc=desc, disable=not self.progress or n_items <= chunk, leave=False
        )
        try:
            while start < n_items:
                stop = min(start + chunk, n_items)
                failed = False
                try:
                    results.append(fn(start, stop))
                except Exception as exc:
                    if not is_oom(exc) or chunk == 1:
                        raise
                    failed = True
                if failed:
                    # Outside the except block: the traceback (and the tensors its frames hold)
                    # is gone, so the cache can really be emptied before the retry.
                    chunk = max(1, chunk // 2)
                    log.warning(
                        "%s: out of memory at items %d-%d; retrying with %d per pass",
                        desc or "work", start, stop, chunk,
                    )  # fmt: skip
                    if torch.cuda.is_available():
                        torch.cuda.empty_cache()
                    continue
                bar.update(stop - start)
                start = stop
        finally:
            bar.close()
        return results
