"""The model card's chat API on our InternVL-Chat model: chat, batch_chat, streaming, video, loading.

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
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from internvl.core.compat import persist_tokenizer_flags, tokenizer_load_kwargs
from internvl.core.errors import ConfigError, DataFormatError
from internvl.data.conversation import (
    IMG_CONTEXT_TOKEN,
    Conversation,
    add_image_placeholder,
    build_query,
    get_conv_template,
    resolve_system_message,
)
from internvl.data.image_processing import ChatImageSettings, card_preprocess_image, preprocess_image
from internvl.data.video import load_video, video_prompt_prefix
from internvl.inference.streaming import CancelGeneration, TextPieceStreamer, cut_at_stop
from internvl.models.internvl_chat import InternVLChatModel

log = logging.getLogger(__name__)

History = list[tuple[str, str]]


# -- loading / saving --------------------------------------------------------------------------------
class ChatModel(InternVLChatModel):
    """`InternVLChatModel` with the model card's methods: ``model.chat(tokenizer, pixel_values, question, ...)``.

    Defined here rather than in ``internvl.models`` so that models never import the data/inference
    layers; weights, config and checkpoints are identical (``ChatModel.from_pretrained`` loads them).
    """

    def chat(
        self, tokenizer: Any, pixel_values: torch.Tensor | None, question: str, generation_config: Any = None, **kwargs: Any
    ) -> Any:
        """See `internvl.inference.chat.chat`."""
        return chat(self, tokenizer, pixel_values, question, generation_config, **kwargs)

    def batch_chat(
        self, tokenizer: Any, pixel_values: torch.Tensor | None, questions: Sequence[str], generation_config: Any = None, **kwargs: Any
    ) -> Any:
        """See `internvl.inference.chat.batch_chat`."""
        return batch_chat(self, tokenizer, pixel_values, questions, generation_config, **kwargs)

    def stream_chat(
        self, tokenizer: Any, pixel_values: torch.Tensor | None, question: str, generation_config: Any = None, **kwargs: Any
    ) -> Any:
        """See `internvl.inference.chat.stream_chat`."""
        return stream_chat(self, tokenizer, pixel_values, question, generation_config, **kwargs)

    def video_chat(
        self, tokenizer: Any, video_path: str | os.PathLike, question: str, generation_config: Any = None, **kwargs: Any
    ) -> Any:
        """See `internvl.inference.chat.video_chat`."""
        return video_chat(self, tokenizer, video_path, question, generation_config, **kwargs)

    @property
    def conv_template(self) -> Conversation:
        """The checkpoint's conversation template with its resolved system message (the card reads
        ``model.conv_template.sep`` in its streaming example)."""
        name = _template(self, None)
        conv = get_conv_template(name)
        conv.set_system_message(resolve_system_message(name, self.system_message))
        return conv


def as_chat_model(model: InternVLChatModel) -> ChatModel:
    """Give a model loaded with plain ``InternVLChatModel.from_pretrained`` the card's methods, in place.

    ``ChatModel`` adds methods only (same parameters, buffers and config), so switching the class is
    safe; the same object is returned.
    """
    if not isinstance(model, InternVLChatModel):
        raise TypeError(f"as_chat_model expects an InternVLChatModel, got {type(model).__name__}")
    if not isinstance(model, ChatModel):
        model.__class__ = ChatModel
    return model  # type: ignore[return-value]


def load_tokenizer(path: str | os.PathLike) -> Any:
    """The checkpoint's tokenizer; the slow SentencePiece one like the card (``use_fast=False``) when available.

    Loaded with the reference's ``legacy`` split where the config leaves it unset
    (`internvl.core.compat.tokenizer_load_kwargs`), so prompt ids match on transformers 5.x.
    """
    from transformers import AutoTokenizer

    kwargs = tokenizer_load_kwargs(path)
    try:
        return AutoTokenizer.from_pretrained(str(path), use_fast=False, **kwargs)
    except (ValueError, OSError, ImportError):
        return AutoTokenizer.from_pretrained(str(path), **kwargs)


def load_chat_model(
    path: str | os.PathLike,
    *,
    dtype: str | torch.dtype | None = None,
    device_map: str | dict | None = None,
    load_in_8bit: bool = False,
    **kwargs: Any,
) -> tuple[ChatModel, Any]:
    """(model, tokenizer) from a checkpoint directory; see `InternVLChatModel.from_pretrained` for options."""
    model = ChatModel.from_pretrained(path, dtype=dtype, device_map=device_map, load_in_8bit=load_in_8bit, **kwargs)
    tokenizer = load_tokenizer(path)
    bind_tokenizer(model, tokenizer)
    return model, tokenizer


def bind_tokenizer(model: InternVLChatModel, tokenizer: Any) -> int:
    """Set ``model.img_context_token_id`` from the tokenizer (the reference does this inside chat())."""
    token_id = tokenizer.convert_tokens_to_ids(IMG_CONTEXT_TOKEN)
    if token_id is None or token_id == tokenizer.unk_token_id:
        raise ConfigError(f"the tokenizer has no {IMG_CONTEXT_TOKEN} token; it is not an InternVL-Chat tokenizer")
    model.img_context_token_id = int(token_id)
    return int(token_id)


def stop_token_ids(model: InternVLChatModel, tokenizer: Any, template: str | None = None) -> list[int]:
    """Ids that end an assistant turn: the template separator (``<|im_end|>``), then the tokenizer's eos."""
    sep = get_conv_template(_template(model, template)).stop_sep
    ids = [_sep_id(tokenizer, sep)]
    if tokenizer.eos_token_id is not None:
        ids.append(int(tokenizer.eos_token_id))
    return list(dict.fromkeys(ids))


