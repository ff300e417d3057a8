"""Small file helpers shared by every layer: JSON reading with located errors, plain and atomic writes.

Errors name the file and, for syntax errors, the line and column, raised as the caller's
`InternVLError` subclass (a checkpoint's config.json is a `CheckpointError`, an annotation file a
`DataFormatError`).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from internvl.core.errors import DataFormatError, InternVLError


def read_json(
    path: str | os.PathLike, *, expected: str | None = None, error: type[InternVLError] = DataFormatError
) -> Any:
    """Parse a UTF-8 JSON file; a syntax error reads ``file:line:col: invalid JSON (msg)[; expected ...]``.

    Raises:
        error: the file is not valid JSON or not UTF-8 (a missing file raises FileNotFoundError, so callers
            word that case themselves).
    """
    p = Path(path)
    hint = f"; expected {expected}" if expected else ""
    try:
        with open(p, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise error(f"{p}:{e.lineno}:{e.colno}: invalid JSON ({e.msg}){hint}") from None
    except UnicodeDecodeError as e:
        raise error(f"{p}: not valid UTF-8 ({e.reason} at byte {e.start}){hint}") from None


def write_json(path: str | os.PathLike, obj: Any, *, append: bool = False) -> Path:
    """Write ``obj`` as indented JSON (or append it as one line, as clip_benchmark's result files)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    if append:
        with open(p, "a", encoding="utf-8") as f:
            f.write(json.dumps(obj, ensure_ascii=False) + "\n")
    else:
        p.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return p


def write_json_atomic(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented JSON to a temporary file in the same folder, fsync, then ``os.replace``.

    Readers (and a crash at any point) see either the old file or the complete new one.
    """
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=f".{p.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(json.dumps(obj, indent=2, ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return p


def hub_id_hint(path: str | os.PathLike) -> str:
    """``"; it looks like a hub id ..."`` for a missing path shaped like ``owner/name``, else ``""``.

    Models are only ever read from local folders (no downloads); the hint says how to get one.
    """
    text = str(path)
    parts = text.split("/")
    if len(parts) != 2 or not all(parts) or text.startswith((".", "~")) or Path(text).exists():
        return ""
    return (
        f"; it looks like a Hugging Face hub id, but models are read from local folders only: download it "
        f"first (`huggingface-cli download {text} --local-dir {parts[1]}`) and pass {parts[1]} "
        "(README.md, section Getting the official checkpoints)"
    )
