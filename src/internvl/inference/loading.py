"""The one loader: checkpoint directory -> model + tokenizer + image settings; chat saving and binding.

`load_pretrained(path)` reads ``config.json``, dispatches on ``model_type`` (``intern_vit_6b``,
``internvl`` for C/G, ``internvl_chat``) through `internvl.models.registry` and returns a `LoadedModel`.
The per-family loaders it uses are public too (`load_cg_model`, `load_chat_model`).
`load_chat_model` returns the card-compatible `ChatModel` (`internvl.inference.card`) and the slow
SentencePiece tokenizer the card uses; `bind_tokenizer` writes the tokenizer's ``<IMG_CONTEXT>`` id into
the model once (a pipeline does it at construction, never per request); `save_chat_model` writes the
end-of-turn ids into generation_config.json and keeps the tokenizer's ``legacy`` flag.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from internvl.core.compat import persist_tokenizer_flags, tokenizer_load_kwargs
from internvl.core.errors import ConfigError
from internvl.data.conversation import IMG_CONTEXT_TOKEN, get_conv_template
from internvl.data.image_processing import ChatImageSettings
from internvl.inference.card import ChatModel
from internvl.models.internvl_chat import InternVLChatModel, register_auto_classes
from internvl.models.registry import model_class, model_type_of

log = logging.getLogger(__name__)


def image_settings(model: InternVLChatModel) -> ChatImageSettings:
    """Preprocessing settings of a chat checkpoint, from its config (448px single tile for V1-2)."""
    return ChatImageSettings.from_config_dict(model.config.to_dict())


def load_tokenizer(path: str | os.PathLike) -> Any:
    """The checkpoint's tokenizer; the slow SentencePiece one like the card (``use_fast=False``) when available.

    Loaded with the reference's ``legacy`` split where the config leaves it unset
    (`internvl.core.compat.tokenizer_load_kwargs`), so prompt ids match on transformers 5.x.
    """
    from transformers import AutoTokenizer

    register_auto_classes()  # config.json's model_type internvl_chat resolves without remote code
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


def load_cg_model(
    model_dir: str | os.PathLike, *, dtype: str | torch.dtype | None = None, device: str | torch.device = "cpu"
):
    """The InternVL-C/G model and its text tokenizer from one checkpoint directory.

    The tokenizer is read first (cheap), so a directory without one fails before the weights are read;
    a tokenizer larger than the embedding table (one from another checkpoint) is refused.
    """
    from internvl.data.tokenization import InternVLTextTokenizer
    from internvl.models.internvl_cg import InternVLModel

    tokenizer = InternVLTextTokenizer.from_pretrained(model_dir)
    model = InternVLModel.from_pretrained(model_dir, dtype=dtype, device=device)
    rows = model.config.qllama_config.vocab_size
    if tokenizer.vocab_size > rows:
        raise ConfigError(
            f"{model_dir}: the tokenizer has {tokenizer.vocab_size} tokens but the model's embedding table "
            f"{rows} rows (qllama_config.vocab_size); the tokenizer files do not belong to this checkpoint"
        )
    return model, tokenizer


@dataclass
class LoadedModel:
    """What `load_pretrained` returns.

    Attributes:
        model: `InternViT`, `InternVLModel` (C/G) or the card-compatible `ChatModel`, in eval mode.
        tokenizer: the C/G text tokenizer, the chat tokenizer (bound to the model), or None for InternViT.
        model_type: config.json's ``model_type``.
        image_size: the input resolution the model was built for.
        image_settings: the chat checkpoint's preprocessing settings (None for the other families).
    """

    model: Any
    tokenizer: Any
    model_type: str
    image_size: int
    image_settings: ChatImageSettings | None = None


_STRATEGIES = ("auto", "balanced", "balanced_low_0", "sequential")


def load_pretrained(
    path: str | os.PathLike,
    *,
    dtype: str | torch.dtype | None = None,
    device: str | torch.device | None = None,
    device_map: str | dict | None = None,
    model_types: Sequence[str] | None = None,
    **kwargs: Any,
) -> LoadedModel:
    """Load any supported checkpoint directory with its tokenizer and image settings.

    Args:
        dtype: "fp32" / "bf16" / "fp16" (or a torch dtype); None keeps the stored dtype.
        device: where the weights go (default CPU); see `internvl.core.devices.pick_device` for "auto".
        device_map: chat checkpoints only: "auto"/"balanced"/... (accelerate) or a ``{module: device}`` dict;
            a plain device string is the same as ``device``.
        model_types: the model types the caller can use (e.g. ``("internvl",)`` for embeddings); another
            type fails before any weight is read.
        **kwargs: chat only, passed to `InternVLChatModel.from_pretrained` (``load_in_8bit``, ``max_memory``,
            config overrides).

    Raises:
        CheckpointError: unreadable directory, unsupported or unexpected ``model_type``, key mismatch.
        ConfigError: a device map for a family that does not support one.
    """
    model_type = model_type_of(path)
    if model_types is not None and model_type not in model_types:
        raise ConfigError(
            f"{path} holds a model_type {model_type!r} checkpoint; this command needs model_type "
            f"{' or '.join(repr(t) for t in model_types)}"
        )
    if model_type == "internvl_chat":
        if device_map is None and device is not None:
            device_map = str(device)
        model, tokenizer = load_chat_model(path, dtype=dtype, device_map=device_map, **kwargs)
        return LoadedModel(model, tokenizer, model_type, model.config.image_size, image_settings(model))
    if device_map is not None:
        if isinstance(device_map, dict) or device_map in _STRATEGIES:
            raise ConfigError(
                f"device_map={device_map!r} is supported for internvl_chat checkpoints only; pass device="
            )
        device = device_map
    device = device if device is not None else "cpu"
    if kwargs:
        raise ConfigError(f"{model_type} checkpoints take no loading options {sorted(kwargs)}")
    if model_type == "internvl":
        model, tokenizer = load_cg_model(path, dtype=dtype, device=device)
        return LoadedModel(model, tokenizer, model_type, model.image_size)
    model = model_class(model_type).from_pretrained(path, dtype=dtype, device=device)
    return LoadedModel(model, None, model_type, model.image_size)
