"""The model card's object API: ``model.chat(tokenizer, pixel_values, question, ...)`` and friends.

`ChatModel` is `InternVLChatModel` plus the card's methods, defined here rather than in
``internvl.models`` so that models never import the data/inference layers; weights, config and
checkpoints are identical. The methods forward to the functions of `internvl.inference.chat`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch

from internvl.data.conversation import Conversation, get_conv_template, resolve_system_message
from internvl.models.internvl_chat import InternVLChatModel


class ChatModel(InternVLChatModel):
    """`InternVLChatModel` with the model card's methods (what ``load_chat_model`` returns)."""

    def chat(
        self,
        tokenizer: Any,
        pixel_values: torch.Tensor | None,
        question: str,
        generation_config: Any = None,
        **kwargs: Any,
    ) -> Any:
        """See `internvl.inference.chat.chat`."""
        from internvl.inference import chat as api  # chat imports this module: bind at call time

        return api.chat(self, tokenizer, pixel_values, question, generation_config, **kwargs)

    def batch_chat(
        self,
        tokenizer: Any,
        pixel_values: torch.Tensor | None,
        questions: Sequence[str],
        generation_config: Any = None,
        **kwargs: Any,
    ) -> Any:
        """See `internvl.inference.chat.batch_chat`."""
        from internvl.inference import chat as api

        return api.batch_chat(self, tokenizer, pixel_values, questions, generation_config, **kwargs)

    def stream_chat(
        self,
        tokenizer: Any,
        pixel_values: torch.Tensor | None,
        question: str,
        generation_config: Any = None,
        **kwargs: Any,
    ) -> Any:
        """See `internvl.inference.chat.stream_chat`."""
        from internvl.inference import chat as api

        return api.stream_chat(self, tokenizer, pixel_values, question, generation_config, **kwargs)

    def video_chat(
        self, tokenizer: Any, video_path: str | os.PathLike, question: str, generation_config: Any = None, **kwargs: Any
    ) -> Any:
        """See `internvl.inference.chat.video_chat`."""
        from internvl.inference import chat as api

        return api.video_chat(self, tokenizer, video_path, question, generation_config, **kwargs)

    @property
    def conv_template(self) -> Conversation:
        """The checkpoint's conversation template with its resolved system message (the card reads
        ``model.conv_template.sep`` in its streaming example)."""
        from internvl.inference.loading import template_name

        name = template_name(self)
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
