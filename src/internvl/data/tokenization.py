"""Text tokenisation of InternVL-C/G: retrieval/classification texts and the captioning prompt.

The reference (clip_benchmark ``InternVLTokenizer``) uses the checkpoint's slow sentencepiece
``LlamaTokenizer`` with ``add_eos_token=True`` and the pad token set to ``' '``, which is not a piece and
resolves to the unk id 0. Every text becomes

    [BOS=1] + sp("summarize:" + text) + [EOS=2] + [0] * pad      (always 80 ids, right padded)

and the model's mask is ``ids > 0``. Truncation cuts content tokens so BOS and EOS survive. We build
exactly that layout ourselves instead of configuring the tokenizer's padding/eos flags, whose
behaviour differs between transformers versions; the pieces come from the checkpoint's own
sentencepiece model (what the slow tokenizer calls), or from its transformers tokenizer when the
directory has no ``tokenizer.model``. No pad token is added to the vocabulary.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch

from internvl.core.errors import DataFormatError
from internvl.data.datasets.records import pre_caption

__all__ = ["InternVLTextTokenizer", "pre_caption", "TEXT_PREFIX", "CAPTION_PROMPT", "MAX_LENGTH", "PAD_ID"]

TEXT_PREFIX = "summarize:"  # prepended without a space (reference)
CAPTION_PROMPT = "English caption:"
MAX_LENGTH = 80
PAD_ID = 0  # the unk id; the model's mask is ids > 0


class InternVLTextTokenizer:
    """Turns texts into the fixed-length id tensors InternVL-C/G expect, and decodes generated ids.

    Example:
        >>> tok = InternVLTextTokenizer.from_pretrained("InternVL-14B-224px")
        >>> ids = tok(["a dog.", "一只狗"])          # long[2, 80]
        >>> prompt = tok.caption_prompt_ids()       # long[1, P]: <s> English caption:
    """

    def __init__(
        self,
        tokenizer,
        *,
        sp_model=None,
        max_length: int = MAX_LENGTH,
        prefix: str = TEXT_PREFIX,
    ) -> None:
        """
        Args:
            tokenizer: the checkpoint's transformers tokenizer (special ids, decoding, fallback encoding).
            sp_model: its ``sentencepiece.SentencePieceProcessor``, used for encoding when given.
            max_length: total length including BOS and EOS (80 in the reference).
            prefix: prepended to every text (``"summarize:"``).
        """
        if max_length < 2:
            raise ValueError(f"max_length={max_length}; need room for BOS and EOS")
        self.tokenizer = tokenizer
        self.sp_model = sp_model
        self.max_length = max_length
        self.prefix = prefix
        self.bos_token_id = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else 1
        self.eos_token_id = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 2
        self.pad_token_id = PAD_ID

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, **kwargs) -> InternVLTextTokenizer:
        """Load the tokenizer files of a checkpoint directory (``tokenizer.model`` and/or ``tokenizer.json``)."""
        from transformers import AutoTokenizer

        root = Path(path)
        if not root.is_dir():
            raise DataFormatError(f"{root}: not a directory; expected a checkpoint directory with tokenizer files")
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(root))
        except (OSError, ValueError) as e:
            raise DataFormatError(f"{root}: cannot load a tokenizer ({e})") from None
        sp_model = None
        if (root / "tokenizer.model").is_file():
            import sentencepiece as spm

            sp_model = spm.SentencePieceProcessor(model_file=str(root / "tokenizer.model"))
        return cls(tokenizer, sp_model=sp_model, **kwargs)

    @property
    def vocab_size(self) -> int:
        return len(self.tokenizer)

    def encode_pieces(self, text: str) -> list[int]:
        """Content ids of ``text`` without BOS/EOS (what the slow LlamaTokenizer produces)."""
        if self.sp_model is not None:
            return list(self.sp_model.encode(text))
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def __call__(self, texts: str | Sequence[str]) -> torch.Tensor:
        """long[B, max_length]: ``[BOS] + pieces(prefix + text)[:max_length-2] + [EOS] + [0]*pad``."""
        if isinstance(texts, str):
            texts = [texts]
        out = torch.full((len(texts), self.max_length), self.pad_token_id, dtype=torch.long)
        budget = self.max_length - 2
        for row, text in enumerate(texts):
            ids = [self.bos_token_id, *self.encode_pieces(self.prefix + text)[:budget], self.eos_token_id]
            out[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        return out

    def caption_prompt_ids(self, prompt: str = CAPTION_PROMPT) -> torch.Tensor:
        """long[1, P]: ``[BOS] + pieces(prompt)``, no EOS and no padding (reference captioning, spec §5.2)."""
        return torch.tensor([[self.bos_token_id, *self.encode_pieces(prompt)]], dtype=torch.long)

    def decode(self, ids: torch.Tensor | Sequence[int]) -> str:
        """Text of one id sequence with special tokens (BOS, EOS, pad/unk 0) dropped and spaces stripped."""
        if isinstance(ids, torch.Tensor):
            ids = ids.tolist()
        return self.tokenizer.decode(ids, skip_special_tokens=True).strip()

    def batch_decode(self, ids: torch.Tensor | Sequence[Sequence[int]]) -> list[str]:
        return [self.decode(row) for row in ids]

    def save_pretrained(self, path: str | os.PathLike) -> None:
        """Write the wrapped tokenizer's files (e.g. next to a model saved with ``save_pretrained``)."""
        self.tokenizer.save_pretrained(str(path))
