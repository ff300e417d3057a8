"""Batching SFT samples (chat spec §7.5): right padding, concatenated tiles, skipped-sample counting."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from internvl.core.errors import DataFormatError
from internvl.data.sft import IGNORE_INDEX


def collate_sft(samples: Sequence[dict[str, torch.Tensor] | None], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Pad and stack `SFTDataset` samples into one batch.

    ``input_ids`` are right-padded with ``pad_token_id``, ``labels`` with ``IGNORE_INDEX``,
    ``position_ids`` and ``attention_mask`` with 0; the mask is the samples' own (the reference rebuilds it
    as ``ids != 0``, which also masks a real id-0 token). ``pixel_values`` and ``image_flags`` are
    concatenated over samples (each sample has at least one tile; pure text has a dummy tile with flag 0).
    ``None`` entries (samples skipped under ``on_error="skip"``) are dropped and counted in
    ``num_skipped`` (long[]).

    Returns:
        input_ids, labels, attention_mask, position_ids: long[B, L]; pixel_values: float32[sum T, 3, S, S];
        image_flags: long[sum T]; num_skipped: long[].

    Raises:
        DataFormatError: every sample of the batch was skipped.
    """
    kept = [s for s in samples if s is not None]
    if not kept:
        raise DataFormatError(
            f"all {len(samples)} samples of the batch were skipped as invalid; run `internvl data check`"
        )
    length = max(int(s["input_ids"].shape[0]) for s in kept)
    fills = {"input_ids": pad_token_id, "labels": IGNORE_INDEX, "attention_mask": 0, "position_ids": 0}
    out: dict[str, torch.Tensor] = {}
    for key, fill in fills.items():
        batch = torch.full((len(kept), length), fill, dtype=torch.long)
        for row, s in enumerate(kept):
            batch[row, : s[key].shape[0]] = s[key]
        out[key] = batch
    out["pixel_values"] = torch.cat([s["pixel_values"] for s in kept])
    out["image_flags"] = torch.cat([s["image_flags"] for s in kept])
    out["num_skipped"] = torch.tensor(len(samples) - len(kept))
    return out
