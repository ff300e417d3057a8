"""Caption-dataset registry: named entries (image root, annotation file, format) read from YAML/JSON files.

The reference hard-codes its datasets in a Python dict (``ds_collections``) and picks the reader by a
substring of the name. Here the built-in entries live in ``builtin_datasets.yaml`` next to this module,
and users add or override entries in their own file (``--registry my_datasets.yaml``) without touching
code. File layout::

    data_root: /mnt/data          # optional; relative paths below resolve against it
    datasets:
      - name: my_flickr_format_test
        root: my_flickr/Images     # image paths in the annotation are relative to this folder
        annotation: my_flickr/test.txt
        format: flickr_format      # optional when the name contains flickr_format / coco_format
        language: en               # optional (en)
        references: gt.json        # optional, COCO caption ground truth for caption scoring

``datasets`` may also be a mapping ``name: {root: ..., ...}``. Relative paths resolve against, in order
of precedence: the ``data_root`` argument (CLI ``--data-root``), the file's ``data_root`` key (relative
to the file), and finally ``data`` in the working directory for the built-in file or the registry
file's own folder for user files.

Format selection: ``format`` when given; otherwise the name decides, as in the reference: a name
containing ``flickr_format`` or ``coco_format`` picks that format, else a name containing ``flickr``
picks flickr_format, else one containing ``coco`` picks coco_format.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from internvl.core.errors import ConfigError, DataFormatError, UnknownModelError
from internvl.data.datasets.coco import read_coco_captions
from internvl.data.datasets.flickr import read_flickr_captions
from internvl.data.datasets.records import ImageCaptions

BUILTIN_REGISTRY = Path(__file__).with_name("builtin_datasets.yaml")
DEFAULT_DATA_ROOT = Path("data")
FORMATS = ("flickr_format", "coco_format")
_READERS = {"flickr_format": read_flickr_captions, "coco_format": read_coco_captions}
_KEYS = {"name", "root", "annotation", "format", "language", "references"}
_REQUIRED = ("root", "annotation")


@dataclass(frozen=True)
class DatasetSpec:
    """One registered dataset with its paths resolved.

    Attributes:
        name: registry name.
        root: folder the annotation's image paths are relative to.
        annotation: the caption file.
        format: ``flickr_format`` or ``coco_format``.
        language: ``en``/``cn``/...; recorded in results.
        references: COCO caption-format ground truth for caption scoring, when different from ``annotation``.
        origin: the registry file that defined it (for error messages).
    """

    name: str
    root: Path
    annotation: Path
    format: str
    language: str = "en"
    references: Path | None = None
    origin: str = field(default="", compare=False)

    def read(self) -> list[ImageCaptions]:
        """Parse the annotation file (images are not opened)."""
        if not self.annotation.is_file():
            raise DataFormatError(
                f"dataset '{self.name}': annotation file not found: {self.annotation} (format {self.format}; "
                f"defined in {self.origin}). Download it as described in README.md (Evaluation, Data layout), or point "
                "--data-root / a --registry file at your copy."
            )
        return _READERS[self.format](self.annotation, self.root)

    @property
    def reference_file(self) -> Path:
        """The file caption scores are computed against: ``references`` if set, else the annotation."""
        return self.references if self.references is not None else self.annotation


class DatasetRegistry:
    """Name -> `DatasetSpec`, built from the built-in file and any user files (later files override)."""

    def __init__(self, specs: Iterable[DatasetSpec] = ()):
        self._specs: dict[str, DatasetSpec] = {}
        for spec in specs:
            self._specs[spec.name] = spec

    def __contains__(self, name: str) -> bool:
        return name in self._specs

    def __len__(self) -> int:
        return len(self._specs)

    def names(self) -> list[str]:
        return sorted(self._specs)

    def get(self, name: str) -> DatasetSpec:
        if name not in self._specs:
            close = difflib.get_close_matches(name, self._specs, n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise UnknownModelError(
                f"unknown dataset {name!r}{hint} Registered: {', '.join(self.names())}. "
                "Add your own with a registry file (--registry my_datasets.yaml)."
            )
        return self._specs[name]

    def update(self, specs: Iterable[DatasetSpec]) -> None:
        for spec in specs:
            self._specs[spec.name] = spec


def load_registry(
    files: Sequence[str | os.PathLike] = (),
    *,
    data_root: str | os.PathLike | None = None,
    include_builtin: bool = True,
) -> DatasetRegistry:
    """The built-in datasets plus the entries of ``files`` (in order; a later entry replaces an earlier one).

    Args:
        files: user registry files (YAML or JSON).
        data_root: base for relative paths of every file (the CLI's ``--data-root``); see the module doc.
        include_builtin: start from ``builtin_datasets.yaml``.
    """
    registry = DatasetRegistry()
    if include_builtin:
        registry.update(read_registry_file(BUILTIN_REGISTRY, data_root=data_root, default_root=DEFAULT_DATA_ROOT))
    for f in files:
        registry.update(read_registry_file(f, data_root=data_root))
    return registry


def read_registry_file(
    path: str | os.PathLike,
    *,
    data_root: str | os.PathLike | None = None,
    default_root: str | os.PathLike | None = None,
) -> list[DatasetSpec]:
    """Parse and validate one registry file (errors name the file, the entry and the key)."""
    import yaml

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"dataset registry file not found: {p} (expected a YAML/JSON file with a 'datasets' list)")
    try:
        doc = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{p}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(p)
        raise ConfigError(f"{where}: invalid YAML/JSON ({getattr(e, 'problem', None) or e})") from None
    if not isinstance(doc, dict) or "datasets" not in doc:
        raise ConfigError(
            f"{p}: expected a mapping with a 'datasets' key (a list of entries); got {type(doc).__name__}"
        )
    extra = set(doc) - {"datasets", "data_root"}
    if extra:
        raise ConfigError(
            f"{p}: unknown top-level key(s) {sorted(extra)}; expected 'datasets' and optionally 'data_root'"
        )

    if data_root is not None:
        base = Path(data_root)
    elif doc.get("data_root") is not None:
        if not isinstance(doc["data_root"], str):
            raise ConfigError(f"{p}: 'data_root' must be a path string; got {type(doc['data_root']).__name__}")
        base = p.parent / doc["data_root"]
    else:
        base = Path(default_root) if default_root is not None else p.parent

    raw = doc["datasets"]
    if isinstance(raw, dict):
        entries = []
        for name, body in raw.items():
            if not isinstance(body, dict):
                raise ConfigError(
                    f"{p}: dataset {name!r}: expected a mapping of keys {sorted(_KEYS - {'name'})}; "
                    f"got {type(body).__name__}"
                )
            if "name" in body and body["name"] != name:
                raise ConfigError(f"{p}: dataset {name!r}: 'name' key {body['name']!r} differs from the mapping key")
            entries.append({**body, "name": name})
    elif isinstance(raw, list):
        entries = raw
    else:
        raise ConfigError(
            f"{p}: 'datasets' must be a list of entries or a mapping name -> entry; got {type(raw).__name__}"
        )

    specs: list[DatasetSpec] = []
    seen: dict[str, int] = {}
    for i, entry in enumerate(entries):
        spec = _parse_entry(entry, i, p, base)
        if spec.name in seen:
            raise ConfigError(f"{p}: datasets[{i}]: duplicate name {spec.name!r} (also datasets[{seen[spec.name]}])")
        seen[spec.name] = i
        specs.append(spec)
    return specs


def infer_format(name: str) -> str | None:
    """The reference's rule: ``flickr_format``/``coco_format`` in the name, else ``flickr``, else ``coco``."""
    lowered = name.lower()
    for fmt in FORMATS:
        if fmt in lowered:
            return fmt
    if "flickr" in lowered:
        return "flickr_format"
    if "coco" in lowered:
        return "coco_format"
    return None


def _parse_entry(entry: Any, i: int, path: Path, base: Path) -> DatasetSpec:
    if not isinstance(entry, dict):
        raise ConfigError(
            f"{path}: datasets[{i}]: expected a mapping with keys {sorted(_KEYS)}; got {type(entry).__name__}"
        )
    name = entry.get("name")
    if not isinstance(name, str) or not name.strip() or any(c.isspace() for c in name):
        raise ConfigError(f"{path}: datasets[{i}]: 'name' must be a non-empty string without spaces; got {name!r}")
    where = f"{path}: dataset '{name}'"
    unknown = set(entry) - _KEYS
    if unknown:
        close = {k: difflib.get_close_matches(k, _KEYS, n=1) for k in unknown}
        hints = ", ".join(f"{k!r}" + (f" (did you mean {c[0]!r}?)" if c else "") for k, c in close.items())
        raise ConfigError(f"{where}: unknown key(s) {hints}; allowed keys: {sorted(_KEYS)}")
    for key in _REQUIRED:
        if key not in entry:
            raise ConfigError(f"{where}: required key '{key}' missing (root = image folder, annotation = caption file)")
    for key in ("root", "annotation", "references", "format", "language"):
        if key in entry and entry[key] is not None and not isinstance(entry[key], str):
            raise ConfigError(f"{where}: '{key}' must be a string; got {type(entry[key]).__name__} {entry[key]!r}")
    fmt = entry.get("format")
    if fmt is None:
        fmt = infer_format(name)
        if fmt is None:
            raise ConfigError(
                f"{where}: no 'format' given and the name contains neither 'flickr' nor 'coco'; "
                f"set format to one of {list(FORMATS)}"
            )
    elif fmt not in FORMATS:
        raise ConfigError(f"{where}: format {fmt!r} is not supported; expected one of {list(FORMATS)}")
    refs = entry.get("references")
    return DatasetSpec(
        name=name,
        root=_resolve(base, entry["root"]),
        annotation=_resolve(base, entry["annotation"]),
        format=fmt,
        language=entry.get("language") or "en",
        references=_resolve(base, refs) if refs else None,
        origin=str(path),
    )


def _resolve(base: Path, value: str) -> Path:
    """Absolute (or ``~``) paths stay; relative ones join the base."""
    p = Path(value).expanduser()
    return p if p.is_absolute() else base / p
