"""Samples are a function of (seed, epoch, index): the same batches with 0 or 2 DataLoader workers."""

from __future__ import annotations

import torch

from internvl.data.pairs import PairTokenizer, RetrievalPairs, read_caption_pairs
from tests.unit.training.helpers import make_checkpoint, make_flickr_set


def _batches(dataset, workers):
    loader = torch.utils.data.DataLoader(dataset, batch_size=4, num_workers=workers)
    return list(loader)


def test_workers_and_epochs(tmp_path):
    ckpt = make_checkpoint(tmp_path / "ckpt")
    make_flickr_set(tmp_path / "data", "d_flickr_format_train", 6)
    pairs, _ = read_caption_pairs(
        tmp_path / "data" / "d_flickr_format_train.txt", tmp_path / "data" / "images", "flickr_format"
    )
    data = RetrievalPairs(pairs, PairTokenizer.from_pretrained(ckpt, max_length=24), 56, seed=1)
    first = _batches(data, 0)
    for a, b in zip(first, _batches(data, 2), strict=True):
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), k
    data.set_epoch(1)
    other = _batches(data, 0)
    assert not torch.equal(first[0]["pixel_values"], other[0]["pixel_values"])  # new crops/flips per epoch
    assert torch.equal(first[0]["positive_input_ids"], other[0]["positive_input_ids"])