def save_chat_model(model: InternVLChatModel, tokenizer: Any, path: str | os.PathLike, **kwargs: Any) -> Path:
    """Save model, tokenizer and a generation_config.json whose ``eos_token_id`` holds the end-of-turn ids."""
    model.save_pretrained(path, stop_token_ids=stop_token_ids(model, tokenizer), **kwargs)
    tokenizer.save_pretrained(str(path))
    persist_tokenizer_flags(tokenizer, path)
    return Path(path)


# -- inputs ------------------------------------------------------------------------------------------
def image_settings(model: InternVLChatModel) -> ChatImageSettings:
    """Preprocessing settings of this checkpoint (448px single tile for V1-2)."""
    return ChatImageSettings.from_config_dict(model.config.to_dict())


def load_images(
    model: InternVLChatModel, images: Sequence[Any], max_num: int | None = None, card: bool = False
) -> tuple[torch.Tensor, list[int]]:
    """Paths or PIL images -> (float32[tiles, 3, S, S], tiles per image), with the checkpoint's settings.

    ``card=True`` uses the V1-2 card's exact path (resize before RGB conversion: NEAREST for palette
    images), see `card_preprocess_image`; the default is the reference's eval/training transform.
    """
    settings = image_settings(model)
    if card:
        if settings.dynamic_image_size:
            raise ConfigError("card=True is the single-tile V1-2 card path; this checkpoint uses dynamic tiling")
        tiles = [card_preprocess_image(im, settings) for im in images]
    else:
        tiles = [preprocess_image(im, settings, max_num=max_num) for im in images]
    return torch.cat(tiles), [t.shape[0] for t in tiles]


def _template(model: InternVLChatModel, template: str | None) -> str:
    name = template or model.config.template
    if not name:
        raise ConfigError("the checkpoint config has no 'template'; pass template= (e.g. 'Hermes-2')")
    return name


def _sep_id(tokenizer: Any, sep: str) -> int:
    token_id = tokenizer.convert_tokens_to_ids(sep)
    if token_id is None or (token_id == tokenizer.unk_token_id and sep != tokenizer.unk_token):
        if tokenizer.eos_token_id is None:
            raise ConfigError(f"the tokenizer has neither the end-of-turn token {sep!r} nor an eos token")
        log.warning("end-of-turn token %r is not in the vocabulary; stopping at eos instead", sep)
        return int(tokenizer.eos_token_id)
    return int(token_id)


