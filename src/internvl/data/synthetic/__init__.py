"""The built-in synthetic world: seeded scenes, a tokenizer trained on their text, and writers of the real formats.

Lets the demo and the tests run (and train) every component end to end on a laptop CPU without
downloading a checkpoint or a dataset. `scenes` draws images with captions and questions derived from
the same draw; `world` writes them as Flickr/COCO caption files, SFT meta JSON + JSONL and benchmark
files; `tokenizer` builds tokenizers in the layout of a checkpoint directory.
"""

from __future__ import annotations

from internvl.data.synthetic.scenes import (
    QA,
    QUESTION_TYPES,
    Scene,
    SceneObject,
    random_scene,
    scene_stream,
    synthetic_image,
    synthetic_scene,
)
from internvl.data.synthetic.tokenizer import (
    CHAT_SPECIAL_TOKENS,
    DEFAULT_CORPUS,
    WORLD_CHAT_TOKENS,
    build_chat_tokenizer,
    build_tokenizer,
    build_world_tokenizer,
)

__all__ = [
    "CHAT_SPECIAL_TOKENS",
    "DEFAULT_CORPUS",
    "QA",
    "QUESTION_TYPES",
    "WORLD_CHAT_TOKENS",
    "Scene",
    "SceneObject",
    "build_chat_tokenizer",
    "build_tokenizer",
    "build_world_tokenizer",
    "random_scene",
    "scene_stream",
    "synthetic_image",
    "synthetic_scene",
]
