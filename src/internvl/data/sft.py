"""SFT tokenisation and label masking for InternVL-Chat (chat spec §7.3-7.4), derived from rendered segments.

`preprocess_conversation` turns one ``conversations`` list into ``input_ids``, ``labels`` and
``attention_mask``. The prompt comes from `Conversation.segments` (the renderer the inference prompt
uses), the whole text is tokenised once, and each segment boundary is located by tokenising the text
up to it: the boundary token is the first position where that prefix's ids and the full ids differ.
Labels are the ids of trainable segments (each answer and its end-of-turn token) and ``IGNORE_INDEX``
elsewhere. Nothing is counted, so the reference's failure modes cannot occur (README "SFT data"):
no all-masked samples after a "tokenization mismatch", no labels shifted by a BOS or a dummy-prefix
space, no miscounted literal ``</s>`` when pad id == eos id.

A sample that cannot be made correct raises `SFTSampleError` (a `DataFormatError`) with a ``kind``:
``unknown_role``, ``alternation``, ``empty_answer``, ``placeholder_mismatch``,
``placeholder_in_answer``, ``over_length``, ``tokenizer``.

Truncation rule (``max_length``, 2048 by default): the sequence is cut on the right, and only inside
text after the last image block. If the cut would fall before the end of the last ``</img>`` the sample
is rejected (``over_length``), and also when no supervised token would remain; otherwise the kept
labels are those of the kept tokens (a cut inside an answer keeps its first part, like the reference).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from internvl.core.errors import DataFormatError
from internvl.data.conversation import (
    IMAGE_PLACEHOLDER,
    IMG_CONTEXT_TOKEN,
    IMG_END_TOKEN,
    IMG_START_TOKEN,
    get_conv_template,
)
from internvl.data.text_encoders import TextEncoder

IGNORE_INDEX = -100
DEFAULT_MAX_LENGTH = 2048
USER_ROLES = ("human", "user")
ASSISTANT_ROLES = ("gpt", "assistant")
SYSTEM_ROLE = "system"
PROBLEM_KINDS = ("unknown_role", "alternation", "empty_answer", "placeholder_mismatch", "placeholder_in_answer",
                 "over_length", "tokenizer")


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
                "unknown_role", f"turn {i}: unknown role {role!r}; expected one of {known} (or 'system' as the first turn)"
            )
    if turns and turns[0][0] == "assistant" and not keep_leading_assistant:
        turns, index = turns[1:], index[1:]
    start = 1 if turns and turns[0][0] == "assistant" else 0  # only a kept leading answer may precede
    for k, (role, _) in enumerate(turns[start:]):
        expected = "user" if k % 2 == 0 else "assistant"
        if role != expected:
            raise SFTSampleError(
                "alternation", f"turn {index[k + start]}: expected a "
                f"{'human' if expected == 'user' else 'gpt'} turn, got {'human' if role == 'user' else 'gpt'} "
                "(turns must alternate human/gpt)",
            )
    if not turns or turns[-1][0] != "assistant":
        raise SFTSampleError("alternation", "the conversation must end with a gpt answer")
    for k, (role, text) in enumerate(turns):
        if role == "assistant" and not text.strip():
            raise SFTSampleError("empty_answer", f"turn {index[k]}: the gpt answer is empty")
    return Turns(system, turns)


def image_block(num_tokens: int) -> str:
    """``<img>`` + ``<IMG_CONTEXT>`` x num_tokens + ``</img>`` (num_tokens = tokens per tile x tiles)."""
    return IMG_START_TOKEN + IMG_CONTEXT_TOKEN * num_tokens + IMG_END_TOKEN


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
        text = pieces[0] + "".join(image_block(next(blocks)) + rest for rest in pieces[1:])
        out.append((role, text))
    return Turns(turns.system, out)


def tokenize_segments(encoder: TextEncoder, segments: Sequence[tuple[str, bool]]) -> tuple[list[int], list[int]]:
    """(input_ids, labels) of the concatenated segments: one tokenisation, boundaries from prefixes.

    A token straddling a boundary (a tokenizer merge across it, e.g. ``"▁The"`` after ``"<bot>: "``)
    belongs to the segment after the boundary.
    """
    merged: list[list] = []
    for text, trainable in segments:  # only changes of the trainable flag are boundaries
        if merged and merged[-1][1] == trainable:
            merged[-1][0] += text
        else:
            merged.append([text, trainable])
    full = "".join(text for text, _ in merged)
    ids = encoder.encode(full)
    arr = np.asarray(ids, dtype=np.int64)
    starts = [0]
    offset = 0
    for text, _ in merged[:-1]:
        offset += len(text)
        prefix = np.asarray(encoder.encode(full[:offset]), dtype=np.int64)
        n = min(len(prefix), len(arr))
        diff = np.flatnonzero(prefix[:n] != arr[:n])
        starts.append(int(diff[0]) if diff.size else n)
    starts.append(len(ids))
    labels = np.full(len(ids), IGNORE_INDEX, dtype=np.int64)
    for (_, trainable), lo, hi in zip(merged, starts[:-1], starts[1:]):
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

    if num_image_tokens:
        img_end = encoder.token_id(IMG_END_TOKEN)
        ctx = encoder.token_id(IMG_CONTEXT_TOKEN)
        arr = np.asarray(ids)
        n_ctx, n_end = int((arr == ctx).sum()), int((arr == img_end).sum())
        if n_ctx != sum(num_image_tokens) or n_end != len(num_image_tokens):
            raise SFTSampleError(
                "tokenizer", f"the tokenizer produced {n_ctx} {IMG_CONTEXT_TOKEN} and {n_end} {IMG_END_TOKEN} ids for "
                f"{sum(num_image_tokens)} visual tokens in {len(num_image_tokens)} image(s); add the InternVL tokens "
                "to the tokenizer as special tokens",
            )
        last_image_end = int(np.flatnonzero(arr == img_end)[-1]) + 1
    else:
        last_image_end = 0
    if len(ids) > max_length:
        if last_image_end > max_length:
            raise SFTSampleError(
                "over_length", f"{len(ids)} tokens > max_length {max_length} and the image tokens end at token "
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