def _generation_kwargs(model: InternVLChatModel, tokenizer: Any, generation_config: Any, sep: str) -> dict:
    """A copy of the caller's settings with the end-of-turn token as eos (as the reference's chat())."""
    if generation_config is None:
        gen: dict[str, Any] = {}
    elif isinstance(generation_config, dict):
        gen = dict(generation_config)
    else:  # a transformers GenerationConfig
        gen = {"generation_config": generation_config}
    gen["eos_token_id"] = _sep_id(tokenizer, sep)
    if "pad_token_id" not in gen and model.generation_config.pad_token_id is None:
        gen["pad_token_id"] = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else gen["eos_token_id"]
    return gen


def _check_patches(pixel_values: torch.Tensor | None, num_patches_list: Sequence[int] | None) -> list[int]:
    if pixel_values is None:
        if num_patches_list:
            raise DataFormatError(f"num_patches_list={list(num_patches_list)} given without pixel_values")
        return []
    patches = list(num_patches_list) if num_patches_list is not None else [pixel_values.shape[0]]
    if sum(patches) != pixel_values.shape[0]:
        raise DataFormatError(
            f"pixel_values has {pixel_values.shape[0]} tiles but num_patches_list={patches} sums to {sum(patches)}"
        )
    return patches


def _decode(tokenizer: Any, ids: torch.Tensor, sep: str) -> list[str]:
    return [text.split(sep)[0].strip() for text in tokenizer.batch_decode(ids, skip_special_tokens=True)]


def _prepare(
    model: InternVLChatModel,
    tokenizer: Any,
    pixel_values: torch.Tensor | None,
    question: str,
    history: Sequence[tuple[str, str]] | None,
    num_patches_list: Sequence[int] | None,
    system_message: str | None,
    template: str | None,
) -> tuple[dict[str, Any], str, str]:
    """Tokenised prompt (``input_ids``, ``attention_mask``, the ``query`` string), the question as
    stored in history, and the stop separator."""
    bind_tokenizer(model, tokenizer)
    patches = _check_patches(pixel_values, num_patches_list)
    name = _template(model, template)
    system = resolve_system_message(name, model.system_message, system_message)
    stored_question = add_image_placeholder(question, bool(patches), history)
    query, sep = build_query(
        name,
        question,
        history=history,
        num_patches_list=patches,
        num_image_token=model.num_image_token,
        system_message=system,
    )
    inputs = tokenizer(query, return_tensors="pt")
    return {"input_ids": inputs["input_ids"], "attention_mask": inputs["attention_mask"], "query": query}, stored_question, sep


def _pixels(model: InternVLChatModel, pixel_values: torch.Tensor | None) -> torch.Tensor | None:
    if pixel_values is None:
        return None
    return pixel_values.to(model.vision_model.device, model.vision_model.dtype)


