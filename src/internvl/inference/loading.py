"""Loading and saving InternVL-Chat checkpoints with their tokenizer, and binding the two together.

`load_chat_model` returns the card-compatible `ChatModel` (`internvl.inference.card`) and the slow
SentencePiece tokenizer the card uses; `bind_tokenizer` writes the tokenizer's ``<IMG_CONTEXT>`` id into
the model once (a pipeline does it at construction, never per request); `save_chat_model` writes the
end-of-turn ids into generation_config.json and keeps the tokenizer's ``legacy`` flag.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch

from internvl.core.compat import persist_tokenizer_flags, tokenizer_load_kwargs
from internvl.core.errors import ConfigError
from internvl.data.conversation import IMG_CONTEXT_TOKEN, get_conv_template
from internvl.inference.card import ChatModel
from internvl.models.internvl_chat import InternVLChatModel

log = logging.getLogger(__name__)


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


def image_context_id(tokenizer: Any) -> int:
    """The tokenizer's ``<IMG_CONTEXT>`` id (the placeholder the visual tokens replace)."""
    token_id = tokenizer.convert_tokens_to_ids(IMG_CONTEXT_TOKEN)
    if token_id is None or token_id == tokenizer.unk_token_id:
        raise ConfigError(f"the tokenizer has no {IMG_CONTEXT_TOKEN} token; it is not an InternVL-Chat tokenizer")
    return int(token_id)


def bind_tokenizer(model: InternVLChatModel, tokenizer: Any) -> int:
    """Set ``model.img_context_token_id`` from the tokenizer (the reference does this inside every chat()).

    The attribute is written only when it differs, so binding the same tokenizer again changes nothing.
    """
    token_id = image_context_id(tokenizer)
    if model.img_context_token_id != token_id:
        model.img_context_token_id = token_id
    return token_id


def template_name(model: InternVLChatModel, template: str | None = None) -> str:
    """``template`` or the checkpoint config's template (``Hermes-2`` for V1-2)."""
    name = template or model.config.template
    if not name:
        raise ConfigError("the checkpoint config has no 'template'; pass template= (e.g. 'Hermes-2')")
    return name


def end_of_turn_id(tokenizer: Any, sep: str) -> int:
    """The id of the template's end-of-turn token; the tokenizer's eos (with a warning) if it has none."""
    token_id = tokenizer.convert_tokens_to_ids(sep)
    if token_id is None or (token_id == tokenizer.unk_token_id and sep != tokenizer.unk_token):
        if tokenizer.eos_token_id is None:
            raise ConfigError(f"the tokenizer has neither the end-of-turn token {sep!r} nor an eos token")
        log.warning("end-of-turn token %r is not in the vocabulary; stopping at eos instead", sep)
        return int(tokenizer.eos_token_id)
    return int(token_id)


def stop_token_ids(model: InternVLChatModel, tokenizer: Any, template: str | None = None) -> list[int]:
    """Ids that end an assistant turn: the template separator (``<|im_end|>``), then the tokenizer's eos."""
    sep = get_conv_template(template_name(model, template)).stop_sep
    ids = [end_of_turn_id(tokenizer, sep)]
    if tokenizer.eos_token_id is not None:
        ids.append(int(tokenizer.eos_token_id))
    return list(dict.fromkeys(ids))


def save_chat_model(model: InternVLChatModel, tokenizer: Any, path: str | os.PathLike, **kwargs: Any) -> Path:
    """Save model, tokenizer and a generation_config.json whose ``eos_token_id`` holds the end-of-turn ids."""
    model.save_pretrained(path, stop_token_ids=stop_token_ids(model, tokenizer), **kwargs)
    tokenizer.save_pretrained(str(path))
    persist_tokenizer_flags(tokenizer, path)
    return Path(path)
