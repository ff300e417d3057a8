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
    for row, text in zip(ids, TEXTS, strict=True):
        pieces = sp.encode("summarize:" + text)
        n = len(pieces) + 2
        assert row[:n].tolist() == [1, *pieces, 2]
        assert (row[n:] == 0).all()
        mask = row > 0
        # The model's EOS index is sum(mask) - 1: valid only if no real token has id 0.
        assert int(mask.sum()) - 1 == n - 1 and row[int(mask.sum()) - 1] == 2


def test_decode_round_trip_including_chinese(tok):
    ids = tok(TEXTS)
    for row, text in zip(ids, TEXTS, strict=True):
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


def test_special_token_strings_split_like_the_slow_tokenizer(tok, sp):
    """The reference's slow LlamaTokenizer turns the literal strings of special tokens into their ids and
    encodes the text between them chunk by chunk (each chunk with its own dummy-prefix space)."""
    text = "a dog </s> runs <s>x<unk> end"
    expected = [
        1,
        *sp.encode("summarize:a dog "),
        2,
        *sp.encode(" runs "),
        1,
        *sp.encode("x"),
        0,
        *sp.encode(" end"),
        2,
    ]
    row = tok([text])[0]
    assert row[: len(expected)].tolist() == expected
    assert (row[len(expected) :] == 0).all()
    # Plain text is one sentencepiece call, as before.
    assert tok.encode_pieces("summarize:a dog") == sp.encode("summarize:a dog")


def test_added_pad_token_of_the_checkpoint_is_split(tmp_path, tok_dir, sp):
    """The published tokenizer declares pad "[PAD]" (an added token after the sentencepiece vocabulary)."""
    import json
    import shutil

    d = tmp_path / "tok"
    shutil.copytree(tok_dir, d)
    size = sp.get_piece_size()
    (d / "special_tokens_map.json").write_text(
        json.dumps({"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "[PAD]"})
    )
    (d / "added_tokens.json").write_text(json.dumps({"[PAD]": size}))
    t = InternVLTextTokenizer.from_pretrained(d)
    assert t.encode_pieces("a[PAD]b") == [*sp.encode("a"), size, *sp.encode("b")]
    # Padding stays id 0 (the reference pads with ' ', i.e. unk), never the checkpoint's [PAD].
    assert t(["a"])[0, -1] == 0


def test_directory_without_tokenizer_files_is_an_error(tmp_path):
    """transformers 5 builds an empty tokenizer from an InternVL config.json alone (every text -> no ids);
    that must be a clear error, not silently wrong embeddings."""
    import json

    from internvl.core.errors import DataFormatError

    (tmp_path / "config.json").write_text(json.dumps({"model_type": "internvl"}))
    with pytest.raises(DataFormatError, match="no tokenizer files"):
        InternVLTextTokenizer.from_pretrained(tmp_path)


def test_missing_tokenizer_model_warns_only_for_a_converted_sentencepiece_tokenizer(tmp_path, tok_dir, caplog):
    """A LlamaTokenizer checkpoint without its tokenizer.model may encode unlike the reference: a warning.
    A tokenizer built natively with `tokenizers` (the built-in world's) has no slow original: debug only."""
    import logging
    import shutil

    from transformers import AutoTokenizer

    from internvl.data.synthetic.tokenizer import build_world_tokenizer

    converted = tmp_path / "converted"
    AutoTokenizer.from_pretrained(tok_dir).save_pretrained(converted)  # tokenizer.json (+ the model file)
    shutil.copy(tok_dir / "tokenizer_config.json", converted)  # tokenizer_class LlamaTokenizer
    (converted / "tokenizer.model").unlink(missing_ok=True)
    native = build_world_tokenizer(tmp_path / "native", ["a red circle", "a blue square"] * 4)
    levels = {}
    for name, d in (("converted", converted), ("native", native)):
        caplog.clear()
        with caplog.at_level(logging.DEBUG, logger="internvl.data.tokenization"):
            InternVLTextTokenizer.from_pretrained(d)
        levels[name] = [r.levelno for r in caplog.records if "no tokenizer.model" in r.getMessage()]
    assert levels == {"converted": [logging.WARNING], "native": [logging.DEBUG]}
