"""InternVLTextTokenizer: the reference's id layout (BOS, pieces of "summarize:"+text, EOS, pad 0, length 80)."""

from __future__ import annotations

import pytest
import sentencepiece as spm
import torch

from internvl.data.synthetic import build_tokenizer
from internvl.data.tokenization import MAX_LENGTH, InternVLTextTokenizer, pre_caption

TEXTS = ["a dog runs on the green grass", "", "两只猫坐在红色的沙发上", "the quick brown fox"]


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory):
    return build_tokenizer(tmp_path_factory.mktemp("tok"))


@pytest.fixture(scope="module")
def tok(tok_dir):
    return InternVLTextTokenizer.from_pretrained(tok_dir)


@pytest.fixture(scope="module")
def sp(tok_dir):
    return spm.SentencePieceProcessor(model_file=str(tok_dir / "tokenizer.model"))


def test_layout_bos_pieces_eos_pad(tok, sp):
    ids = tok(TEXTS)
    assert ids.shape == (len(TEXTS), MAX_LENGTH) and ids.dtype == torch.long
    for row, text in zip(ids, TEXTS):
        pieces = sp.encode("summarize:" + text)
        n = len(pieces) + 2
        assert row[:n].tolist() == [1, *pieces, 2]
        assert (row[n:] == 0).all()
        mask = row > 0
        # The model's EOS index is sum(mask) - 1: valid only if no real token has id 0.
        assert int(mask.sum()) - 1 == n - 1 and row[int(mask.sum()) - 1] == 2


def test_decode_round_trip_including_chinese(tok):
    ids = tok(TEXTS)
    for row, text in zip(ids, TEXTS):
        assert tok.decode(row) == "summarize:" + text


def test_truncation_keeps_bos_and_eos(tok, sp):
    long_text = " ".join(["the quick brown fox jumps over the lazy dog"] * 20)
    pieces = sp.encode("summarize:" + long_text)
    assert len(pieces) > MAX_LENGTH
    row = tok([long_text])[0]
    assert (row > 0).all()
    assert row[0] == 1 and row[-1] == 2
    assert row[1:-1].tolist() == pieces[: MAX_LENGTH - 2]


def test_no_pad_token_is_added(tok_dir, tok):
    from transformers import AutoTokenizer

    fresh = AutoTokenizer.from_pretrained(tok_dir)
    assert len(tok.tokenizer) == len(fresh)
    assert tok.pad_token_id == 0 == tok.tokenizer.unk_token_id


def test_transformers_fallback_encodes_the_same(tok):
    """Without the sentencepiece model the wrapped transformers tokenizer gives the same ids."""
    fallback = InternVLTextTokenizer(tok.tokenizer)
    assert torch.equal(fallback(TEXTS), tok(TEXTS))


def test_caption_prompt_has_bos_and_no_eos(tok, sp):
    prompt = tok.caption_prompt_ids()
    assert prompt.shape == (1, len(sp.encode("English caption:")) + 1)
    assert prompt[0].tolist() == [1, *sp.encode("English caption:")]


def test_pre_caption_cleaning():
    assert pre_caption("A Dog (brown) runs!!  On: the grass.\n") == "a dog brown runs on the grass"
    assert len(pre_caption(" ".join(["word"] * 60)).split(" ")) == 50
