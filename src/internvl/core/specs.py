"""Vocabulary that several layers share: the served image size read from a checkpoint's config, and the
names of InternVL-C/G's image-embedding modes (models compute them; the CLI and the server parse them).

``force_image_size`` (a top-level key of the composite InternVL configs) overrides the vision config's
``image_size``: the model is served, and images are preprocessed, at that resolution. This is the one
place that rule is written; `internvl.models.checkpoint.plan_position_table` decides how a stored
position table of another size is loaded.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# InternVL-C: attention-pooled InternViT features; InternVL-G: those passed through QLLaMA's queries.
EMBEDDING_MODES = ("InternVL-C", "InternVL-G")


def canonical_mode(value: str) -> str | None:
    """A user's spelling of a mode, any case (``internvl-g``, ``G``), as ``InternVL-C`` / ``InternVL-G``;
    None when it names neither. The CLI's ``--mode`` and the server's ``mode`` field both read it."""
    key = value.strip().lower()
    for mode in EMBEDDING_MODES:
        if key in (mode.lower(), mode[-1].lower()):
            return mode
    return None


def served_image_size(config: Mapping[str, Any], default: int | None = None) -> int | None:
    """``force_image_size`` when set, else ``vision_config.image_size``, else ``default``."""
    vision = config.get("vision_config") or {}
    if not isinstance(vision, Mapping):  # a config object (e.g. InternViTConfig)
        vision = {"image_size": getattr(vision, "image_size", None)}
    size = config.get("force_image_size") or vision.get("image_size") or default
    return int(size) if size is not None else None
