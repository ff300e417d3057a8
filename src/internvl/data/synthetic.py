"""A small built-in synthetic world: a tokenizer trained in-process and seeded images.

Lets the demo and the tests run every component end to end on a laptop CPU without downloading a
checkpoint. The tokenizer is a real SentencePiece model (BPE with byte fallback, ids unk=0, bos=1,
eos=2 like the LLaMA tokenizers of the official checkpoints), saved in the layout of a checkpoint
directory so that the same loading code reads it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

DEFAULT_CORPUS: tuple[str, ...] = (
    "a dog runs on the green grass",
    "two cats sit on a red sofa",
    "English caption: a photo of a man riding a bike",
    "summarize: the quick brown fox jumps over the lazy dog",
    "what is in the image? please describe it in detail",
    "a red square and a blue circle on a white background",
    "the image shows a yellow triangle next to a green square",
    "there are three shapes: red, green and blue",
    "User: hello Assistant: hi, how can I help you today?",
    "一只狗在草地上奔跑",
    "两只猫坐在红色的沙发上",
)

# Special tokens InternVL-Chat adds to its LLM tokenizer (ids follow the base vocabulary).
CHAT_SPECIAL_TOKENS: tuple[str, ...] = (
    "<IMG_CONTEXT>", "<img>", "</img>", "<quad>", "</quad>", "<ref>", "</ref>", "<box>", "</box>",
)


def build_tokenizer(
    path: str | os.PathLike,
    *,
    corpus: Iterable[str] = DEFAULT_CORPUS,
    vocab_size: int = 400,
    special_tokens: Sequence[str] = (),
    add_bos_token: bool = True,
    add_eos_token: bool = False,
    chat_template_tokens: Sequence[str] = (),
    normalization: str = "nmt_nfkc",
) -> Path:
    """Train a tiny SentencePiece BPE tokenizer and save it as a LLaMA tokenizer directory.

    Args:
        path: directory to write ``tokenizer.model`` and ``tokenizer_config.json`` into.
        corpus: training sentences (repeated internally so every character is seen often).
        vocab_size: SentencePiece vocabulary size (before ``special_tokens``).
        special_tokens: extra tokens appended after the base vocabulary, in order
            (e.g. `CHAT_SPECIAL_TOKENS`), recorded as added special tokens.
        add_bos_token / add_eos_token: the tokenizer's defaults for BOS/EOS insertion.
        normalization: SentencePiece normalisation rule; "identity" keeps newlines and spaces as they are
            (as the real LLaMA/Yi tokenizers do), the default "nmt_nfkc" folds them.
        chat_template_tokens: tokens such as ``<|im_start|>`` that must be single pieces in the base
            vocabulary (user-defined symbols), as they are in the real chat LLM tokenizers.

    Returns:
        The directory, loadable with ``transformers.AutoTokenizer.from_pretrained``.
    """
    import sentencepiece as spm

    root = Path(path)
    root.mkdir(parents=True, exist_ok=True)
    sentences = list(corpus) * 8
    extra = {"user_defined_symbols": list(chat_template_tokens)} if chat_template_tokens else {}
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences),
        model_prefix=str(root / "tokenizer"),
        vocab_size=vocab_size,
        model_type="bpe",
        byte_fallback=True,
        character_coverage=1.0,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        hard_vocab_limit=False,
        minloglevel=2,
        normalization_rule_name=normalization,
        **extra,
    )
    (root / "tokenizer.vocab").unlink(missing_ok=True)
    config = {
        "tokenizer_class": "LlamaTokenizer",
        "add_bos_token": add_bos_token,
        "add_eos_token": add_eos_token,
        "bos_token": "<s>",
        "eos_token": "</s>",
        "unk_token": "<unk>",
        "legacy": True,
        "clean_up_tokenization_spaces": False,
    }
    (root / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    if special_tokens:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(root)
        from internvl.core.compat import persist_tokenizer_flags

        tok.add_tokens(list(special_tokens), special_tokens=True)
        tok.save_pretrained(root)
        persist_tokenizer_flags(tok, root)
    return root


def synthetic_image(seed: int, size: int = 64) -> Image.Image:
    """A deterministic RGB image of coloured rectangles on a gradient (varied content per seed)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size]
    base = np.stack([x * 255 / size, y * 255 / size, np.full_like(x, 128)], axis=-1).astype(np.float64)
    base = base * rng.uniform(0.3, 1.0, size=3)
    for _ in range(3):
        x0, y0 = rng.integers(0, size // 2, size=2)
        w, h = rng.integers(size // 8, size // 2, size=2)
        base[y0 : y0 + h, x0 : x0 + w] = rng.integers(0, 256, size=3)
    return Image.fromarray(base.clip(0, 255).astype(np.uint8), mode="RGB")
