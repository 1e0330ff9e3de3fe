"""torch.distributed, the plain way: ``torchrun`` sets the environment, we read it.

``torchrun --nproc_per_node=N -m examples.covid_cxr <step> ...`` starts N processes with
``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` set;
:func:`setup` joins the process group through ``env://`` (NCCL on CUDA, gloo on CPU). Without
those variables (a plain ``python -m``) everything runs in one process and every collective below
is a no-op, so the steps never branch on "distributed or not" beyond :attr:`Dist.is_main`.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Sequence
from typing import Any, TypeVar

import attrs
import torch
import torch.distributed as dist

from xraylens.errors import InputError
from xraylens.pipeline.shard import Shard

T = TypeVar("T")


@attrs.define
class Dist(Shard):
    """This process's place in the job (:class:`xraylens.pipeline.Shard`: ``rank`` of
    ``world``, ``active``, ``is_main``, ``gather``), its ``local_rank`` and ``device``."""

    local_rank: int = 0
    device: torch.device = attrs.field(factory=lambda: torch.device("cpu"))

    def barrier(self) -> None:
        if self.active and self.backend == "nccl":  # NCCL: on this process's GPU
            dist.barrier(device_ids=[self.local_rank])
        else:
            super().barrier()

    def shard(self, items: Sequence[T]) -> list[T]:
        """This rank's share of ``items``: every ``world``-th item from ``rank`` (disjoint)."""
        return list(items[self.rank :: self.world])

    def gather_objects(self, obj: Any) -> list[Any]:
        """Every rank's ``obj``, in rank order, on every rank (:meth:`Shard.gather`)."""
        return self.gather(obj)

    def broadcast_object(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank."""
        if not self.active:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def all_sum(self, values: Sequence[float]) -> list[float]:
        """Element-wise float64 sum of ``values`` over ranks."""
        t = torch.tensor(list(values), dtype=torch.float64, device=self.comm_device)
        if self.active:
            dist.all_reduce(t)
        return t.cpu().tolist()

    @property
    def comm_device(self) -> torch.device:
        """Where tensors for collectives live (NCCL needs CUDA tensors)."""
        return self.device if self.backend == "nccl" else torch.device("cpu")


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise InputError(f"environment variable {name}={value!r} is not an integer") from None


def choose_device(requested: str | None, local_rank: int) -> torch.device:
    """``requested`` ("cpu", "cuda", "cuda:1") or, when None/"auto", CUDA when available."""
    if requested in (None, "auto"):
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(requested)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(f"device {requested!r} asked for, but CUDA is not available")
        if device.index is None:
            device = torch.device("cuda", local_rank % torch.cuda.device_count())
        torch.cuda.set_device(device)
    return device


def setup(device: str | None = None, timeout_s: float = 1800.0) -> Dist:
    """Join the ``torchrun`` process group when there is one (``env://``), pick the device."""
    world = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", 0)
    dev = choose_device(device, local_rank)
    if world <= 1:
        return Dist(device=dev)
    backend = "nccl" if dev.type == "cuda" else "gloo"
    owned = not dist.is_initialized()
    if owned:
        dist.init_process_group(
            backend=backend,
            init_method="env://",
            world_size=world,
            rank=rank,
            timeout=datetime.timedelta(seconds=timeout_s),
        )
    return Dist(rank, world, owned=owned, backend=backend, local_rank=local_rank, device=dev)


def teardown(d: Dist) -> None:
    """Leave the process group (after a final barrier, so no rank exits while others talk)."""
    if d.active:
        d.barrier()
        dist.destroy_process_group()
