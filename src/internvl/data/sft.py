"""SFT tokenisation and label masking for InternVL-Chat (chat spec §7.3-7.4), derived from rendered segments.

`preprocess_conversation` turns one ``conversations`` list into ``input_ids``, ``labels`` and
``attention_mask``. The prompt comes from `Conversation.segments` (the renderer the inference prompt
uses), the whole text is tokenised once, and each segment boundary is the first token where the ids of
the text up to it differ from the full ids (`tokenize_segments`).
Labels are the ids of trainable segments (each answer and its end-of-turn token) and ``IGNORE_INDEX``
elsewhere. Nothing is counted, so the reference's failure modes cannot occur (README "SFT data"):
no all-masked samples after a "tokenization mismatch", no labels shifted by a BOS or a dummy-prefix
space, no miscounted literal ``</s>`` when pad id == eos id.

A sample that cannot be made correct raises `SFTSampleError` (a `DataFormatError`) with a ``kind``:
``unknown_role``, ``alternation``, ``empty_answer``, ``placeholder_mismatch``,
``placeholder_in_answer``, ``over_length``, ``tokenizer`` (and, from `SFTDataset`, ``bad_json``,
``bad_record``, ``image`` for missing/unreadable/truncated images).

Truncation rule (``max_length``, 2048 by default): the sequence is cut on the right, and only inside
text after the last image block. If the cut would fall before the end of the last ``</img>`` the sample
is rejected (``over_length``), and also when no supervised token would remain; otherwise the kept
labels are those of the kept tokens (a cut inside an answer keeps its first part, like the reference).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import torch
from PIL import Image

from internvl.core.errors import DataFormatError
from internvl.data.conversation import (
    IMAGE_PLACEHOLDER,
    IMG_CONTEXT_TOKEN,
    IMG_END_TOKEN,
    get_conv_template,
    image_tokens,
)
from internvl.data.datasets.chat_records import (
    ChatRecord,
    ChatRecordError,
    line_source,
    parse_record,
    read_lines,
)
from internvl.data.datasets.sft_meta import SFTSource
from internvl.data.image_processing import (
    ChatImageSettings,
    find_closest_aspect_ratio,
    preprocess_image,
    target_ratios,
)
from internvl.data.text_encoders import TextEncoder
from internvl.data.transforms import build_transform, load_image

IGNORE_INDEX = -100
DEFAULT_MAX_LENGTH = 2048
USER_ROLES = ("human", "user")
ASSISTANT_ROLES = ("gpt", "assistant")
SYSTEM_ROLE = "system"
PROBLEM_KINDS = (
    "bad_json",
    "bad_record",
    "image",
    "unknown_role",
    "alternation",
    "empty_answer",
    "placeholder_mismatch",
    "placeholder_in_answer",
    "over_length",
    "tokenizer",
)


class SFTSampleError(DataFormatError):
    """A training sample that cannot be tokenised correctly; ``kind`` is one of `PROBLEM_KINDS`."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class Turns:
    """A validated conversation: the system message (None: template default) and (user, assistant) turns."""

    system: str | None
    messages: list[tuple[str, str]]  # (role "user" | "assistant", text), alternating


