"""Sharding a list of work over the ranks of a ``torchrun`` job (gloo on CPU, NCCL on CUDA).

``torchrun --nproc_per_node N`` sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``
and ``MASTER_PORT``; :func:`join` joins the process group through ``env://`` when they say
more than one process, and is a no-op otherwise. The work is split in whole *blocks* (one batch
each), so every batch holds the same images as in a one-process run and the outputs are
identical.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, TypeVar

import attrs
import torch.distributed as dist

T = TypeVar("T")


@attrs.define
class Shard:
    """This process's place: ``rank`` of ``world``; ``owned`` whether :func:`join` started the
    process group (and so :meth:`close` ends it)."""

    rank: int = 0
    world: int = 1
    owned: bool = False
    backend: str | None = None

    @property
    def active(self) -> bool:
        return self.world > 1 and dist.is_available() and dist.is_initialized()

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def blocks(self, items: Sequence[T], block: int) -> list[list[T]]:
        """This rank's blocks of ``block`` consecutive items (blocks rank, rank + world, ...)."""
        chunks = [list(items[i : i + block]) for i in range(0, len(items), block)]
        return chunks[self.rank :: self.world]

    def barrier(self) -> None:
        if self.active:
            dist.barrier()

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj`` in rank order (on every rank); ``[obj]`` in one process."""
        if not self.active:
            return [obj]
        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def close(self) -> None:
        if self.owned and dist.is_initialized():
            dist.destroy_process_group()
            self.owned = False


def join(device: str | None = None) -> Shard:
    """The current process group's :class:`Shard`, joining one from the ``torchrun``
    environment when needed (NCCL for a CUDA ``device``, else gloo); one process otherwise."""
    if dist.is_available() and dist.is_initialized():
        return Shard(dist.get_rank(), dist.get_world_size(), False, dist.get_backend())
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 or not dist.is_available():
        return Shard()
    backend = "nccl" if device and str(device).startswith("cuda") else "gloo"
    dist.init_process_group(backend=backend, init_method="env://")
    return Shard(dist.get_rank(), dist.get_world_size(), True, backend)


def local_device(device: str | None) -> str | None:
    """Under ``torchrun``, ``cuda`` means this process's GPU (``cuda:LOCAL_RANK``)."""
    if device == "cuda" and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    return device


__all__ = ["Shard", "join", "local_device"]
