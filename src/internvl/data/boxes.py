"""RefCOCO-style boxes in conversations: LLaVA-1.5's ``[x1, y1, x2, y2]`` (0-1 floats) to InternVL's
``<box>[[x1, y1, x2, y2]]</box>`` (integers in 0-1000), the V1-2-Plus convention (chat spec §10 note).

A bracket counts as a LLaVA box when it holds exactly four numbers in [0, 1], at least one written with a
decimal point (so ``[1, 0, 0, 1]`` lists are left alone), with x1 <= x2 and y1 <= y2. Text inside
``<box>...</box>`` is never touched, so converting twice changes nothing. Coordinates become
``round(v * 1000)``.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from internvl.core.errors import DataFormatError

_NUM = r"([01](?:\.\d+)?|\.\d+)"
_BOX = re.compile(r"\[\s*" + r"\s*,\s*".join([_NUM] * 4) + r"\s*\]")
_CONVERTED = re.compile(r"<box>.*?</box>", re.DOTALL)


def convert_boxes_in_text(text: str) -> tuple[str, int, int]:
    """(new text, boxes converted, boxes already in ``<box>`` form)."""
    converted = 0
    already = sum(max(1, len(re.findall(r"\[\s*-?\d", m.group()))) for m in _CONVERTED.finditer(text))

    def convert(m: re.Match) -> str:
        nonlocal converted
        raw = m.groups()
        values = [float(v) for v in raw]
        if (
            not any("." in v for v in raw)
            or not all(0.0 <= v <= 1.0 for v in values)
            or values[0] > values[2]
            or values[1] > values[3]
        ):
            return m.group()
        converted += 1
        return "<box>[[" + ", ".join(str(round(v * 1000)) for v in values) + "]]</box>"

    pieces, pos = [], 0
    for m in _CONVERTED.finditer(text):  # convert only outside existing <box> spans
        pieces += [_BOX.sub(convert, text[pos : m.start()]), m.group()]
        pos = m.end()
    pieces.append(_BOX.sub(convert, text[pos:]))
    return "".join(pieces), converted, already


@dataclass
class BoxConversionReport:
    input: str
    output: str
    records: int = 0
    records_changed: int = 0
    boxes_converted: int = 0
    boxes_already_converted: int = 0
    changed_lines: list[int] = field(default_factory=list)

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def convert_boxes_file(src: str | os.PathLike, dst: str | os.PathLike) -> BoxConversionReport:
    """Write ``dst``: ``src`` with every record's boxes converted; unchanged lines are copied byte for byte.

    Raises:
        DataFormatError: ``dst`` is ``src``, or a line is not a JSON record with ``conversations`` (file:line).
    """
    src, dst = Path(src), Path(dst)
    if dst.exists() and src.exists() and dst.resolve() == src.resolve():
        raise DataFormatError(f"{dst}: the output must be a new file, not the input")
    try:
        lines = src.read_text(encoding="utf-8").split("\n")
    except FileNotFoundError:
        raise DataFormatError(f"annotation file not found: {src}") from None
    report = BoxConversionReport(str(src), str(dst))
    out = []
    for i, line in enumerate(lines):
        if not line.strip():
            out.append(line)
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataFormatError(f"{src}:{i + 1}: invalid JSON at column {e.colno}: {e.msg}") from None
        turns = record.get("conversations") if isinstance(record, dict) else None
        if not isinstance(turns, list):
            raise DataFormatError(f"{src}:{i + 1}: expected an object with a 'conversations' list")
        report.records += 1
        changed = 0
        for turn in turns:
            if isinstance(turn, dict) and isinstance(turn.get("value"), str):
                turn["value"], n, already = convert_boxes_in_text(turn["value"])
                changed += n
                report.boxes_already_converted += already
        if changed:
            report.records_changed += 1
            report.boxes_converted += changed
            report.changed_lines.append(i + 1)
            out.append(json.dumps(record, ensure_ascii=False))
        else:
            out.append(line)
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_text("\n".join(out), encoding="utf-8")
    return report