def parse_turns(conversations: Sequence[dict], *, keep_leading_assistant: bool = False) -> Turns:
    """Validate ``[{"from", "value"}, ...]``: an optional leading ``system`` turn (the system message), then
    human/gpt turns strictly alternating, ending with a non-empty gpt answer.

    A leading gpt turn is dropped (the reference does so), or kept when ``keep_leading_assistant``
    (internvl2_5's preprocess keeps and trains on it).

    Raises:
        SFTSampleError: unknown role, broken alternation, empty answer or no answer.
    """
    if not isinstance(conversations, (list, tuple)) or not conversations:
        raise SFTSampleError("alternation", "'conversations' must be a non-empty list of {from, value} turns")
    turns: list[tuple[str, str]] = []
    index: list[int] = []  # position of each kept turn in the record, for messages
    system = None
    for i, turn in enumerate(conversations):
        if not isinstance(turn, dict) or not isinstance(turn.get("value"), str) or "from" not in turn:
            raise SFTSampleError("alternation", f"turn {i}: expected {{'from': ..., 'value': str}}, got {turn!r:.80}")
        role = turn["from"]
        if role == SYSTEM_ROLE and i == 0:
            system = turn["value"]
            continue
        if role in USER_ROLES:
            turns.append(("user", turn["value"]))
        elif role in ASSISTANT_ROLES:
            turns.append(("assistant", turn["value"]))
        if role in USER_ROLES + ASSISTANT_ROLES:
            index.append(i)
        else:
            known = ", ".join(USER_ROLES + ASSISTANT_ROLES)
            raise SFTSampleError(
                "unknown_role",
                f"turn {i}: unknown role {role!r}; expected one of {known} (or 'system' as the first turn)",
            )
    if turns and turns[0][0] == "assistant" and not keep_leading_assistant:
        turns, index = turns[1:], index[1:]
    start = 1 if turns and turns[0][0] == "assistant" else 0  # only a kept leading answer may precede
    for k, (role, _) in enumerate(turns[start:]):
        expected = "user" if k % 2 == 0 else "assistant"
        if role != expected:
            raise SFTSampleError(
                "alternation",
                f"turn {index[k + start]}: expected a "
                f"{'human' if expected == 'user' else 'gpt'} turn, got {'human' if role == 'user' else 'gpt'} "
                "(turns must alternate human/gpt)",
            )
    if not turns or turns[-1][0] != "assistant":
        raise SFTSampleError("alternation", "the conversation must end with a gpt answer")
    for k, (role, text) in enumerate(turns):
        if role == "assistant" and not text.strip():
            raise SFTSampleError("empty_answer", f"turn {index[k]}: the gpt answer is empty")
    return Turns(system, turns)


def expand_placeholders(turns: Turns, num_image_tokens: Sequence[int]) -> Turns:
    """Replace the ``<image>`` placeholders of the user turns, in order, by the image blocks.

    Raises:
        SFTSampleError: a placeholder in an answer, or not exactly one placeholder per image.
    """
    for k, (role, text) in enumerate(turns.messages):
        if role == "assistant" and IMAGE_PLACEHOLDER in text:
            raise SFTSampleError("placeholder_in_answer", f"a gpt turn (message {k}) contains {IMAGE_PLACEHOLDER}")
    found = sum(text.count(IMAGE_PLACEHOLDER) for _, text in turns.messages)
    if found != len(num_image_tokens):
        raise SFTSampleError(
            "placeholder_mismatch",
            f"{found} {IMAGE_PLACEHOLDER} placeholder(s) in the human turns but {len(num_image_tokens)} image(s); "
            f"write exactly one {IMAGE_PLACEHOLDER} per image",
        )
    blocks = iter(num_image_tokens)
    out = []
    for role, text in turns.messages:
        pieces = text.split(IMAGE_PLACEHOLDER)
        # num_image_tokens already counts tokens per tile x tiles: one "patch" of that many tokens
        text = pieces[0] + "".join(image_tokens(1, next(blocks)) + rest for rest in pieces[1:])
        out.append((role, text))
    return Turns(turns.system, out)


