"""Streamed pieces join to exactly the non-streamed decode: byte-fallback runs, split multi-byte
characters, lone invalid bytes, whitespace, special tokens; on two different SentencePiece tokenizers."""

from __future__ import annotations

import random

import pytest
import torch

from internvl.data.synthetic import CHAT_SPECIAL_TOKENS, build_tokenizer
from internvl.inference.chat import load_tokenizer
from internvl.inference.streaming import IncrementalDecoder, TextPieceStreamer, cut_at_stop
from tests.conftest import parity_root


@pytest.fixture(scope="module", params=["synthetic", "reference_sft"])
def tokenizer(request, tmp_path_factory):
    if request.param == "synthetic":
        path = tmp_path_factory.mktemp("tok")
        build_tokenizer(path, special_tokens=CHAT_SPECIAL_TOKENS, chat_template_tokens=["<|im_start|>", "<|im_end|>"])
    else:
        path = parity_root() / "sft" / "tokenizer"
        if not path.is_dir():
            pytest.fail(f"parity fixtures not found at {path} (set INTERNVL_PARITY_FIXTURES)")
    return load_tokenizer(path)


def _byte_ids(tokenizer, data: bytes) -> list[int]:
    ids = tokenizer.convert_tokens_to_ids([f"<0x{b:02X}>" for b in data])
    assert tokenizer.unk_token_id not in ids, "the tokenizer has no byte-fallback pieces"
    return ids


def _stream(tokenizer, ids: list[int]) -> list[str]:
    decoder = IncrementalDecoder(tokenizer)
    pieces = [decoder.push([i]) for i in ids]
    return [p for p in [*pieces, decoder.finish()] if p]


def _cases(tokenizer) -> dict[str, list[int]]:
    words = tokenizer("the cat sat", add_special_tokens=False)["input_ids"]
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    return {
        # "0" followed by an invalid byte: SentencePiece re-decodes the run, "0" becomes U+FFFD
        "digit_then_invalid_byte": _byte_ids(tokenizer, b"0\x80") + words + _byte_ids(tokenizer, b"\xa2\xcd\xcd"),
        "split_cjk": words + _byte_ids(tokenizer, "中文".encode()) + words,
        "split_emoji_at_end": words + _byte_ids(tokenizer, "🙂".encode()),
        "incomplete_at_end": words + _byte_ids(tokenizer, "中".encode()[:2]),
        "lone_bytes": _byte_ids(tokenizer, b"\x80") + words + _byte_ids(tokenizer, b"\xff") + words,
        "accents_between_words": words + _byte_ids(tokenizer, "é ü".encode()) + words,
        "special_token_inside": words + ([im_end] if im_end != tokenizer.unk_token_id else []) + words,
    }


def test_pieces_join_to_the_full_decode(tokenizer):
    for name, ids in _cases(tokenizer).items():
        pieces = _stream(tokenizer, ids)
        assert "".join(pieces) == tokenizer.decode(ids, skip_special_tokens=True), name


def test_no_piece_is_rewritten_later(tokenizer):
    """Every released prefix stays a prefix of the final text (nothing is sent that a later token changes)."""
    for name, ids in _cases(tokenizer).items():
        final = tokenizer.decode(ids, skip_special_tokens=True)
        decoder = IncrementalDecoder(tokenizer)
        sent = ""
        for i in ids:
            sent += decoder.push([i])
            assert final.startswith(sent), (name, sent, final)


def test_random_id_sequences(tokenizer):
    rng = random.Random(0)
    byte_ids = _byte_ids(tokenizer, bytes(range(256)))
    vocab = list(range(len(tokenizer)))
    for trial in range(300):
        ids = [rng.choice(byte_ids) if rng.random() < 0.5 else rng.choice(vocab) for _ in range(rng.randint(1, 24))]
        assert "".join(_stream(tokenizer, ids)) == tokenizer.decode(ids, skip_special_tokens=True), (trial, ids)


def test_streamer_skips_the_prompt_and_ends_once(tokenizer):
    ids = _cases(tokenizer)["split_cjk"]
    streamer = TextPieceStreamer(tokenizer, timeout=5)
    streamer.put(torch.tensor([[5, 6, 7]]))  # the prompt, as generate() sends it first
    for i in ids:
        streamer.put(torch.tensor([i]))
    streamer.end()
    streamer.end()
    assert "".join(streamer) == tokenizer.decode(ids, skip_special_tokens=True)
    with pytest.raises(ValueError, match="batch size 1"):
        TextPieceStreamer(tokenizer).put(torch.zeros(2, 3, dtype=torch.long))


def test_cut_at_stop_keeps_replacement_characters():
    chunks = ["\ufffd\ufffda", "\ufffd <|im", "_end|>x"]
    assert "".join(cut_at_stop(chunks, "<|im_end|>")) == "\ufffd\ufffda\ufffd"
