"""MMBench TSV files as the reference's ``eval/mmbench/evaluate_mmbench.py`` reads them (with pandas).

Columns (header row, tab-separated): ``index`` (int), ``question``, ``hint``, ``A`` .. ``E`` (absent or
empty when a question has fewer options), ``answer`` (a letter; only in dev files), ``image`` (base64
of the image file), and for breakdowns ``category``, ``l2-category``, ``split``, ``source``. Circular
copies of question ``i`` (its options rotated) are further rows with index ``i + k * 1_000_000``.
As in VLMEvalKit's files, an ``image`` cell holding only digits (at most 64 characters) refers to the
row with that index.

pandas semantics kept on purpose, because they change the prompt:
* a cell in pandas' default NA set (empty, "nan", "NaN", "None", "NULL", "N/A", ...) is missing, so
  such an option or hint is left out;
* a column whose present cells all parse as integers is read as integers and, when it also has
  missing cells, as floats: option "3" prints as "3.0" in that case; float columns print as floats.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

from internvl.core.errors import DataFormatError
from internvl.data.datasets.bench_items import BenchItem

OPTION_LETTERS = ("A", "B", "C", "D", "E")
# pandas.read_csv's default na_values.
PANDAS_NA = frozenset(
    {
        "",
        "#N/A",
        "#N/A N/A",
        "#NA",
        "-1.#IND",
        "-1.#QNAN",
        "-NaN",
        "-nan",
        "1.#IND",
        "1.#QNAN",
        "<NA>",
        "N/A",
        "NA",
        "NULL",
        "NaN",
        "None",
        "n/a",
        "nan",
        "null",
    }
)
_TEXT_COLUMNS = ("question", "hint", *OPTION_LETTERS)


def read_mmbench(path: str | Path) -> list[BenchItem]:
    """Every row of an MMBench TSV; ids are the ``index`` values as strings."""
    path = Path(path)
    if not path.is_file():
        raise DataFormatError(
            f"MMBench: TSV file not found: {path} (e.g. mmbench_dev_20230712.tsv from the "
            "MMBench / OpenCompass downloads)"
        )
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))  # base64 images are far longer than csv's 128 KiB default
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f, delimiter="\t"))
    if not rows:
        raise DataFormatError(f"{path}: empty file; expected a header row with index, question, A, B, ..., image")
    header, body = rows[0], rows[1:]
    missing = [c for c in ("index", "question", "image") if c not in header]
    if missing:
        raise DataFormatError(f"{path}: header {header[:12]} lacks column(s) {missing}")
    col = {name: i for i, name in enumerate(header)}
    printers = {
        c: _column_printer([r[col[c]] for r in body if len(r) == len(header)]) for c in _TEXT_COLUMNS if c in col
    }
    by_index: dict[str, str] = {}
    items: list[BenchItem] = []
    for lineno, row in enumerate(body, start=2):
        source = f"{path}:{lineno}"
        if len(row) != len(header):
            items.append(
                BenchItem(
                    id=f"line{lineno}",
                    source=source,
                    problem=f"{source}: {len(row)} fields, the header has {len(header)}",
                )
            )
            continue
        cell = {name: row[i] for name, i in col.items()}
        index = cell["index"].strip()
        if not index.lstrip("-").isdigit():
            items.append(
                BenchItem(id=f"line{lineno}", source=source, problem=f"{source}: index {index!r} is not an integer")
            )
            continue
        value = {c: printers[c](cell[c]) for c in printers}
        item = BenchItem(
            id=str(int(index)),
            question=value["question"] or "",
            hint=value.get("hint"),
            options={k: value[k] for k in OPTION_LETTERS if value.get(k) is not None},
            answer=_present(cell.get("answer")),
            meta={
                "index": int(index),
                "category": _present(cell.get("category")),
                "l2-category": _present(cell.get("l2-category")),
                "split": _present(cell.get("split")),
                "columns": header,
                "row": {c: v for c, v in cell.items() if c != "image"},
            },
            source=source,
        )
        image = cell["image"].strip()
        if image:
            by_index[item.id] = image
        items.append(item)
        item.image_b64 = image
    for item in items:  # VLMEvalKit stores a repeated image once and refers to it by row index
        ref = item.image_b64
        if ref is not None and ref.isdigit() and len(ref) <= 64:
            item.image_b64 = by_index.get(str(int(ref)))
            if item.image_b64 is None or item.image_b64.isdigit():
                item.problem = f"{item.source}: image refers to row index {ref}, which has no image"
        if item.problem is None and not item.image_b64:
            item.problem = f"{item.source}: empty image cell"
        if item.problem is None and not item.options:
            item.problem = f"{item.source}: no options (columns A, B, ...)"
    return items


def _present(value: str | None) -> str | None:
    return None if value is None or value in PANDAS_NA else value


def _column_printer(cells: list[str]):
    """How pandas would print this column's cells in an f-string (see the module docstring)."""
    present = [c for c in cells if c not in PANDAS_NA]
    has_na = len(present) < len(cells)

    def as_int(s: str) -> int | None:
        try:
            return int(s)
        except ValueError:
            return None

    def as_float(s: str) -> float | None:
        try:
            return float(s)
        except ValueError:
            return None

    if present and all(as_int(c) is not None for c in present):
        if has_na:
            return lambda c: None if c in PANDAS_NA else str(float(int(c)))
        return lambda c: str(int(c))
    if present and all(as_float(c) is not None for c in present):
        return lambda c: None if c in PANDAS_NA else str(float(c))
    return lambda c: None if c in PANDAS_NA else c


__all__ = ["OPTION_LETTERS", "PANDAS_NA", "read_mmbench"]