def tokenize_segments(
    encoder: TextEncoder, segments: Sequence[tuple[str, bool]], *, use_offsets: bool = True
) -> tuple[list[int], list[int]]:
    """(input_ids, labels) of the concatenated segments: one tokenisation, boundaries from prefixes.

    The boundary token of a segment is the first position where the ids of the text up to it differ
    from the full ids; a token straddling a boundary (a tokenizer merge across it, e.g. ``"▁The"`` after
    ``"<bot>: "``) so belongs to the segment after it. Encoders with ``encode_with_offsets`` compute all
    boundaries in one pass (``use_offsets=False`` forces the prefix encodings, the oracle in the tests).
    """
    merged: list[list] = []
    for text, trainable in segments:  # only changes of the trainable flag are boundaries
        if merged and merged[-1][1] == trainable:
            merged[-1][0] += text
        else:
            merged.append([text, trainable])
    full = "".join(text for text, _ in merged)
    offsets = np.cumsum([len(text) for text, _ in merged[:-1]]).tolist()
    fast = getattr(encoder, "encode_with_offsets", None) if use_offsets else None
    result = fast(full, offsets) if fast is not None else None
    if result is not None:
        ids, inner = result
    else:
        ids = encoder.encode(full)
        arr = np.asarray(ids, dtype=np.int64)
        inner = []
        for offset in offsets:
            prefix = np.asarray(encoder.encode(full[:offset]), dtype=np.int64)
            n = min(len(prefix), len(arr))
            diff = np.flatnonzero(prefix[:n] != arr[:n])
            inner.append(int(diff[0]) if diff.size else n)
    arr = np.asarray(ids, dtype=np.int64)
    starts = [0, *inner, len(ids)]
    labels = np.full(len(ids), IGNORE_INDEX, dtype=np.int64)
    for (_, trainable), lo, hi in zip(merged, starts[:-1], starts[1:], strict=True):
        if trainable and hi > lo:
            labels[lo:hi] = arr[lo:hi]
    return ids, labels.tolist()


def preprocess_conversation(
    conversations: Sequence[dict],
    template: str,
    encoder: TextEncoder,
    *,
    num_image_tokens: Sequence[int] = (),
    max_length: int = DEFAULT_MAX_LENGTH,
    pad_to_max_length: bool = False,
    system_message: str | None = None,
) -> dict[str, torch.Tensor]:
    """One conversation -> ``input_ids``, ``labels``, ``attention_mask`` (long[L]).

    Args:
        conversations: ``[{"from": "human"|"gpt"|"system", "value": str}, ...]`` (JSONL record format).
        template: conversation template name (``Hermes-2`` for V1-2).
        encoder: the checkpoint's tokenizer (`internvl.data.text_encoders.load_text_encoder`).
        num_image_tokens: ``<IMG_CONTEXT>`` count per image (tokens per tile x tiles), one per placeholder;
            empty for pure text.
        max_length: longest sequence kept (see the truncation rule in the module doc).
        pad_to_max_length: right-pad to ``max_length`` (pad id, label ``IGNORE_INDEX``, mask 0); the
            collator pads batches otherwise.
        system_message: overrides the template default; a leading ``system`` turn overrides both.

    Raises:
        SFTSampleError: the sample cannot be made correct (its ``kind`` says why).
    """
    conv = get_conv_template(template)
    turns = parse_turns(conversations, keep_leading_assistant=conv.keep_leading_assistant)
    if conv.strip_messages:
        turns = Turns(turns.system, [(r, t.strip()) for r, t in turns.messages])
    turns = expand_placeholders(turns, num_image_tokens)
    system = turns.system if turns.system is not None else system_message
    if system is not None:
        conv.set_system_message(system)
    for role, text in turns.messages:
        conv.append_message(conv.roles[0] if role == "user" else conv.roles[1], text)
    ids, labels = tokenize_segments(encoder, conv.segments())

    # Visual tokens must match the images exactly (a literal "<IMG_CONTEXT>" in a text would take a feature).
    img_end = encoder.token_id(IMG_END_TOKEN)
    arr = np.asarray(ids)
    n_ctx, n_end = int((arr == encoder.token_id(IMG_CONTEXT_TOKEN)).sum()), int((arr == img_end).sum())
    if n_ctx != sum(num_image_tokens) or n_end != len(num_image_tokens):
        raise SFTSampleError(
            "tokenizer",
            f"the tokenized sample has {n_ctx} {IMG_CONTEXT_TOKEN} and {n_end} {IMG_END_TOKEN} ids for "
            f"{sum(num_image_tokens)} visual tokens in {len(num_image_tokens)} image(s): the text contains these token "
            "strings, or the tokenizer lacks the InternVL special tokens",
        )
    last_image_end = int(np.flatnonzero(arr == img_end)[-1]) + 1 if n_end else 0
    if len(ids) > max_length:
        if last_image_end > max_length:
            raise SFTSampleError(
                "over_length",
                f"{len(ids)} tokens > max_length {max_length} and the image tokens end at token "
                f"{last_image_end}; truncation would cut the image block (raise max_length or use fewer tiles)",
            )
        ids, labels = ids[:max_length], labels[:max_length]
        if all(v == IGNORE_INDEX for v in labels):
            raise SFTSampleError(
                "over_length", f"no answer token is left within max_length {max_length} (the sample needs more tokens)"
            )
    attention = [1] * len(ids)
    if pad_to_max_length and len(ids) < max_length:
        pad = max_length - len(ids)
        ids = ids + [encoder.pad_token_id] * pad
        labels = labels + [IGNORE_INDEX] * pad
        attention = attention + [0] * pad
    return {
        "input_ids": torch.tensor(ids, dtype=torch.long),
        "labels": torch.tensor(labels, dtype=torch.long),
        "attention_mask": torch.tensor(attention, dtype=torch.long),
    }


