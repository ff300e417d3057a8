"""The model card's chat API on our InternVL-Chat model: chat, batch_chat, stream_chat, video_chat.

Thin wrappers over `internvl.inference.pipeline.ChatPipeline` with the card's signatures (loading,
saving and the card's ``ChatModel`` live in `internvl.inference.loading` / `internvl.inference.card`
and are re-exported here, so existing imports keep working).

Mirrors ``model.chat`` / ``model.batch_chat`` of the reference remote code (chat spec §4) with the same
prompts, the same end-of-turn stop token and the same decoding, so greedy answers match. Deliberate
deviations (documented in README.md, InternVL-Chat-V1-2 section):

* Nothing the caller passes is mutated: the reference writes ``eos_token_id`` into the caller's
  generation-config dict, appends to the caller's history list and leaves ``tokenizer.padding_side``
  set to "left" after ``batch_chat``. Here history is returned as a new list.
* ``batch_chat`` uses the same system message as ``chat`` (the reference's batch_chat always used the
  template default, InternVL#463).
* Streaming (`stream_chat`) is a plain generator: generation runs in a background thread internally and
  the text is cut at the end-of-turn separator (the card's ``new_text == sep`` check never fires).
  Closing the generator early cancels generation and joins the thread. The card's own recipe (a
  ``TextIteratorStreamer`` in ``generation_config``, ``model.chat`` in a Thread, ``model.conv_template``)
  works unchanged on `ChatModel`.
* `load_tokenizer` passes ``legacy=True`` when the tokenizer config leaves it unset, reproducing the
  reference transformers' split after special tokens on transformers 5.x.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from typing import Any

import torch

from internvl.data.conversation import IMG_CONTEXT_TOKEN
from internvl.inference.card import ChatModel, as_chat_model
from internvl.inference.loading import (
    bind_tokenizer,
    load_chat_model,
    load_tokenizer,
    save_chat_model,
    stop_token_ids,
)
from internvl.inference.pipeline import ChatPipeline, image_settings, load_tiles
from internvl.inference.requests import ChatRequest, GenerationOptions, Visuals
from internvl.inference.streaming import CancelGeneration, TextPieceStreamer, cut_at_stop  # noqa: F401
from internvl.models.internvl_chat import InternVLChatModel

__all__ = [
    "ChatModel",
    "as_chat_model",
    "batch_chat",
    "bind_tokenizer",
    "chat",
    "cut_at_stop",
    "image_settings",
    "load_chat_model",
    "load_images",
    "load_tokenizer",
    "save_chat_model",
    "stop_token_ids",
    "stream_chat",
    "video_chat",
]

log = logging.getLogger(__name__)

History = list[tuple[str, str]]


def load_images(
    model: InternVLChatModel, images: Sequence[Any], max_num: int | None = None, card: bool = False
) -> tuple[torch.Tensor, list[int]]:
    """Paths or PIL images -> (float32[tiles, 3, S, S], tiles per image), with the checkpoint's settings.

    ``card=True`` uses the V1-2 card's exact path, see `internvl.inference.pipeline.load_tiles`.
    """
    return load_tiles(image_settings(model), images, max_num=max_num, card=card)


def _request(
    question: str,
    pixel_values: torch.Tensor | None,
    num_patches_list: Sequence[int] | None,
    generation_config: Any,
    history: Sequence[tuple[str, str]] | None = None,
    system_message: str | None = None,
) -> ChatRequest:
    return ChatRequest(
        question,
        visuals=Visuals.from_tiles(pixel_values, num_patches_list),
        history=history,
        system_message=system_message,
        options=GenerationOptions.from_value(generation_config),
    )


def chat(
    model: InternVLChatModel,
    tokenizer: Any,
    pixel_values: torch.Tensor | None,
    question: str,
    generation_config: dict | Any = None,
    history: Sequence[tuple[str, str]] | None = None,
    return_history: bool = False,
    num_patches_list: Sequence[int] | None = None,
    system_message: str | None = None,
    template: str | None = None,
    verbose: bool = False,
) -> str | tuple[str, History]:
    """One assistant turn, as the card's ``model.chat``.

    Args:
        pixel_values: float[tiles, 3, S, S] of all images (None for pure text).
        question: the user turn. With images, no history and no ``<image>``, ``"<image>\\n"`` is prepended.
        generation_config: ``dict(max_new_tokens=..., do_sample=...)`` passed to ``generate`` (not mutated).
        history: previous (question, answer) pairs; ``<image>`` placeholders in them are expanded.
        num_patches_list: tiles per image; ``[n1, n2]`` with ``"Image-1: <image>\\nImage-2: <image>\\n..."``
            for separate images, None to treat all tiles as one image ("combined").
        system_message: overrides the checkpoint's / template's system message for this call.
        verbose: log the prompt (image blocks shown as ``<image>``) at INFO level, as the reference prints it.

    Returns:
        The answer, or (answer, new history) with ``return_history``.
    """
    pipe = ChatPipeline(model, tokenizer, template=template)
    req = _request(question, pixel_values, num_patches_list, generation_config, history, system_message)
    if verbose:
        log.info("%s", pipe.prompt(req).replace(IMG_CONTEXT_TOKEN, "").replace("<img></img>", "<image>"))
    response = pipe.answer(req)
    if return_history:
        return response.text, list(response.history)
    return response.text


def batch_chat(
    model: InternVLChatModel,
    tokenizer: Any,
    pixel_values: torch.Tensor | None,
    questions: Sequence[str],
    generation_config: dict | Any = None,
    num_patches_list: Sequence[int] | None = None,
    history: Any = None,
    return_history: bool = False,
    system_message: str | None = None,
    template: str | None = None,
    image_counts: Sequence[int] | None = None,
) -> list[str]:
    """Answer several independent single-turn questions in one left-padded batch.

    ``num_patches_list[i]`` is the tile count of sample i's image (``pixel_values`` holds all tiles in
    sample order). Greedy answers equal those of one-by-one `chat` calls.
    """
    if history is not None or return_history:
        raise NotImplementedError("batch_chat does not support history (as in the reference); use chat()")
    if image_counts is not None and num_patches_list is None:
        num_patches_list = image_counts  # deprecated alias of the reference
    from internvl.core.errors import DataFormatError

    if pixel_values is not None:
        if num_patches_list is None:
            raise DataFormatError("batch_chat with pixel_values needs num_patches_list (tiles per question)")
        if len(num_patches_list) != len(questions):
            raise DataFormatError(
                f"{len(questions)} questions but num_patches_list has {len(num_patches_list)} entries"
            )
        Visuals.from_tiles(pixel_values, num_patches_list)  # the tile count check
        offsets = [sum(num_patches_list[:i]) for i in range(len(questions) + 1)]
        tiles = [pixel_values[offsets[i] : offsets[i + 1]] for i in range(len(questions))]
        patches: list[list[int] | None] = [[n] for n in num_patches_list]
    else:
        if num_patches_list:
            raise DataFormatError(f"num_patches_list={list(num_patches_list)} given without pixel_values")
        tiles, patches = [None] * len(questions), [None] * len(questions)
    options = GenerationOptions.from_value(generation_config)
    requests = [
        _request(q, t, n, options, system_message=system_message)
        for q, t, n in zip(questions, tiles, patches, strict=True)
    ]
    pipe = ChatPipeline(model, tokenizer, template=template)
    return [r.text for r in pipe.answer_batch(requests)]


def stream_chat(
    model: InternVLChatModel,
    tokenizer: Any,
    pixel_values: torch.Tensor | None,
    question: str,
    generation_config: dict | Any = None,
    history: Sequence[tuple[str, str]] | None = None,
    num_patches_list: Sequence[int] | None = None,
    system_message: str | None = None,
    template: str | None = None,
    timeout: float | None = None,
) -> Iterator[str]:
    """Yield the answer in pieces as it is generated; ``"".join(pieces)`` equals `chat`'s answer.

    No threads are needed by the caller: ``generate`` runs in a background thread feeding a
    `TextPieceStreamer` (which never releases text a later token could change, see
    `internvl.inference.streaming`); stopping the iteration early cancels generation.
    """
    pipe = ChatPipeline(model, tokenizer, template=template)
    req = _request(question, pixel_values, num_patches_list, generation_config, history, system_message)
    yield from pipe.stream(req, timeout=timeout)


def video_chat(
    model: InternVLChatModel,
    tokenizer: Any,
    video_path: str | os.PathLike,
    question: str,
    generation_config: dict | Any = None,
    num_segments: int = 8,
    bound: Sequence[float] | None = None,
    history: Sequence[tuple[str, str]] | None = None,
    return_history: bool = False,
    system_message: str | None = None,
) -> str | tuple[str, History]:
    """The card's video chat: ``num_segments`` frames, prompt ``"Frame1: <image>\\n...Frame8: <image>\\n" + question``.

    V1-2 was not trained on video; the card warns that such answers are weak.
    """
    pipe = ChatPipeline(model, tokenizer)
    visuals = pipe.prepare_video(video_path, num_segments=num_segments, bound=bound)
    req = ChatRequest(
        question,
        visuals=visuals,
        history=history,
        system_message=system_message,
        options=GenerationOptions.from_value(generation_config),
    )
    response = pipe.answer(req)
    if return_history:
        return response.text, list(response.history)
    return response.text
