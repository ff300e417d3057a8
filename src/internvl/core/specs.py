"""Vocabulary that both models and data read from a checkpoint's config: the served image size.

``force_image_size`` (a top-level key of the composite InternVL configs) overrides the vision config's
``image_size``: the model is served, and images are preprocessed, at that resolution. This is the one
place that rule is written; `internvl.models.checkpoint.plan_position_table` decides how a stored
position table of another size is loaded.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def served_image_size(config: Mapping[str, Any], default: int | None = None) -> int | None:
    """``force_image_size`` when set, else ``vision_config.image_size``, else ``default``."""
    vision = config.get("vision_config") or {}
    if not isinstance(vision, Mapping):  # a config object (e.g. InternViTConfig)
        vision = {"image_size": getattr(vision, "image_size", None)}
    size = config.get("force_image_size") or vision.get("image_size") or default
    return int(size) if size is not None else None
