"""Tokenizers of the built-in world, trained in-process and saved in the layout of a checkpoint directory.

`build_tokenizer` trains a real SentencePiece model (BPE with byte fallback, ids unk=0, bos=1, eos=2 like
the LLaMA tokenizers of the official checkpoints) on a small fixed corpus, for tests of the loading
code. `build_world_tokenizer` trains a byte-level BPE with the `tokenizers` library on the world's text,
for models that are trained on the world. Both directories load with the same code as a checkpoint.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from internvl.core.tokens import CHAT_SPECIAL_TOKENS  # noqa: F401 (re-exported; defined in core.tokens)

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


def build_chat_tokenizer(path: str | os.PathLike) -> Path:
    """`build_tokenizer` laid out as a V1-2 chat LLM's: the ChatML markers as single pieces, the image and
    box tokens as added special tokens, and no BOS (Hermes-2 prompts start with ``<|im_start|>``)."""
    return build_tokenizer(
        path,
        special_tokens=CHAT_SPECIAL_TOKENS,
        chat_template_tokens=["<|im_start|>", "<|im_end|>"],
        add_bos_token=False,
    )


# Chat LLM special tokens of the world tokenizer: the Hermes-2 (ChatML) role markers and the image tokens.
WORLD_CHAT_TOKENS: tuple[str, ...] = ("<|im_start|>", "<|im_end|>", *CHAT_SPECIAL_TOKENS)


def build_world_tokenizer(path: str | os.PathLike, corpus: Iterable[str], *, vocab_size: int = 1024) -> Path:
    """Train a byte-level BPE tokenizer on ``corpus`` with the `tokenizers` library; save an HF tokenizer dir.

    One tokenizer serves both model families: ids ``<unk>``=0 (also the pad: InternVL-C/G pads with 0
    and masks ``ids > 0``), ``<s>``=1, ``</s>``=2 like the LLaMA tokenizers, then `WORLD_CHAT_TOKENS`
    (ChatML role markers and ``<img>``/``</img>``/``<IMG_CONTEXT>``) as special tokens, so the
    InternVL-Chat template and image splicing find them. Byte-level, so any text encodes without unk;
    the world's words are frequent enough that each becomes one token. Adds no BOS/EOS by itself (the
    C/G tokenizer adds them explicitly; the chat template has its own markers).

    Returns:
        The directory (``tokenizer.json`` + ``tokenizer_config.json``), loadable with
        ``transformers.AutoTokenizer.from_pretrained``.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    root = Path(path)
    root.mkdir(parents=True, exist_ok=True)
    specials = ["<unk>", "<s>", "</s>", *WORLD_CHAT_TOKENS]
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(list(corpus), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<unk>",
        additional_special_tokens=list(WORLD_CHAT_TOKENS),
        clean_up_tokenization_spaces=False,
    )
    fast.save_pretrained(str(root))
    return root
