"""The InternVL SFT meta JSON: dataset name -> where its JSONL lives and how to sample it (chat spec §7.1).

```json
{"sharegpt4v_instruct_gpt4-vision_cap100k": {
    "root": "playground/data/", "annotation": "playground/opensource/sharegpt4v_instruct_gpt4-vision_cap100k.jsonl",
    "data_augment": false, "repeat_time": 1, "length": 102025}}
```

``repeat_time`` < 1 keeps the *first* ``int(lines x repeat_time)`` lines (a prefix, as the reference);
an integer > 1 repeats the lines; a non-integer > 1 (which the reference rejects) repeats ``int(r)``
times and adds the first ``int(lines x frac(r))`` lines. ``length`` is informational (the reference
does not read it either). Per-dataset tiling options override the run's: ``max_dynamic_patch``,
``min_dynamic_patch``, ``use_thumbnail``, ``dynamic_image_size``. Relative paths are resolved against
the meta file's folder, or the current directory (the reference's convention) when only that exists.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

from internvl.core.errors import DataFormatError

_BOOL_KEYS = ("data_augment", "use_thumbnail", "dynamic_image_size")
_INT_KEYS = ("length", "max_dynamic_patch", "min_dynamic_patch")
KNOWN_KEYS = ("root", "annotation", "repeat_time", *_BOOL_KEYS, *_INT_KEYS)


@dataclass(frozen=True)
class SFTSource:
    """One dataset of a meta file."""

    name: str
    root: str  # image path prefix (kept as a string: ``s3://`` roots are concatenated, not joined)
    annotation: Path
    repeat_time: float = 1.0
    length: int | None = None
    data_augment: bool = False
    max_dynamic_patch: int | None = None
    min_dynamic_patch: int | None = None
    use_thumbnail: bool | None = None
    dynamic_image_size: bool | None = None

    def image_path(self, path: str) -> str:
        """The reference's rule: ``root + path`` for ``s3://`` roots, else ``os.path.join(root, path)``."""
        return self.root + path if self.root.startswith("s3://") else os.path.join(self.root, path)

    def sample_lines(self, num_lines: int) -> list[int]:
        """Line indices after ``repeat_time`` (see the module doc)."""
        whole, frac = int(self.repeat_time), self.repeat_time - int(self.repeat_time)
        if self.repeat_time < 1:
            return list(range(int(num_lines * self.repeat_time)))
        return list(range(num_lines)) * whole + list(range(int(num_lines * frac)))


def _resolve(value: str, base: Path) -> str:
    if value.startswith("s3://") or os.path.isabs(value):
        return value
    beside = base / value
    if not beside.exists() and Path(value).exists():
        return value
    return str(beside)


def read_sft_meta(path: str | os.PathLike) -> list[SFTSource]:
    """Parse and validate a meta JSON.

    Raises:
        DataFormatError: not JSON, not a dict of dicts, missing/unknown keys, wrong types, an annotation
            that does not end with ``.jsonl``, or ``repeat_time`` <= 0.
    """
    path = Path(path)
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataFormatError(f"meta file not found: {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        line = getattr(e, "lineno", "?")
        raise DataFormatError(f"{path}:{line}: invalid JSON ({e})") from None
    if not isinstance(meta, dict) or not meta:
        raise DataFormatError(f"{path}: expected a non-empty object {{dataset name: {{root, annotation, ...}}}}")
    sources = []
    for name, entry in meta.items():
        where = f"{path}: dataset {name!r}"
        if not isinstance(entry, dict):
            raise DataFormatError(f"{where}: expected an object, got {type(entry).__name__}")
        unknown = sorted(set(entry) - set(KNOWN_KEYS))
        if unknown:
            raise DataFormatError(f"{where}: unknown key(s) {unknown}; known: {', '.join(KNOWN_KEYS)}")
        for key in ("root", "annotation"):
            if not isinstance(entry.get(key), str):
                raise DataFormatError(f"{where}: '{key}' must be a string")
        if not entry["annotation"].endswith(".jsonl"):
            raise DataFormatError(f"{where}: annotation {entry['annotation']!r} must be a .jsonl file")
        repeat = entry.get("repeat_time", 1)
        if isinstance(repeat, bool) or not isinstance(repeat, (int, float)) or not math.isfinite(repeat) or repeat <= 0:
            raise DataFormatError(f"{where}: repeat_time must be a number > 0, got {repeat!r}")
        for key in _BOOL_KEYS:
            if key in entry and not isinstance(entry[key], bool):
                raise DataFormatError(f"{where}: '{key}' must be true or false, got {entry[key]!r}")
        for key in _INT_KEYS:
            if key in entry and (isinstance(entry[key], bool) or not isinstance(entry[key], int) or entry[key] < 0):
                raise DataFormatError(f"{where}: '{key}' must be a non-negative integer, got {entry[key]!r}")
        base = path.parent
        sources.append(
            SFTSource(
                name=name,
                root=_resolve(entry["root"], base),
                annotation=Path(_resolve(entry["annotation"], base)),
                repeat_time=float(repeat),
                **{k: entry[k] for k in (*_BOOL_KEYS, *_INT_KEYS) if k in entry},
            )
        )
    return sources
