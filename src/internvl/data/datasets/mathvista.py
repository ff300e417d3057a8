"""MathVista (testmini / test) from the Hugging Face dataset files, as the reference reads them with
``load_dataset('AI4Math/MathVista')``: one parquet file per split (``data/testmini-*.parquet``) with
columns ``pid``, ``query`` (the prompt, hint included), ``decoded_image`` (encoded image bytes),
``choices``, ``precision``, ``answer``, ``question_type``, ``answer_type``, ``metadata``.
Needs ``pyarrow`` (``pip install internvl[bench]``).
"""

from __future__ import annotations

from pathlib import Path

from internvl.data.datasets.bench_items import BenchItem, parquet_image_bytes, parquet_rows

COLUMNS = ("pid", "query", "decoded_image", "choices", "precision", "answer", "question_type", "answer_type")


def read_mathvista(folder: str | Path, split: str = "testmini") -> list[BenchItem]:
    """Every problem of ``split`` found in ``folder/**/<split>-*.parquet`` (a snapshot of the HF repo)."""
    items: list[BenchItem] = []
    for source, row in parquet_rows(
        folder,
        split,
        COLUMNS,
        benchmark="MathVista",
        pattern=f"{split}-*.parquet",
        snapshot="AI4Math/MathVista: data/testmini-00000-of-00001-*.parquet",
    ):
        item = BenchItem(
            id=str(row["pid"]),
            question=str(row["query"] or ""),
            answer=row["answer"],
            source=source,
            image_bytes=parquet_image_bytes(row["decoded_image"]),
            meta={
                "question_type": row["question_type"],
                "answer_type": row["answer_type"],
                "choices": row["choices"],
                "precision": row["precision"],
                "task": (row.get("metadata") or {}).get("task"),
            },
        )
        if not item.image_bytes:
            item.problem = f"{source}: no decoded_image bytes"
        elif not item.question:
            item.problem = f"{source}: empty query"
        items.append(item)
    return items


__all__ = ["read_mathvista"]
