"""Where this process sits in a (possibly) distributed run, read from the launcher's environment.

``torchrun``/``deepspeed`` set RANK, WORLD_SIZE and LOCAL_RANK; slurm's ``srun`` sets SLURM_PROCID,
SLURM_NTASKS and SLURM_LOCALID (``internvl train`` maps them to the torch names, as the reference's
``init_dist`` does). Only the CLI calls `from_env`; everything below takes a `DistContext`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> DistContext:
        env = os.environ if environ is None else environ
        if "RANK" in env and "WORLD_SIZE" in env:
            return cls(int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", 0)))
        if "SLURM_PROCID" in env and "SLURM_NTASKS" in env:
            return cls(int(env["SLURM_PROCID"]), int(env["SLURM_NTASKS"]), int(env.get("SLURM_LOCALID", 0)))
        return cls()

    def export_torch_env(self, environ: dict[str, str] | None = None, master_port: int = 29500) -> None:
        """Set RANK/WORLD_SIZE/LOCAL_RANK (and MASTER_ADDR/PORT defaults) for torch.distributed under slurm."""
        env = os.environ if environ is None else environ
        env.setdefault("RANK", str(self.rank))
        env.setdefault("WORLD_SIZE", str(self.world_size))
        env.setdefault("LOCAL_RANK", str(self.local_rank))
        if "SLURM_JOB_NODELIST" in env and "MASTER_ADDR" not in env:
            import subprocess

            nodes = subprocess.run(["scontrol", "show", "hostnames", env["SLURM_JOB_NODELIST"]],
                                   capture_output=True, text=True, check=False).stdout.split()
            if nodes:
                env["MASTER_ADDR"] = nodes[0]
        env.setdefault("MASTER_ADDR", "127.0.0.1")
        env.setdefault("MASTER_PORT", str(master_port))
