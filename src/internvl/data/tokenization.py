"""Text tokenisation of InternVL-C/G: retrieval/classification texts and the captioning prompt.

The reference (clip_benchmark ``InternVLTokenizer``) uses the checkpoint's slow sentencepiece
``LlamaTokenizer`` with ``add_eos_token=True`` and the pad token set to ``' '``, which is not a piece and
resolves to the unk id 0. Every text becomes

    [BOS=1] + sp("summarize:" + text) + [EOS=2] + [0] * pad      (always 80 ids, right padded)

and the model's mask is ``ids > 0``. Truncation cuts content tokens so BOS and EOS survive. We build
exactly that layout ourselves instead of configuring the tokenizer's padding/eos flags, whose
behaviour differs between transformers versions; the pieces come from the checkpoint's own
sentencepiece model (what the slow tokenizer calls), or from its transformers tokenizer when the
directory has no ``tokenizer.model`` (an approximation: fast tokenizers differ from the slow one in
some whitespace and normalisation cases). No pad token is added to the vocabulary.

Like the slow tokenizer (transformers 4.3x, ``legacy`` default), text is first split at the literal
strings of special and added tokens (``<s>``, ``</s>``, ``<unk>``, ``[PAD]``, ...): those become their
ids and every other chunk is encoded by sentencepiece on its own (each with the dummy-prefix space).
So a caption containing ``</s>`` gets an EOS id inside the text and ``<unk>`` gets id 0, which the
model's ``ids > 0`` mask then treats as padding: the reference's behaviour, kept for identical ids.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from internvl.core.caption_defaults import PROMPT
from internvl.core.errors import DataFormatError
from internvl.data.datasets.records import pre_caption

logger = logging.getLogger(__name__)

__all__ = ["InternVLTextTokenizer", "pad_rows", "pre_caption", "TEXT_PREFIX", "CAPTION_PROMPT", "MAX_LENGTH", "PAD_ID"]

TEXT_PREFIX = "summarize:"  # prepended without a space (reference)
CAPTION_PROMPT = PROMPT  # the reference prompt (internvl.core.caption_defaults)
MAX_LENGTH = 80
PAD_ID = 0  # the unk id; the model's mask is ids > 0
TOKENIZER_FILES = ("tokenizer.model", "tokenizer.json")
# tokenizer_config.json classes of a tokenizer saved from a `tokenizers` object (transformers 4 / 5)
NATIVE_FAST_TOKENIZER_CLASSES = ("PreTrainedTokenizerFast", "TokenizersBackend")


def pad_rows(rows: Sequence[Sequence[int] | torch.Tensor], fill: int, length: int | None = None) -> torch.Tensor:
    """long[B, length] of right-padded rows (lists or 1-D tensors); ``length`` defaults to the longest row.

    The one dynamic-padding step: inference pads its text batches with it and fine-tuning its caption
    fields (`internvl.data.pairs.collate_pairs`). A row longer than ``length`` is an error, never cut.
    """
    width = max((len(r) for r in rows), default=0) if length is None else length
    out = torch.full((len(rows), width), fill, dtype=torch.long)
    for row, ids in enumerate(rows):
        if len(ids) > width:
            raise DataFormatError(f"row {row} has {len(ids)} ids, more than the padded length {width}")
        out[row, : len(ids)] = torch.as_tensor(ids, dtype=torch.long)
    return out


class TextIdCache:
    """Ids of texts already encoded, for the transformers-tokenizer paths: training data encodes the same
    captions and prompts every epoch, and one tokenizer call costs ~50 us of a data worker's time. A plain
    dict, emptied when full, so it pickles into loader workers."""

    def __init__(self, size: int = 16384) -> None:
        self.size = size
        self._ids: dict[str, tuple[int, ...]] = {}

    def get(self, text: str, encode: Callable[[str], Sequence[int]]) -> tuple[int, ...]:
        ids = self._ids.get(text)
        if ids is None:
            if len(self._ids) >= self.size:
                self._ids.clear()
            ids = self._ids[text] = tuple(encode(text))
        return ids


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
        split_tokens: dict[str, tuple[int, bool, bool]] | None = None,
    ) -> None:
        """
        Args:
            tokenizer: the checkpoint's transformers tokenizer (special ids, decoding, fallback encoding).
            sp_model: its ``sentencepiece.SentencePieceProcessor``, used for encoding when given.
            max_length: total length including BOS and EOS (80 in the reference).
            prefix: prepended to every text (``"summarize:"``).
            split_tokens: token string -> (id, lstrip, rstrip) of the special/added tokens the text is
                split at before sentencepiece (`from_pretrained` reads them from the tokenizer files the
                way the slow tokenizer does; default: derived from ``tokenizer``).
        """
        if max_length < 2:
            raise ValueError(f"max_length={max_length}; need room for BOS and EOS")
        self.tokenizer = tokenizer
        self.sp_model = sp_model
        self._cache = TextIdCache()
        self.max_length = max_length
        self.prefix = prefix
        self.bos_token_id = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else 1
        self.eos_token_id = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 2
        self.pad_token_id = PAD_ID
        if split_tokens is None:
            split_tokens = self._special_strings() if sp_model is not None else {}
        self._split_ids = dict(split_tokens)
        self._split_re = (
            re.compile("|".join(re.escape(t) for t in sorted(self._split_ids, key=len, reverse=True)))
            if self._split_ids
            else None
        )

    def _special_strings(self) -> dict[str, tuple[int, bool, bool]]:
        """Strings the slow tokenizer never hands to sentencepiece: content -> (id, lstrip, rstrip).

        Its special tokens (bos/eos/unk/pad/additional) and the tokens added on top of the
        sentencepiece vocabulary. Pieces of the sentencepiece model itself that transformers 5 lists
        as added (user-defined symbols) are not split: sentencepiece produces them anyway, and the
        slow tokenizer does not split there (splitting would change the dummy-prefix spaces).
        """
        tok = self.tokenizer
        size = self.sp_model.get_piece_size()
        found: dict[str, tuple[int, bool, bool]] = {}
        decoder = getattr(tok, "added_tokens_decoder", None) or {}
        for idx, added in decoder.items():
            content = getattr(added, "content", str(added))
            if getattr(added, "special", False) or idx >= size:
                found[content] = (
                    int(idx),
                    bool(getattr(added, "lstrip", False)),
                    bool(getattr(added, "rstrip", False)),
                )
        for name in ("bos_token", "eos_token", "unk_token", "pad_token"):
            content = getattr(tok, name, None)
            if isinstance(content, str) and content and content not in found:
                idx = tok.convert_tokens_to_ids(content)
                if isinstance(idx, int) and idx >= 0:
                    found[content] = (idx, False, False)
        return found

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, **kwargs) -> InternVLTextTokenizer:
        """Load the tokenizer files of a checkpoint directory (``tokenizer.model`` and/or ``tokenizer.json``)."""
        from transformers import AutoTokenizer

        root = Path(path)
        if not root.is_dir():
            raise DataFormatError(f"{root}: not a directory; expected a checkpoint directory with tokenizer files")
        if not any((root / name).is_file() for name in TOKENIZER_FILES):
            # transformers 5 would otherwise build an empty tokenizer from config.json's model type.
            raise DataFormatError(
                f"{root}: no tokenizer files ({' or '.join(TOKENIZER_FILES)}); copy the checkpoint's tokenizer "
                "files (tokenizer.model, tokenizer_config.json, special_tokens_map.json) into this directory"
            )
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(root))
        except (OSError, ValueError) as e:
            raise DataFormatError(f"{root}: cannot load a tokenizer ({e})") from None
        sp_model = None
        if (root / "tokenizer.model").is_file():
            import sentencepiece as spm

            sp_model = spm.SentencePieceProcessor(model_file=str(root / "tokenizer.model"))
        else:
            # Only a tokenizer converted from a sentencepiece model (LlamaTokenizer, ...) has a slow original
            # to differ from; one built natively with `tokenizers` (the built-in world's) does not.
            native = _tokenizer_class(root) in NATIVE_FAST_TOKENIZER_CLASSES
            logger.log(
                logging.DEBUG if native else logging.WARNING,
                "%s has no tokenizer.model; encoding with the transformers tokenizer, whose ids can differ from "
                "the reference's slow sentencepiece tokenizer on unusual whitespace and unicode",
                root,
            )
        if sp_model is not None:
            kwargs.setdefault("split_tokens", _slow_split_tokens(root, tokenizer, sp_model))
        return cls(tokenizer, sp_model=sp_model, **kwargs)

    @property
    def vocab_size(self) -> int:
        return len(self.tokenizer)

    def encode_pieces(self, text: str) -> list[int]:
        """Content ids of ``text`` without BOS/EOS (what the slow LlamaTokenizer produces)."""
        if self.sp_model is None:
            return list(self._cache.get(text, lambda t: self.tokenizer(t, add_special_tokens=False)["input_ids"]))
        if self._split_re is None:
            return list(self.sp_model.encode(text))
        # Split at special/added token strings: [text, special, text, special, ..., text].
        chunks: list[str] = []
        pos = 0
        for m in self._split_re.finditer(text):
            chunks += [text[pos : m.start()], m.group()]
            pos = m.end()
        chunks.append(text[pos:])
        for i in range(1, len(chunks), 2):
            _, lstrip, rstrip = self._split_ids[chunks[i]]
            if rstrip:  # the special token swallows the spaces on its right
                chunks[i + 1] = chunks[i + 1].lstrip()
            if lstrip:
                chunks[i - 1] = chunks[i - 1].rstrip()
        ids: list[int] = []
        for i, chunk in enumerate(chunks):
            if i % 2:
                ids.append(self._split_ids[chunk][0])
            elif chunk:
                ids += self.sp_model.encode(chunk)
        return ids

    def encode(self, text: str) -> list[int]:
        """The unpadded ids of one text: ``[BOS] + pieces(prefix + text)[:max_length-2] + [EOS]``."""
        return [self.bos_token_id, *self.encode_pieces(self.prefix + text)[: self.max_length - 2], self.eos_token_id]

    def pad(self, rows: Sequence[Sequence[int]], length: int | None = None) -> torch.Tensor:
        """long[B, length] of right-padded id rows; ``length`` defaults to the longest row (dynamic padding).

        Trailing padding never changes a text embedding (the causal hidden state at the EOS cannot see
        it), so a batch cut to its longest row embeds the same as the reference's 80 ids, for less work.
        """
        return pad_rows(rows, self.pad_token_id, length)

    def __call__(self, texts: str | Sequence[str], padding: str = "max_length") -> torch.Tensor:
        """long[B, L]: ``[BOS] + pieces(prefix + text)[:max_length-2] + [EOS] + [0]*pad``.

        ``padding="max_length"`` gives L = ``max_length`` (the reference); ``"longest"`` pads to the
        longest text of this call only.
        """
        if padding not in ("max_length", "longest"):
            raise ValueError(f"padding={padding!r}; expected 'max_length' or 'longest'")
        if isinstance(texts, str):
            texts = [texts]
        return self.pad([self.encode(t) for t in texts], self.max_length if padding == "max_length" else None)

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


def _slow_split_tokens(root: Path, tokenizer, sp_model) -> dict[str, tuple[int, bool, bool]]:
    """The added/special tokens a transformers 4.3x slow ``LlamaTokenizer`` splits text at, from the files.

    Read from disk rather than from the installed transformers (whose notion of "added tokens"
    changed in 5.x): ``added_tokens_decoder`` of ``tokenizer_config.json`` (else the ``added_tokens`` of
    ``tokenizer.json``), ``added_tokens.json``, and the special tokens of ``tokenizer_config.json`` /
    ``special_tokens_map.json``. Returns content -> (id, lstrip, rstrip).
    """
    from internvl.core.io import read_json

    def load(name: str):
        f = root / name
        return read_json(f) if f.is_file() else None

    def content_of(value) -> str | None:
        if isinstance(value, dict):
            value = value.get("content")
        return value if isinstance(value, str) and value else None

    config = load("tokenizer_config.json") or {}
    found: dict[str, tuple[int, bool, bool]] = {}
    decoder = config.get("added_tokens_decoder")
    if not decoder:
        fast = load("tokenizer.json") or {}
        decoder = {str(t.get("id")): t for t in fast.get("added_tokens", []) if isinstance(t, dict)}
    for idx, tok in (decoder or {}).items():
        content = content_of(tok)
        if content is not None and str(idx).isdigit():
            found[content] = (int(idx), bool(tok.get("lstrip", False)), bool(tok.get("rstrip", False)))
    for content, idx in (load("added_tokens.json") or {}).items():
        if isinstance(idx, int):
            found.setdefault(content, (idx, False, False))
    special_map = load("special_tokens_map.json") or {}
    names = ("bos_token", "eos_token", "unk_token", "pad_token", "additional_special_tokens")
    for source in (config, special_map):
        for name in names:
            values = source.get(name)
            for value in values if isinstance(values, list) else [values]:
                content = content_of(value)
                if content is None or content in found:
                    continue
                idx = sp_model.piece_to_id(content)
                if sp_model.id_to_piece(idx) != content:  # not a piece: the id transformers assigned to it
                    idx = tokenizer.convert_tokens_to_ids(content)
                if isinstance(idx, int) and idx >= 0:
                    found[content] = (idx, False, False)
    return found


def _tokenizer_class(root: Path) -> str | None:
    try:
        return json.loads((root / "tokenizer_config.json").read_text(encoding="utf-8")).get("tokenizer_class")
    except (OSError, ValueError, AttributeError):
        return None
