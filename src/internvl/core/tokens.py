"""Token vocabulary shared by the models, the data pipeline and training (one definition each).

The placeholder ``<image>`` is what users write; a prompt expands each one to
``<img>`` + ``<IMG_CONTEXT>`` x (tokens per tile x tiles) + ``</img>``, and the model replaces the
``<IMG_CONTEXT>`` embeddings with visual tokens. ``IGNORE_INDEX`` marks label positions without loss
(PyTorch's cross-entropy default).
"""

from __future__ import annotations

IMAGE_PLACEHOLDER = "<image>"
IMG_START_TOKEN = "<img>"
IMG_END_TOKEN = "</img>"
IMG_CONTEXT_TOKEN = "<IMG_CONTEXT>"

# Special tokens InternVL-Chat adds to its LLM tokenizer (ids follow the base vocabulary).
CHAT_SPECIAL_TOKENS: tuple[str, ...] = (
    "<IMG_CONTEXT>",
    "<img>",
    "</img>",
    "<quad>",
    "</quad>",
    "<ref>",
    "</ref>",
    "<box>",
    "</box>",
)

IGNORE_INDEX = -100
