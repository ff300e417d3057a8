"""Length-grouped sample order for SFT (``--group_by_length``, chat spec §7.7), LLaVA style.

One random permutation is cut into megabatches of one global batch (``batch_size x world_size``, where
``batch_size`` is the per-device micro-batch and ``world_size`` the number of micro-batches in a global
batch: devices x gradient accumulation, as the reference passes it); each megabatch is sorted by length,
longest first, and dealt into ``world_size`` chunks of ``batch_size`` whose total lengths are balanced
(each sample goes to the chunk with the smallest total that still has room). Flattened and cut into
consecutive micro-batches (dealt round-robin to the ranks, as accelerate does), every micro-batch of a
step holds similar lengths, which cuts padding.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch

from internvl.core.errors import ConfigError


def length_grouped_indices(
    lengths: Sequence[int], batch_size: int, world_size: int = 1, generator: torch.Generator | None = None
) -> list[int]:
    """The sample order (a permutation of ``range(len(lengths))``); see the module doc."""
    if batch_size < 1 or world_size < 1:
        raise ConfigError(f"batch_size and world_size must be >= 1, got {batch_size}, {world_size}")
    perm = torch.randperm(len(lengths), generator=generator).tolist()
    mega = batch_size * world_size
    out: list[int] = []
    for start in range(0, len(perm), mega):
        group = sorted(perm[start : start + mega], key=lambda i: lengths[i], reverse=True)
        if len(group) < world_size:
            out += group
            continue
        per_chunk = len(group) // world_size
        chunks: list[list[int]] = [[] for _ in range(world_size)]
        totals = [0] * world_size
        for i in group:
            open_chunks = [c for c in range(world_size) if len(chunks[c]) < per_chunk]
            if not open_chunks:  # the remainder of an uneven last megabatch
                open_chunks = list(range(world_size))
            c = min(open_chunks, key=lambda k: totals[k])
            chunks[c].append(i)
            totals[c] += lengths[i]
        out += [i for chunk in chunks for i in chunk]
    return out


class LengthGroupedSampler(torch.utils.data.Sampler[int]):
    """`length_grouped_indices` with a seed and an epoch (``set_epoch``), reproducible across restarts."""

    def __init__(self, lengths: Sequence[int], batch_size: int, world_size: int = 1, seed: int = 0) -> None:
        self.lengths = list(lengths)
        self.batch_size = batch_size
        self.world_size = world_size
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        return iter(length_grouped_indices(self.lengths, self.batch_size, self.world_size, g))
