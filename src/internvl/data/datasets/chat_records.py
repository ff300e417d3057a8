"""JSONL chat records of the InternVL SFT format (chat spec §7.2), read and validated with file:line.

One JSON object per line::

    {"id": 0, "image": "coco/train2017/1.jpg" | ["a.jpg", "b.jpg"], "width": 640, "height": 480,
     "conversations": [{"from": "human", "value": "<image>\\nWhat is this?"}, {"from": "gpt", "value": "A dog."}]}

``video`` (a file) with an optional ``clip`` [start, end] in seconds replaces ``image`` for video
records; records with neither are pure text. ``length`` (tokens) is used by length grouping when given.
The file is kept as raw lines and a record is parsed when it is needed, so a million-line annotation
costs its text size until then.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from internvl.core.errors import DataFormatError


@dataclass(frozen=True)
class ChatRecord:
    """One parsed line. ``images`` is empty for pure text and video records."""

    conversations: list[dict]
    images: tuple[str, ...] = ()
    video: str | None = None
    clip: tuple[float, float] | None = None
    width: int | None = None
    height: int | None = None
    length: int | None = None
    id: object = None
    source: str = ""  # "file:line"


class ChatRecordError(DataFormatError):
    """A line that is not a valid record; ``kind`` is ``bad_json`` or ``bad_record``."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def read_lines(path: str | os.PathLike) -> list[str]:
    """Every line of an annotation file (callers skip blank ones, so line numbers stay the file's)."""
    try:
        with open(path, encoding="utf-8") as f:
            return f.read().split("\n")
    except FileNotFoundError:
        raise DataFormatError(f"annotation file not found: {path}") from None
    except UnicodeDecodeError as e:
        raise DataFormatError(f"{path}: not UTF-8 text ({e})") from None


def parse_record(line: str, source: str) -> ChatRecord:
    """One JSONL line -> `ChatRecord`.

    Raises:
        ChatRecordError: invalid JSON or fields of the wrong type (message starts with ``source``).
    """
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        raise ChatRecordError("bad_json", f"{source}: invalid JSON at column {e.colno}: {e.msg}") from None
    if not isinstance(obj, dict):
        raise ChatRecordError("bad_record", f"{source}: expected a JSON object, got {type(obj).__name__}")
    conv = obj.get("conversations")
    if not isinstance(conv, list) or not conv:
        raise ChatRecordError("bad_record", f"{source}: 'conversations' must be a non-empty list")
    for i, turn in enumerate(conv):
        if (
            not isinstance(turn, dict)
            or not isinstance(turn.get("from"), str)
            or not isinstance(turn.get("value"), str)
        ):
            raise ChatRecordError(
                "bad_record", f'{source}: conversations[{i}] must be {{"from": str, "value": str}}, got {turn!r:.80}'
            )
    image = obj.get("image")
    if image is None or image == "" or image == []:
        images: tuple[str, ...] = ()
    elif isinstance(image, str):
        images = (image,)
    elif isinstance(image, list) and all(isinstance(p, str) and p for p in image):
        images = tuple(image)
    else:
        raise ChatRecordError("bad_record", f"{source}: 'image' must be a path or a list of paths, got {image!r:.80}")
    video = obj.get("video") or None
    if video is not None and not isinstance(video, str):
        raise ChatRecordError("bad_record", f"{source}: 'video' must be a path, got {video!r:.80}")
    clip = obj.get("clip")
    if clip is not None and not (
        isinstance(clip, list)
        and len(clip) == 2
        and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in clip)
    ):
        raise ChatRecordError("bad_record", f"{source}: 'clip' must be [start, end] in seconds, got {clip!r:.80}")
    ints = {}
    for key in ("width", "height", "length"):
        value = obj.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value <= 0):
            raise ChatRecordError("bad_record", f"{source}: '{key}' must be a positive integer, got {value!r}")
        ints[key] = value
    return ChatRecord(
        conversations=conv,
        images=images,
        video=video if not images else None,
        clip=tuple(clip) if clip is not None else None,
        id=obj.get("id"),
        source=source,
        **ints,
    )


def line_source(path: str | os.PathLike, index: int) -> str:
    """``file:line`` for the 0-based line ``index``."""
    return f"{Path(path)}:{index + 1}"
