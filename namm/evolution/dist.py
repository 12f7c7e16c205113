"""The process group under ``torchrun``, if any: split work by rank, all-gather results. No gradients, no
DDP: evolution only needs every rank to tell CMA-ES the same fitness values."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch

__all__ = ["Dist"]


@dataclass
class Dist:
    """The process group, if any: split work by rank, all-gather results. No gradients, no DDP."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    owns_group: bool = False

    @classmethod
    def from_env(cls, device_spec: str) -> "Dist":
        """Join the ``torchrun`` process group (gloo on CPU, nccl on GPU) when WORLD_SIZE > 1."""
        import torch.distributed as td

        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls()
        local = int(os.environ.get("LOCAL_RANK", "0"))
        owns = False
        if not td.is_initialized():
            use_cuda = device_spec != "cpu" and torch.cuda.is_available()
            if use_cuda:
                torch.cuda.set_device(local)
            td.init_process_group(backend="nccl" if use_cuda else "gloo")
            owns = True
        return cls(rank=td.get_rank(), world=td.get_world_size(), local_rank=local, owns_group=owns)

    @property
    def main(self) -> bool:
        return self.rank == 0

    def share(self, n: int) -> range:
        """This rank's contiguous block of ``range(n)``."""
        base, extra = divmod(n, self.world)
        start = self.rank * base + min(self.rank, extra)
        return range(start, start + base + (self.rank < extra))

    def map(self, items: Sequence[Any], fn: Callable[[list[Any]], list[Any]]) -> list[Any]:
        """``fn`` over this rank's share of ``items`` (one call), results all-gathered in item order."""
        idx = self.share(len(items))
        mine = fn([items[i] for i in idx]) if len(idx) else []
        if self.world == 1:
            return list(mine)
        import torch.distributed as td

        parts: list[Any] = [None] * self.world
        td.all_gather_object(parts, list(zip(idx, mine)))
        out: list[Any] = [None] * len(items)
        for part in parts:
            for i, r in part:
                out[i] = r
        return out

    def barrier(self) -> None:
        if self.world > 1:
            import torch.distributed as td

            td.barrier()

    def close(self) -> None:
        if self.owns_group:
            import torch.distributed as td

            td.destroy_process_group()
            self.owns_group = False
