"""The record every benchmark reader returns, and the path and parquet rules shared by the readers.

A reader never raises on one bad line or a missing image: it returns the item with ``problem`` set
(what is wrong and where), so the harness can list it in the result and score it as wrong. Whole-file
problems (the annotation file is missing or unreadable) do raise `DataFormatError`, before any model
is loaded.
"""

from __future__ import annotations

import base64
import binascii
import io
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from internvl.core.errors import ConfigError, DataFormatError


@dataclass
class BenchItem:
    """One benchmark question.

    Attributes:
        id: unique within the benchmark; the key of the answer cache.
        question: the question text as the file has it (the benchmark adds hint, options and instruction).
        image: the image file, or None when the image is embedded (``image_b64``) or unusable.
        image_b64: a base64-encoded image (MMBench TSV); ``image_bytes``: an encoded image file (parquet).
        answer: the gold answer in the benchmark's terms (a letter, "Yes"/"No", a list of human answers, ...);
            None for test splits scored by a server.
        options: option letter -> text, in letter order (multiple-choice benchmarks).
        hint: context shown before the question (MMBench, ScienceQA).
        meta: benchmark fields used for scoring and breakdowns (task, category, split, index, ...).
        source: ``file:line`` for messages and the result's list of problems.
        problem: why this item cannot be asked (malformed line, missing image); it is then scored wrong.
    """

    id: str
    question: str = ""
    image: Path | None = None
    image_b64: str | None = None
    image_bytes: bytes | None = None
    answer: Any = None
    options: dict[str, str] = field(default_factory=dict)
    hint: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    source: str = ""
    problem: str | None = None

    def load_image(self) -> Image.Image:
        """The RGB image (as every reference script converts it); `DataFormatError` when it cannot be read."""
        try:
            if self.image_b64 is not None or self.image_bytes is not None:
                data = self.image_bytes if self.image_bytes is not None else base64.b64decode(self.image_b64)
                with Image.open(io.BytesIO(data)) as img:
                    return img.convert("RGB")
            if self.image is None:
                raise DataFormatError(f"{self.source}: question {self.id!r} has no image")
            with Image.open(self.image) as img:
                return img.convert("RGB")
        except (OSError, ValueError, binascii.Error) as e:
            where = self.image if self.image is not None else "the embedded image"
            raise DataFormatError(f"{self.source}: cannot read {where} of question {self.id!r}: {e}") from None


def reference_path(data_dir: Path, base: Path, value: str) -> Path:
    """Resolve an image path written in a reference annotation file.

    Several reference files hold paths relative to the reference's ``internvl_chat/`` folder
    (``data/textvqa/train_images/x.jpg``); with ``--data`` standing for that ``data/`` folder, a leading
    ``data/`` component is resolved against ``data_dir``. Absolute paths stay; others are relative to ``base``.
    """
    p = Path(value)
    if p.is_absolute():
        return p
    if p.parts and p.parts[0] == "data":
        return data_dir.joinpath(*p.parts[1:])
    return base / p


def require_file(path: Path, what: str, hint: str) -> Path:
    """`DataFormatError` naming the file, what it is and where it comes from, when it does not exist."""
    if not path.is_file():
        raise DataFormatError(f"{what} not found: {path}. {hint}")
    return path


def missing_image(item: BenchItem) -> BenchItem:
    """Mark ``item`` when its image file does not exist (a stat per item; cheap, and better than failing later)."""
    if item.problem is None and item.image is not None and not item.image.is_file():
        item.problem = f"image not found: {item.image}"
    return item


def parquet_rows(
    folder: str | Path, split: str, columns: tuple[str, ...], *, benchmark: str, pattern: str, snapshot: str
) -> Iterator[tuple[str, dict]]:
    """``(source, row)`` for every row of the ``<split>-*.parquet`` files under ``folder`` (an HF dataset
    snapshot), in sorted file order; each file is checked for ``columns`` before its rows are read.
    ``pattern`` and ``snapshot`` describe the expected layout in the no-files error."""
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise ConfigError(f"{benchmark} is read from parquet files: pip install pyarrow (or internvl[bench])") from None
    folder = Path(folder)
    files = sorted(folder.rglob(f"{split}-*.parquet"))
    if not files:
        raise DataFormatError(f"{benchmark}: no {pattern} under {folder} (a snapshot of the HF dataset {snapshot})")
    for path in files:
        table = pq.read_table(path)
        missing = [c for c in columns if c not in table.column_names]
        if missing:
            raise DataFormatError(f"{path}: missing column(s) {missing}; found {table.column_names}")
        for n, row in enumerate(table.to_pylist()):
            yield f"{path}[{n}]", row


def parquet_image_bytes(value) -> bytes | None:
    """The encoded image of an HF ``Image`` column (a ``{"bytes", "path"}`` struct in parquet), or the value
    itself when a snapshot stored raw bytes (or nothing)."""
    return value.get("bytes") if isinstance(value, dict) else value


__all__ = ["BenchItem", "missing_image", "parquet_image_bytes", "parquet_rows", "reference_path", "require_file"]
