"""The harness's only contact with the chat inference API (to be pointed at ``ChatPipeline`` later).

The reference asks ``model.chat`` one question at a time; ``batch_chat`` gives the same greedy answers
for a batch (left padding; tested in tests/integration/test_chat_modes.py), so batch size 1 reproduces
the reference and larger batches are a speed option.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from PIL import Image


def load_chat(model_dir: str | os.PathLike, *, dtype: str, device: Any, device_map: str | None) -> tuple[Any, Any]:
    """(model, tokenizer) in eval mode, on ``device`` or spread with ``device_map``."""
    from internvl.inference.chat import load_chat_model

    kwargs = {"device_map": device_map} if device_map else {"device": device}
    model, tokenizer = load_chat_model(model_dir, dtype=dtype, **kwargs)
    return model.eval(), tokenizer


def answer_batch(
    model: Any, tokenizer: Any, images: Sequence[Image.Image], questions: Sequence[str], generation: dict[str, Any]
) -> list[str]:
    """One answer per (image, question), each a single-turn chat with the checkpoint's template."""
    from internvl.inference.chat import batch_chat, load_images

    # One 448px tile per image: the reference scripts' default (no --dynamic); V1-2 is single-tile anyway.
    pixels, patches = load_images(model, list(images), max_num=1)
    return batch_chat(model, tokenizer, pixels, list(questions), generation, num_patches_list=patches)


__all__ = ["answer_batch", "load_chat"]
