"""Text -> token ids for SFT, exactly as the reference's tokenizer splits them (chat spec §7.4).

The reference trains with ``AutoTokenizer(..., use_fast=False)`` on transformers 4.37: a *slow*
sentencepiece ``LlamaTokenizer``. transformers 5 has no slow tokenizer and splits some texts
differently (dummy-prefix spaces after special tokens, ``legacy`` handling), so `SentencePieceEncoder`
reproduces the 4.37 algorithm on the checkpoint's own ``tokenizer.model``:

* the text is split at the added/special token strings (never handed to sentencepiece);
* ``legacy=True`` (4.37's default when the config leaves it unset): every other chunk is encoded on its
  own by the model as configured (with its dummy prefix, if any);
* ``legacy=False``: ``"▁"`` is prepended to the whole text, chunks are encoded without a dummy prefix
  (a chunk starting with a space is encoded behind ``<unk>`` which is then dropped), and a leading
  lone ``"▁"`` is dropped when the next token is one of the special tokens;
* BOS is prepended when ``add_bos_token``; EOS is never added (the fine-tune script's setting).

Checkpoints without ``tokenizer.model`` (byte-level BPE such as Qwen2) use `HFEncoder`, which calls
the transformers tokenizer (no slow variant exists for them).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from internvl.core.errors import DataFormatError
from internvl.data.tokenization import TextIdCache, _slow_split_tokens

SPIECE_UNDERLINE = "\u2581"


class TextEncoder(Protocol):
    """What SFT tokenisation needs from a tokenizer."""

    bos_token_id: int | None  # prepended to every sample when not None
    eos_token_id: int | None
    pad_token_id: int

    def encode(self, text: str) -> list[int]:
        """Ids of ``text`` with BOS (when the tokenizer adds one), never EOS."""
        ...

    def token_id(self, token: str) -> int:
        """Id of one special/added token string (raises `DataFormatError` when it is not a single token)."""
        ...


def _read_json(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataFormatError(f"{path}: invalid JSON ({e})") from None


def _content(value: object) -> str | None:
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) and value else None


class SentencePieceEncoder:
    """The transformers 4.37 slow ``LlamaTokenizer`` encode path on a sentencepiece model (see module doc)."""

    def __init__(
        self,
        model_file: str | os.PathLike,
        split_tokens: dict[str, tuple[int, bool, bool]],
        *,
        add_bos_token: bool = True,
        legacy: bool = True,
        bos_token: str = "<s>",
        eos_token: str = "</s>",
        unk_token: str = "<unk>",
        pad_token: str | None = None,
        special_tokens: Sequence[str] = (),
    ) -> None:
        """
        Args:
            model_file: the ``tokenizer.model``.
            split_tokens: token string -> (id, lstrip, rstrip) for every added/special token.
            add_bos_token / legacy: as the slow tokenizer's options.
            special_tokens: the tokenizer's ``all_special_tokens`` (bos/eos/unk/pad + additional ones).
        """
        import sentencepiece as spm

        self.legacy = legacy
        if legacy:
            self.sp = spm.SentencePieceProcessor(model_file=str(model_file))
        else:  # 4.37 loads the model with the dummy prefix switched off for the non-legacy split
            from sentencepiece import sentencepiece_model_pb2

            proto = sentencepiece_model_pb2.ModelProto()
            proto.ParseFromString(Path(model_file).read_bytes())
            proto.normalizer_spec.add_dummy_prefix = False
            self.sp = spm.SentencePieceProcessor(model_proto=proto.SerializeToString())
        self.split_tokens = dict(split_tokens)
        self._split_re = (
            re.compile("|".join(re.escape(t) for t in sorted(self.split_tokens, key=len, reverse=True)))
            if self.split_tokens
            else None
        )
        self.unk_token = unk_token
        self._unk_len = len(self.sp.encode(unk_token))
        self.eos_token_id = self._id(eos_token)
        self.bos_token_id = self._id(bos_token) if add_bos_token else None
        self.pad_token_id = self._id(pad_token) if pad_token else self._id(unk_token)
        self.special_ids = {self.split_tokens[t][0] for t in special_tokens if t in self.split_tokens}

    def _id(self, token: str) -> int:
        if token in self.split_tokens:
            return self.split_tokens[token][0]
        idx = self.sp.piece_to_id(token)
        if self.sp.id_to_piece(idx) != token:
            raise DataFormatError(f"token {token!r} is not in the tokenizer's vocabulary")
        return idx

    def token_id(self, token: str) -> int:
        return self._id(token)

    def _chunks(self, text: str) -> list[tuple[str, bool]]:
        """[(chunk, is_added_token)], with the added tokens' lstrip/rstrip applied to their neighbours."""
        if self._split_re is None:
            return [(text, False)]
        parts: list[str] = []
        pos = 0
        for m in self._split_re.finditer(text):
            parts += [text[pos : m.start()], m.group()]
            pos = m.end()
        parts.append(text[pos:])
        for i in range(1, len(parts), 2):
            _, lstrip, rstrip = self.split_tokens[parts[i]]
            if rstrip:
                parts[i + 1] = parts[i + 1].lstrip()
            if lstrip:
                parts[i - 1] = parts[i - 1].rstrip()
        return [(p, bool(i % 2)) for i, p in enumerate(parts) if p]

    def _encode_chunk(self, chunk: str) -> list[int]:
        if self.legacy or not chunk.startswith((SPIECE_UNDERLINE, " ")):
            return self.sp.encode(chunk)
        ids = self.sp.encode(self.unk_token + chunk)
        return ids[self._unk_len :] if len(ids) >= self._unk_len else ids

    def encode(self, text: str) -> list[int]:
        if not self.legacy and text:
            text = SPIECE_UNDERLINE + text.replace(SPIECE_UNDERLINE, " ")
        ids: list[int] = []
        for chunk, special in self._chunks(text):
            ids += [self.split_tokens[chunk][0]] if special else self._encode_chunk(chunk)
        if (
            not self.legacy
            and len(ids) > 1
            and ids[0] == self.sp.piece_to_id(SPIECE_UNDERLINE)
            and ids[1] in self.special_ids
        ):
            ids = ids[1:]
        return ([self.bos_token_id] if self.bos_token_id is not None else []) + ids

    def encode_with_offsets(self, text: str, offsets: Sequence[int]) -> tuple[list[int], list[int]] | None:
        """``encode(text)`` and, per character offset, the first token index where ``encode(text[:offset])``
        differs from it, in one pass: chunks are encoded independently, so only the chunk an offset falls
        in is re-encoded up to it. None (use prefix encodings) when an added token strips its neighbours,
        which moves character offsets."""
        if any(lstrip or rstrip for _, lstrip, rstrip in self.split_tokens.values()):
            return None
        shift = 0
        if not self.legacy and text:
            text, shift = SPIECE_UNDERLINE + text.replace(SPIECE_UNDERLINE, " "), 1
        spans: list[tuple[int, int, bool]] = []  # (start, end, is_added_token), non-empty chunks
        pos = 0
        for m in self._split_re.finditer(text) if self._split_re is not None else ():
            if m.start() > pos:
                spans.append((pos, m.start(), False))
            spans.append((m.start(), m.end(), True))
            pos = m.end()
        if pos < len(text):
            spans.append((pos, len(text), False))
        ids: list[int] = []
        first: list[int] = []  # token index where each span starts
        chunk_ids: list[list[int]] = []
        for start, end, special in spans:
            first.append(len(ids))
            cid = [self.split_tokens[text[start:end]][0]] if special else self._encode_chunk(text[start:end])
            chunk_ids.append(cid)
            ids += cid
        trim = int(
            not self.legacy
            and len(ids) > 1
            and ids[0] == self.sp.piece_to_id(SPIECE_UNDERLINE)
            and ids[1] in self.special_ids
        )
        bos = [self.bos_token_id] if self.bos_token_id is not None else []
        out = []
        for offset in offsets:
            p = offset + shift
            index = len(ids)
            for k, (start, end, special) in enumerate(spans):
                if p <= start:
                    index = first[k]
                    break
                if p < end:
                    if special:
                        index = first[k]
                    else:
                        part = self._encode_chunk(text[start:p])
                        common = next(
                            (i for i, (a, b) in enumerate(zip(part, chunk_ids[k], strict=False)) if a != b),
                            min(len(part), len(chunk_ids[k])),
                        )
                        index = first[k] + common
                    break
            out.append(max(0, index - trim) + len(bos))
        return bos + ids[trim:], out

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, **overrides: object) -> SentencePieceEncoder:
        """From a checkpoint/tokenizer directory; ``overrides`` (add_bos_token, legacy, pad_token) win over
        ``tokenizer_config.json`` like keyword arguments of ``AutoTokenizer.from_pretrained``."""
        from transformers import AutoTokenizer

        root = Path(path)
        config = _read_json(root / "tokenizer_config.json")
        special_map = _read_json(root / "special_tokens_map.json")
        unknown = set(overrides) - {"add_bos_token", "legacy", "pad_token"}
        if unknown:
            raise DataFormatError(
                f"unknown tokenizer option(s) {sorted(unknown)}; known: add_bos_token, legacy, pad_token"
            )

        def setting(name: str, default: object) -> object:
            if name in overrides:
                return overrides[name]
            for source in (special_map, config):
                # bos_token etc. may be {"content": ...} dicts; add_bos_token is a plain bool
                is_token = name.endswith("_token") and not name.startswith("add_")
                value = _content(source.get(name)) if is_token else source.get(name)
                if value is not None:
                    return value
            return default

        import sentencepiece as spm

        model_file = root / "tokenizer.model"
        sp = spm.SentencePieceProcessor(model_file=str(model_file))
        # The installed transformers only resolves ids of special tokens that the files do not list (the
        # slow tokenizer appends those to the vocabulary); a tokenizer it cannot load (remote code) has none.
        try:
            hf = AutoTokenizer.from_pretrained(str(root))
        except (OSError, ValueError, KeyError, ImportError):
            hf = _NoExtraTokens()
        split = _slow_split_tokens(root, hf, sp)
        names = ("bos_token", "eos_token", "unk_token", "pad_token")
        specials = [t for t in (setting(n, None) for n in names) if isinstance(t, str)]
        for source in (config, special_map):
            specials += [c for c in (_content(v) for v in source.get("additional_special_tokens") or []) if c]
        legacy = setting("legacy", None)
        return cls(
            model_file,
            split,
            add_bos_token=bool(setting("add_bos_token", True)),
            legacy=True if legacy is None else bool(legacy),  # 4.37: unset means legacy
            bos_token=str(setting("bos_token", "<s>")),
            eos_token=str(setting("eos_token", "</s>")),
            unk_token=str(setting("unk_token", "<unk>")),
            pad_token=setting("pad_token", None),  # type: ignore[arg-type]
            special_tokens=specials,
        )


