"""Rank and world size of a ``torchrun`` launch, and the few collectives the sharded evaluation needs.

Read once from the environment by the CLI (``DistContext.from_env()``) and passed down, so library code
never reads globals. A single process (no ``WORLD_SIZE``) needs no process group at all.
"""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class DistContext:
    """``rank`` of ``world_size`` processes; ``local_rank`` picks the GPU on a node."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @classmethod
    def from_env(cls) -> DistContext:
        """From torchrun's ``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK`` (a single process when unset)."""
        return cls(int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1")),
                   int(os.environ.get("LOCAL_RANK", "0")))

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def init(self, backend: str | None = None) -> None:
        """Join the process group (gloo on CPU, nccl with CUDA) when there is more than one process."""
        import torch
        import torch.distributed as dist

        if self.distributed and not dist.is_initialized():
            if backend is None:
                backend = "nccl" if torch.cuda.is_available() else "gloo"
            dist.init_process_group(backend=backend, rank=self.rank, world_size=self.world_size)

    def barrier(self) -> None:
        if self.distributed:
            import torch.distributed as dist

            dist.barrier()

    def close(self) -> None:
        if self.distributed:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()

    def shard(self, n: int) -> range:
        """This rank's contiguous slice of ``n`` items: the first ``n % world_size`` ranks get one more
        (the reference's ``InferenceSampler``), so concatenating the ranks' slices restores the order."""
        size, extra = divmod(n, self.world_size)
        start = self.rank * size + min(self.rank, extra)
        return range(start, start + size + (self.rank < extra))


__all__ = ["DistContext"]