# -- chat --------------------------------------------------------------------------------------------
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

    Returns:
        The answer, or (answer, new history) with ``return_history``.
    """
    inputs, stored_question, sep = _prepare(
        model, tokenizer, pixel_values, question, history, num_patches_list, system_message, template
    )
    gen = _generation_kwargs(model, tokenizer, generation_config, sep)
    if verbose:  # the reference prints the prompt with each image block shown as <image>
        print(inputs["query"].replace(IMG_CONTEXT_TOKEN, "").replace("<img></img>", "<image>"))
    out = model.generate(
        pixel_values=_pixels(model, pixel_values), input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], **gen
    )
    response = _decode(tokenizer, out, sep)[0]
    if return_history:
        return response, [*(history or []), (stored_question, response)]
    return response


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
    bind_tokenizer(model, tokenizer)
    name = _template(model, template)
    system = resolve_system_message(name, model.system_message, system_message)
    if pixel_values is not None:
        if num_patches_list is None:
            raise DataFormatError("batch_chat with pixel_values needs num_patches_list (tiles per question)")
        if len(num_patches_list) != len(questions):
            raise DataFormatError(
                f"{len(questions)} questions but num_patches_list has {len(num_patches_list)} entries"
            )
        _check_patches(pixel_values, num_patches_list)
    elif num_patches_list:
        raise DataFormatError(f"num_patches_list={list(num_patches_list)} given without pixel_values")
    queries, sep = [], ""
    for i, question in enumerate(questions):
        patches = [num_patches_list[i]] if pixel_values is not None else []
        query, sep = build_query(
            name, question, num_patches_list=patches, num_image_token=model.num_image_token, system_message=system
        )
        queries.append(query)
    input_ids, attention_mask = _left_pad(tokenizer, queries)
    gen = _generation_kwargs(model, tokenizer, generation_config, sep)
    out = model.generate(
        pixel_values=_pixels(model, pixel_values), input_ids=input_ids, attention_mask=attention_mask, **gen
    )
    return _decode(tokenizer, out, sep)


def _left_pad(tokenizer: Any, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Tokenise each text and left-pad (what the reference gets from padding_side='left'), without
    touching the tokenizer's settings; pads with pad, else unk (the Yi tokenizer's pad is <unk>)."""
    pad = tokenizer.pad_token_id
    if pad is None:
        pad = tokenizer.unk_token_id if tokenizer.unk_token_id is not None else 0
    encoded = [tokenizer(t)["input_ids"] for t in texts]
    width = max(len(e) for e in encoded)
    ids = torch.full((len(encoded), width), int(pad), dtype=torch.long)
    mask = torch.zeros((len(encoded), width), dtype=torch.long)
    for row, e in enumerate(encoded):
        ids[row, width - len(e):] = torch.tensor(e, dtype=torch.long)
        mask[row, width - len(e):] = 1
    return ids, mask


# -- streaming ---------------------------------------------------------------------------------------
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
    from transformers import StoppingCriteriaList

    inputs, _, sep = _prepare(
        model, tokenizer, pixel_values, question, history, num_patches_list, system_message, template
    )
    gen = _generation_kwargs(model, tokenizer, generation_config, sep)
    if "streamer" in gen:
        raise ValueError("stream_chat creates its own streamer; remove 'streamer' from generation_config")
    streamer = TextPieceStreamer(tokenizer, timeout=timeout)
    cancel = CancelGeneration()
    gen["stopping_criteria"] = StoppingCriteriaList([*(gen.get("stopping_criteria") or []), cancel])
    errors: list[BaseException] = []

    def work() -> None:
        try:
            model.generate(
                pixel_values=_pixels(model, pixel_values), input_ids=inputs["input_ids"],
                attention_mask=inputs["attention_mask"], streamer=streamer, **gen,
            )
        except BaseException as e:  # noqa: BLE001 (re-raised in the consumer's thread)
            errors.append(e)
        finally:
            streamer.end()

    exhausted = False

    def pieces() -> Iterator[str]:
        nonlocal exhausted
        yield from streamer
        exhausted = True

    thread = threading.Thread(target=work, name="internvl-generate", daemon=True)
    thread.start()
    try:
        yield from cut_at_stop(pieces(), sep)
    finally:
        cancel.event.set()  # generation stops at its next step
        if not exhausted:
            # Drain to the end signal without the consumer's timeout (the worker always sends it), so
            # an early stop or a consumer-side timeout never leaves the worker blocked.
            streamer.drain()
        thread.join()
    if errors:
        raise errors[0]


# -- video -------------------------------------------------------------------------------------------
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
    pixel_values, num_patches_list = load_video(
        video_path, bound=bound, num_segments=num_segments, settings=image_settings(model)
    )
    prefix = video_prompt_prefix(len(num_patches_list)) if history is None else ""
    return chat(
        model, tokenizer, pixel_values, prefix + question, generation_config,
        history=history, return_history=return_history, num_patches_list=num_patches_list,
        system_message=system_message,
    )
