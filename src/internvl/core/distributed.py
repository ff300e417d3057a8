"""Rank and world size of a ``torchrun`` launch, and the few collectives the sharded evaluation needs.

Read once from the environment by the CLI (``DistContext.from_env()``) and passed down, so library code
never reads globals. A single process (no ``WORLD_SIZE``) needs no process group at all. Under slurm's
``srun`` (no torchrun), ``SLURM_PROCID`` / ``SLURM_NTASKS`` / ``SLURM_LOCALID`` are read instead, and
`export_torch_env` sets the torch variables from them, as the reference's ``init_dist`` does.
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
    def from_env(cls, environ: dict[str, str] | None = None) -> DistContext:
        """From torchrun's ``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK``, else slurm's; a single process when unset."""
        env = os.environ if environ is None else environ
        if "WORLD_SIZE" not in env and "SLURM_PROCID" in env and "SLURM_NTASKS" in env:
            return cls(int(env["SLURM_PROCID"]), int(env["SLURM_NTASKS"]), int(env.get("SLURM_LOCALID", "0")))
        return cls(int(env.get("RANK", "0")), int(env.get("WORLD_SIZE", "1")), int(env.get("LOCAL_RANK", "0")))

    def export_torch_env(self, environ: dict[str, str] | None = None, master_port: int | None = None) -> list[str]:
        """Set RANK/WORLD_SIZE/LOCAL_RANK and MASTER_ADDR/PORT defaults (slurm launches, single processes):
        what ``torch.distributed`` and DeepSpeed read. Values already set (torchrun's) are kept.

        The port defaults to 29500 for a multi-process launch (every rank must agree on it) and to a free
        port for a single process, so two single-process runs on one machine (a demo beside a test, two
        notebooks) do not collide on 29500.

        Returns the names it added, so an in-process caller can remove them afterwards."""
        env = os.environ if environ is None else environ
        before = set(env)
        env.setdefault("RANK", str(self.rank))
        env.setdefault("WORLD_SIZE", str(self.world_size))
        env.setdefault("LOCAL_RANK", str(self.local_rank))
        if "SLURM_JOB_NODELIST" in env and "MASTER_ADDR" not in env:
            import subprocess

            nodes = subprocess.run(
                ["scontrol", "show", "hostnames", env["SLURM_JOB_NODELIST"]],
                capture_output=True,
                text=True,
                check=False,
            ).stdout.split()
            if nodes:
                env["MASTER_ADDR"] = nodes[0]
        env.setdefault("MASTER_ADDR", "127.0.0.1")
        if "MASTER_PORT" not in env:
            env["MASTER_PORT"] = str(master_port or (29500 if self.distributed else _free_port()))
        return sorted(set(env) - before)

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


def _free_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