class _NoExtraTokens:
    """Stands in for a transformers tokenizer that could not be loaded: resolves no extra token."""

    def convert_tokens_to_ids(self, token: str) -> int:
        return -1


class HFEncoder:
    """A transformers tokenizer (for vocabularies without a sentencepiece model, e.g. Qwen2's BPE)."""

    def __init__(self, tokenizer: object) -> None:
        self.tokenizer = tokenizer
        probe = tokenizer("a")["input_ids"]  # type: ignore[operator]
        bos = getattr(tokenizer, "bos_token_id", None)
        self.bos_token_id = bos if bos is not None and probe and probe[0] == bos else None
        self.eos_token_id = getattr(tokenizer, "eos_token_id", None)
        pad = getattr(tokenizer, "pad_token_id", None)
        self.pad_token_id = int(pad if pad is not None else (self.eos_token_id or 0))
        self._cache = TextIdCache()

    def _ids(self, text: str) -> tuple[int, ...]:
        # SFT encodes each record and its prefixes, and asks the image token ids per sample; prompts repeat
        return self._cache.get(text, lambda t: self.tokenizer(t, add_special_tokens=False)["input_ids"])  # type: ignore[operator]

    def encode(self, text: str) -> list[int]:
        return ([self.bos_token_id] if self.bos_token_id is not None else []) + list(self._ids(text))

    def token_id(self, token: str) -> int:
        ids = list(self._ids(token))
        if len(ids) != 1:
            raise DataFormatError(f"token {token!r} is not a single token of the tokenizer (got ids {ids})")
        return ids[0]


def load_text_encoder(path: str | os.PathLike, **overrides: object) -> TextEncoder:
    """`SentencePieceEncoder` when the directory has ``tokenizer.model``, else `HFEncoder`.

    Raises:
        DataFormatError: no tokenizer files in ``path``.
    """
    root = Path(path)
    if (root / "tokenizer.model").is_file():
        return SentencePieceEncoder.from_pretrained(root, **overrides)
    if not (root / "tokenizer.json").is_file():
        raise DataFormatError(
            f"{root}: no tokenizer.model or tokenizer.json; point at the checkpoint's tokenizer files"
        )
    from transformers import AutoTokenizer

    return HFEncoder(AutoTokenizer.from_pretrained(str(root), **overrides))
