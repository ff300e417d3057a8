"""MMMU from the Hugging Face dataset files (``MMMU/MMMU``: one folder per subject with
``<split>-*.parquet``), as the reference reads them with ``load_dataset``. Columns used: ``id``
(``<split>_<Subject>_<n>``), ``question``, ``options`` (a Python list literal), ``answer``,
``question_type`` (``multiple-choice`` / ``open``) and ``image_1`` (the reference uses only the first
image without dynamic tiling). Needs ``pyarrow``.
"""

from __future__ import annotations

import ast
from pathlib import Path

from internvl.data.datasets.bench_items import BenchItem, parquet_image_bytes, parquet_rows

LETTERS = "ABCDEFGHIJKLM"


def read_mmmu(folder: str | Path, split: str = "validation") -> list[BenchItem]:
    """Every question of ``split`` under ``folder``, subjects in sorted folder order."""
    items: list[BenchItem] = []
    for source, row in parquet_rows(
        folder,
        split,
        ("id", "question", "options", "answer", "question_type", "image_1"),
        benchmark="MMMU",
        pattern=f"<Subject>/{split}-*.parquet",
        snapshot="MMMU/MMMU",
    ):
        item = BenchItem(
            id=str(row["id"]),
            question=str(row["question"] or "").strip(),
            source=source,
            image_bytes=parquet_image_bytes(row["image_1"]),
            meta={"question_type": row["question_type"], "subject": "_".join(str(row["id"]).split("_")[1:-1])},
        )
        try:
            choices = ast.literal_eval(row["options"]) if row["options"] else []
            if not isinstance(choices, list) or len(choices) > len(LETTERS):
                raise ValueError("not a list of at most 13 options")
            item.options = {LETTERS[i]: str(c).strip() for i, c in enumerate(choices)}
        except (ValueError, SyntaxError) as e:
            item.problem = f"{source}: options {str(row['options'])[:80]!r} unreadable ({e})"
        answer = row["answer"]
        if isinstance(answer, str) and answer.startswith("["):
            try:
                answer = [str(a) for a in ast.literal_eval(answer)]
            except (ValueError, SyntaxError):
                pass
        item.answer = answer
        if item.problem is None and not item.image_bytes:
            item.problem = f"{source}: no image_1"
        items.append(item)
    return items


__all__ = ["read_mmmu"]
