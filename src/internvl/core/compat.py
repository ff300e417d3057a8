"""Every transformers-version-sensitive call, in one place (one unit test per shim).

The package supports the transformers releases in ``pyproject.toml``'s range (4.45 to the newest 5.x).
Upstream renames things between minor releases; code elsewhere asks this module instead of probing
versions itself, so the next rename is one edit here, caught by `tests/unit/test_compat.py` and by the
``make test-latest`` run (FutureWarnings are errors in the suite).

Shims:

* the KV-cache argument and output field: ``past_key_values`` until 5.23, ``cache`` from 5.24 (the old
  name is deprecated there until 5.40 and warns); `cache_kwargs`, `pop_cache`, `output_cache`,
  `model_output`;
* `new_dynamic_cache`: a fresh `DynamicCache` (its constructor grew a ``config`` argument);
* `crop_cache`: shorten a cache to its first n tokens (``crop``'s positive argument changed meaning in 5.x);
* `split_generation_kwargs`: settings vs. model inputs, the way ``GenerationConfig.update`` splits them;
* tokenizer flags: `tokenizer_load_kwargs` (``legacy``) and `persist_tokenizer_flags` (5.x drops
  ``legacy`` when saving).

transformers is imported lazily, so ``import internvl`` stays light.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import json
import os
from pathlib import Path
from typing import Any

LEGACY_CACHE_NAME = "past_key_values"
CACHE_NAME = "cache"


@functools.cache
def transformers_version() -> tuple[int, ...]:
    """The installed transformers release as integers, e.g. ``(5, 24, 0)`` (for logs and reports)."""
    import transformers
    from packaging.version import Version

    return Version(transformers.__version__).release


@functools.cache
def cache_arg_name() -> str:
    """Keyword under which this transformers passes the KV cache to ``forward`` during ``generate``.

    Read from ``GenerationMixin.prepare_inputs_for_generation``'s signature rather than from the version
    number: the rename (5.24) is what matters, whichever release carries it.
    """
    from transformers import GenerationMixin

    params = inspect.signature(GenerationMixin.prepare_inputs_for_generation).parameters
    return CACHE_NAME if CACHE_NAME in params else LEGACY_CACHE_NAME


def cache_kwargs(cache: Any) -> dict[str, Any]:
    """``{name: cache}`` for calling a stock transformers model without the deprecation warning."""
    return {cache_arg_name(): cache}


def pop_cache(kwargs: dict[str, Any], past_key_values: Any = None, cache: Any = None) -> Any:
    """The cache a caller passed under either name (our forwards accept both); both at once is an error."""
    found = {
        name: value
        for name, value in (
            (
                LEGACY_CACHE_NAME,
                past_key_values if past_key_values is not None else kwargs.pop(LEGACY_CACHE_NAME, None),
            ),
            (CACHE_NAME, cache if cache is not None else kwargs.pop(CACHE_NAME, None)),
        )
        if value is not None
    }
    if len(found) > 1:
        raise ValueError("pass the KV cache as either `cache` or `past_key_values`, not both")
    return next(iter(found.values()), None)


def output_cache(outputs: Any) -> Any:
    """The cache a transformers model output carries, read without tripping the deprecated alias."""
    if outputs is None:
        return None
    for name in (CACHE_NAME, LEGACY_CACHE_NAME):
        if dataclasses.is_dataclass(outputs) and name in {f.name for f in dataclasses.fields(outputs)}:
            return getattr(outputs, name)
    return None


def model_output(cls: type, cache: Any = None, **fields: Any) -> Any:
    """Build a transformers ``ModelOutput`` whose cache field is named per release."""
    names = {f.name for f in dataclasses.fields(cls)}
    key = CACHE_NAME if CACHE_NAME in names else LEGACY_CACHE_NAME
    if key in names:
        fields[key] = cache
    return cls(**fields)


def new_dynamic_cache(config: Any = None) -> Any:
    """An empty `DynamicCache`; 5.x accepts the model config (layer types), 4.4x takes no arguments."""
    from transformers import DynamicCache

    if config is not None and "config" in inspect.signature(DynamicCache.__init__).parameters:
        return DynamicCache(config=config)
    return DynamicCache()


def crop_cache(cache: Any, length: int) -> None:
    """Keep the first ``length`` tokens of ``cache`` in place.

    ``crop(n)`` with n > 0 meant "keep n" up to 4.x and is refused in 5.x; a negative n ("remove -n")
    means the same on both.
    """
    remove = cache.get_seq_length() - length
    if remove < 0:
        raise ValueError(f"cannot crop a cache of {cache.get_seq_length()} tokens to {length}")
    if remove:
        cache.crop(-remove)


def split_generation_kwargs(generation_config: Any, kwargs: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """(a copy of ``generation_config`` with the settings in ``kwargs``, the remaining model inputs).

    Mixing a config object with loose settings in ``generate`` is deprecated; folding them first keeps
    both styles working. ``GenerationConfig.update`` returns the keys it did not use on every release.
    """
    import copy

    config = copy.deepcopy(generation_config)
    rest = config.update(**kwargs)
    return config, rest


# -- tokenizers ---------------------------------------------------------------------------------------
def _tokenizer_config(path: str | os.PathLike) -> dict[str, Any]:
    file = Path(path) / "tokenizer_config.json"
    if not file.is_file():
        return {}
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}  # AutoTokenizer reports the unreadable file itself, with its own message


def tokenizer_load_kwargs(path: str | os.PathLike) -> dict[str, Any]:
    """Extra ``AutoTokenizer.from_pretrained`` arguments that keep the reference's token split.

    A SentencePiece Llama tokenizer whose config does not set ``legacy`` was loaded with ``legacy=True``
    by the reference's transformers (4.37); 5.x defaults to the non-legacy split, which changes whether
    text right after a special token starts with "▁" (``<|im_start|>user`` -> ``▁user``).
    """
    cfg = _tokenizer_config(path)
    if "legacy" not in cfg and str(cfg.get("tokenizer_class", "")).startswith("LlamaTokenizer"):
        return {"legacy": True}
    return {}


def persist_tokenizer_flags(tokenizer: Any, path: str | os.PathLike) -> None:
    """Write the flags transformers 5.x leaves out of a saved ``tokenizer_config.json`` (``legacy``,
    ``add_bos_token``, ``add_eos_token``): without them a reader of the file (the SFT `SentencePieceEncoder`,
    transformers 4.x) falls back to its defaults (BOS on) and splits text differently."""
    file = Path(path) / "tokenizer_config.json"
    if not file.is_file():
        return
    cfg = json.loads(file.read_text(encoding="utf-8"))
    changed = False
    for name in ("legacy", "add_bos_token", "add_eos_token"):
        value = getattr(tokenizer, name, None)
        if isinstance(value, bool) and cfg.get(name) != value:
            cfg[name] = value
            changed = True
    if changed:
        file.write_text(json.dumps(cfg, indent=2, ensure_ascii=False), encoding="utf-8")


# -- continuing generation from a kept cache -------------------------------------------------------
# Oldest release on which generate() continues correctly from a cache that already holds the prompt
# prefix (multi-turn sessions, `internvl.inference.session`): verified on 5.23 and 5.24; 4.45 fails
# (its position bookkeeping with inputs_embeds and a non-empty cache). Older releases rebuild each turn.
CACHE_CONTINUATION_MIN = (5, 23)


def supports_cache_continuation() -> bool:
    """Whether a session may prefill only a turn's new tokens on this transformers release."""
    return transformers_version() >= CACHE_CONTINUATION_MIN