# ---------------------------------------------------------------------------------------------------
# The dataset: meta JSON sources -> tokenised samples with tiles (chat spec §7.3)

VIDEO_PLACEHOLDER = "<video>"


@dataclass(frozen=True)
class SFTDataConfig:
    """How records become samples. ``image`` holds the run's tiling options (per-dataset meta keys override).

    Attributes:
        template: conversation template (``Hermes-2`` for V1-2).
        num_image_token: visual tokens per tile (256 at 448 px with pixel shuffle 0.5).
        max_length: ``max_seq_length`` (2048 in the V1-2 recipe).
        image: image size, dynamic tiling, thumbnail, min/max tiles, pad2square, normalisation.
        num_video_frames: frames sampled uniformly from a video record (one tile each).
        system_message: overrides the template default (a record's leading system turn wins).
        on_error: ``raise`` (default) stops at the first bad sample with its dataset, file:line and reason;
            ``skip`` returns None for it, which `collate_sft` drops and counts.
        seed: seeds the per-sample augmentation (sample i always gets the same JPEG quality).
    """

    template: str
    num_image_token: int = 256
    max_length: int = DEFAULT_MAX_LENGTH
    image: ChatImageSettings = field(default_factory=ChatImageSettings)
    num_video_frames: int = 8
    system_message: str | None = None
    on_error: str = "raise"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.on_error not in ("raise", "skip"):
            raise DataFormatError(f"on_error={self.on_error!r}; expected 'raise' or 'skip'")
        get_conv_template(self.template)  # unknown template names fail here, not at the first sample
        if self.max_length < 1 or self.num_image_token < 1:
            raise DataFormatError(
                f"max_length and num_image_token must be >= 1, got {self.max_length}, {self.num_image_token}"
            )


