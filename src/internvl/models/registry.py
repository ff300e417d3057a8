"""Named model presets and the dispatch from a checkpoint's ``model_type`` to its model class.

Three construction verbs: `get_preset(name)` gives a *config* (a recipe names a model this way),
`build_model(config)` a randomly initialised model, `create_model(name)` both. Presets are registered
next to their class (``@register_preset`` in each model file); every family has a ``*_tiny`` preset
that builds in milliseconds on CPU, plus the published sizes. `model_class` maps ``config.json``'s
``model_type`` (``intern_vit_6b`` / ``internvl`` / ``internvl_chat``) to the class that loads it;
`internvl.inference.loading.load_pretrained` adds the tokenizer and image settings.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from internvl.core.errors import CheckpointError, UnknownModelError

# model_type -> (module, class name, preset family). Imported lazily: `import internvl` stays light.
MODEL_TYPES: dict[str, tuple[str, str, str]] = {
    "intern_vit_6b": ("internvl.models.intern_vit", "InternViT", "intern_vit"),
    "internvl": ("internvl.models.internvl_cg", "InternVLModel", "internvl_cg"),
    "internvl_chat": ("internvl.models.internvl_chat", "InternVLChatModel", "internvl_chat"),
}
_FAMILY_MODULES = tuple(module for module, _, _ in MODEL_TYPES.values())


@dataclass(frozen=True)
class Preset:
    """A registered name: ``make(**overrides)`` returns a fresh config of ``family``."""

    name: str
    family: str
    make: Callable[..., Any]
    description: str


_PRESETS: dict[str, Preset] = {}


def register_preset(
    name: str, family: str, description: str = ""
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator registering a config factory under ``name`` (a duplicate name raises)."""
    if family not in {f for _, _, f in MODEL_TYPES.values()}:
        raise ValueError(f"unknown preset family {family!r}")

    def decorate(make: Callable[..., Any]) -> Callable[..., Any]:
        if name in _PRESETS:
            raise ValueError(f"preset {name!r} is already registered")
        _PRESETS[name] = Preset(name, family, make, description or (make.__doc__ or "").strip().split("\n")[0])
        return make

    return decorate


def _load_families() -> None:
    for module in _FAMILY_MODULES:
        importlib.import_module(module)


def list_presets(family: str | None = None) -> list[str]:
    """Registered preset names (of one family: ``intern_vit``, ``internvl_cg`` or ``internvl_chat``)."""
    _load_families()
    return sorted(n for n, p in _PRESETS.items() if family is None or p.family == family)


def preset_info(name: str) -> Preset:
    _load_families()
    try:
        return _PRESETS[name]
    except KeyError:
        raise UnknownModelError(f"unknown model preset {name!r}; known: {', '.join(sorted(_PRESETS))}") from None


def get_preset(name: str, **overrides: Any) -> Any:
    """A fresh config for ``name``; ``overrides`` replace its fields (e.g. ``vocab_size=...`` for tiny chat)."""
    return preset_info(name).make(**overrides)


def build_model(config: Any, *, seed: int | None = 0) -> Any:
    """A randomly initialised model (deterministic for a seed) for any family's config object."""
    from internvl.models.intern_vit import InternViTConfig, build_intern_vit
    from internvl.models.internvl_cg import InternVLConfig, build_internvl
    from internvl.models.internvl_chat import InternVLChatConfig, build_internvl_chat

    if isinstance(config, InternViTConfig):
        return build_intern_vit(config, seed=seed)
    if isinstance(config, InternVLConfig):
        return build_internvl(config, seed=seed)
    if isinstance(config, InternVLChatConfig):
        return build_internvl_chat(config, seed=seed)
    raise TypeError(f"build_model: {type(config).__name__} is not an InternViT / InternVL-C/G / InternVL-Chat config")


def create_model(name: str, *, seed: int | None = 0, **overrides: Any) -> Any:
    """``build_model(get_preset(name, **overrides))``."""
    return build_model(get_preset(name, **overrides), seed=seed)


def model_type_of(path: str | os.PathLike) -> str:
    """The ``model_type`` of a checkpoint directory's config.json, checked against the supported ones."""
    from internvl.models.checkpoint import read_config

    model_type = read_config(path).get("model_type")
    if model_type not in MODEL_TYPES:
        raise CheckpointError(
            f"{path}: config.json has model_type {model_type!r}; supported: {', '.join(sorted(MODEL_TYPES))}"
        )
    return model_type


def model_class(model_type: str) -> type:
    """The class that loads checkpoints of ``model_type``."""
    if model_type not in MODEL_TYPES:
        raise CheckpointError(f"model_type {model_type!r}; supported: {', '.join(sorted(MODEL_TYPES))}")
    module, name, _ = MODEL_TYPES[model_type]
    return getattr(importlib.import_module(module), name)


def load_model(path: str | os.PathLike, **kwargs: Any) -> Any:
    """Load a checkpoint directory with the class its ``model_type`` names (model only, no tokenizer)."""
    return model_class(model_type_of(path)).from_pretrained(path, **kwargs)