class SFTDataset(torch.utils.data.Dataset):
    """Map-style SFT dataset over the sources of a meta file (`read_sft_meta`), concatenated in order.

    A sample is ``input_ids``, ``labels``, ``attention_mask``, ``position_ids`` (long[L]),
    ``pixel_values`` (float32[T, 3, S, S]) and ``image_flags`` (long[T]; a pure-text sample has one white
    dummy tile with flag 0, as the reference, so every batch runs the vision tower).
    """

    def __init__(self, sources: Sequence[SFTSource], encoder: TextEncoder, config: SFTDataConfig) -> None:
        self.sources = list(sources)
        self.encoder = encoder
        self.config = config
        self._lines: list[list[str]] = []
        self.index: list[tuple[int, int]] = []  # (source, 0-based line) per sample, after repeat_time
        for s, source in enumerate(self.sources):
            lines = read_lines(source.annotation)
            self._lines.append(lines)
            kept = [i for i, line in enumerate(lines) if line.strip()]
            self.index += [(s, kept[k]) for k in source.sample_lines(len(kept))]
        self._lengths: list[int] | None = None

    def __len__(self) -> int:
        return len(self.index)

    def record(self, i: int) -> ChatRecord:
        """The parsed `ChatRecord` of sample ``i`` (raises `ChatRecordError` with file:line)."""
        s, line = self.index[i]
        return parse_record(self._lines[s][line], line_source(self.sources[s].annotation, line))

    def settings_for(self, source: SFTSource) -> ChatImageSettings:
        """The run's image settings with the dataset's meta overrides applied."""
        overrides = {
            k: getattr(source, k)
            for k in ("max_dynamic_patch", "min_dynamic_patch", "use_thumbnail", "dynamic_image_size")
            if getattr(source, k) is not None
        }
        return replace(self.config.image, **overrides)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor] | None:
        s, _ = self.index[i]
        source = self.sources[s]
        try:
            record = self.record(i)
            return self.build_sample(
                record, source, generator=torch.Generator().manual_seed(self.config.seed * 1_000_003 + i)
            )
        except DataFormatError as e:
            if self.config.on_error == "skip":
                return None
            prefix = f"dataset {source.name!r}: "
            message = str(e) if str(e).startswith(str(source.annotation)) else f"{_where(self, i)}: {e}"
            raise SFTSampleError(getattr(e, "kind", "bad_record"), prefix + message) from None

    def conversation_for(self, record: ChatRecord, num_frames: int = 0) -> list[dict]:
        """The record's turns with the placeholder rules applied: ``<image>\\n`` inserted for one image
        without a placeholder, ``<video>`` replaced by ``Frame-k: <image>`` lines (``num_frames``)."""
        conversations = [dict(t) for t in record.conversations]
        if len(record.images) == 1:
            _insert_placeholder(conversations, IMAGE_PLACEHOLDER + "\n")
        elif record.video:
            _insert_placeholder(conversations, VIDEO_PLACEHOLDER + "\n")
            lines = "\n".join(f"Frame-{k + 1}: {IMAGE_PLACEHOLDER}" for k in range(num_frames)) + "\n"
            for turn in conversations:
                turn["value"] = turn["value"].replace(VIDEO_PLACEHOLDER + "\n", lines, 1)
        return conversations

    @staticmethod
    def tile_budget(record: ChatRecord, settings: ChatImageSettings) -> int:
        """Most tiles per image: ``max_dynamic_patch``, split among several images as the reference."""
        n = len(record.images)
        return settings.max_dynamic_patch if n <= 1 else max(1, settings.max_dynamic_patch // n)

    def build_sample(
        self, record: ChatRecord, source: SFTSource, generator: torch.Generator | None = None
    ) -> dict[str, torch.Tensor]:
        """One `ChatRecord` of ``source`` -> the sample tensors (see the class doc)."""
        cfg = self.config
        settings = self.settings_for(source)
        kind = "train_chat" if source.data_augment else "chat"
        transform = build_transform(kind, settings.image_size, settings.norm, generator=generator)
        if record.images:
            max_num = self.tile_budget(record, settings)
            tiles = [preprocess_image(_load(source.image_path(p)), settings, max_num, transform) for p in record.images]
            conversations, flags = self.conversation_for(record), 1
        elif record.video:
            frames = _video_frames(source.image_path(record.video), record.clip, cfg.num_video_frames)
            one_tile = ChatImageSettings(
                image_size=settings.image_size, norm=settings.norm, pad2square=settings.pad2square
            )
            tiles = [preprocess_image(f, one_tile, 1, transform) for f in frames]
            conversations, flags = self.conversation_for(record, len(frames)), 1
        else:
            tiles = [preprocess_image(Image.new("RGB", (224, 224), (255, 255, 255)), settings, 1, transform)]
            conversations, flags = self.conversation_for(record), 0
        num_tokens = [cfg.num_image_token * t.shape[0] for t in tiles] if flags else []
        out = preprocess_conversation(
            conversations,
            cfg.template,
            self.encoder,
            num_image_tokens=num_tokens,
            max_length=cfg.max_length,
            system_message=cfg.system_message,
        )
        pixel_values = torch.cat(tiles)
        out["position_ids"] = position_ids(out["attention_mask"])
        out["pixel_values"] = pixel_values
        out["image_flags"] = torch.full((pixel_values.shape[0],), flags, dtype=torch.long)
        return out

    def estimate_length(self, record: ChatRecord, source: SFTSource) -> int:
        """Tokens of the record for length grouping: its ``length`` field, else the tokens of its joined
        texts plus the visual tokens (exact tile counts when ``width``/``height`` are given, else the tile
        budget ``max_dynamic_patch`` + thumbnail). The reference caches this by character length and
        adds the image tokens only on a cache hit; here every record gets its own estimate."""
        if record.length is not None:
            return record.length
        settings = self.settings_for(source)
        n = len(self.encoder.encode("\n".join(t["value"] for t in record.conversations)))
        if record.video:
            return n + self.config.num_image_token * self.config.num_video_frames
        if not record.images:
            return n
        budget = self.tile_budget(record, settings)
        if record.width and record.height:
            tiles = count_tiles(record.width, record.height, settings, budget)
        else:
            tiles = budget + int(settings.use_thumbnail) if settings.dynamic_image_size else 1
        return n + self.config.num_image_token * tiles * len(record.images)

    @property
    def lengths(self) -> list[int]:
        """`estimate_length` of every sample (computed once; records that fail to parse count as 0)."""
        if self._lengths is None:
            cache: dict[tuple[int, int], int] = {}
            out = []
            for i, key in enumerate(self.index):
                if key not in cache:
                    try:
                        cache[key] = self.estimate_length(self.record(i), self.sources[key[0]])
                    except ChatRecordError:
                        cache[key] = 0
                out.append(cache[key])
            self._lengths = out
        return self._lengths


def count_tiles(width: int, height: int, settings: ChatImageSettings, max_num: int) -> int:
    """Tiles `preprocess_image` makes for an image of this size (no pixels needed)."""
    if not settings.dynamic_image_size:
        return 1
    if settings.pad2square:
        width = height = max(width, height)
    cols, rows = find_closest_aspect_ratio(
        width / height, target_ratios(settings.min_dynamic_patch, max_num), width, height, settings.image_size
    )
    return cols * rows + (1 if settings.use_thumbnail and cols * rows > 1 else 0)


def position_ids(attention_mask: torch.Tensor) -> torch.Tensor:
    """``cumsum(mask) - 1`` with padded positions set to 1 (the reference's layout)."""
    pos = attention_mask.long().cumsum(-1) - 1
    return pos.masked_fill(attention_mask == 0, 1)


def _where(ds: SFTDataset, i: int) -> str:
    s, line = ds.index[i]
    return line_source(ds.sources[s].annotation, line)


def _insert_placeholder(conversations: list[dict], placeholder: str) -> None:
    """Prepend ``placeholder`` to the first human turn when the record has none (the reference prepends
    to the first turn whatever its role, so a leading gpt turn loses the image)."""
    token = placeholder.strip()
    if any(token in t["value"] for t in conversations):
        return
    for turn in conversations:
        if turn["from"] in USER_ROLES:
            turn["value"] = placeholder + turn["value"]
            return


def _load(path: str) -> Image.Image:
    if path.startswith("s3://"):
        raise SFTSampleError("image", f"image {path}: s3:// paths need a storage client; copy the images locally")
    try:
        return load_image(path)
    except DataFormatError as e:
        raise SFTSampleError("image", str(e)) from None


def _video_frames(path: str, clip: tuple[float, float] | None, num_frames: int) -> list:
    from internvl.data.video import get_index, read_frames, video_info

    if not os.path.isfile(path):
        raise SFTSampleError("image", f"video file not found: {path}")
    n, fps = video_info(path)
    return read_frames(path, get_index(clip, fps, n - 1, first_idx=0, num_segments=num_frames))
