"""``summary.md`` / ``summary.json``: the results in an output folder, laid out like the V1-2 model card.

The card's table has one row per model and these columns, in this order: MMMU (val), MathVista
(testmini), MMBench EN / CN (test), MMVP, MME, ScienceQA (image), POPE, TextVQA, SEEDv1 (image),
VizWiz (test), GQA (test). Benchmarks without a card column follow. Server-scored splits show "server"
(the submission file is named in the details table).
"""

from __future__ import annotations

import json
from pathlib import Path

from internvl.evaluation.mllm.registry import list_benchmarks
from internvl.evaluation.partial_results import write_json_atomic

CARD_COLUMNS = (
    "MMMU",
    "MathVista",
    "MMBench-EN",
    "MMBench-CN",
    "MMVP",
    "MME",
    "ScienceQA",
    "POPE",
    "TextVQA",
    "SEED",
    "VizWiz",
    "GQA",
)


def format_score(result: dict) -> str:
    if result.get("score") is None:
        return "server"
    return f"{result['score']:.1f}"


def summary_rows(results: list[dict]) -> tuple[list[str], list[str]]:
    """(header, values) of the card-style row; when two results share a column (dev and test), the one
    scored locally is shown and the other listed in the details."""
    from internvl.evaluation.mllm.registry import get_benchmark

    cells: dict[str, str] = {}
    extra: dict[str, str] = {}
    for r in results:
        column = get_benchmark(r["benchmark"]).column
        value = format_score(r)
        if column is None:
            extra[r["title"]] = value
        elif column not in cells or cells[column] == "server":
            cells[column] = value
    header = [c for c in CARD_COLUMNS if c in cells] + list(extra)
    return header, [cells.get(c, extra.get(c, "")) for c in header]


def write_summary(out: Path) -> Path:
    """Collect every ``<benchmark>.json`` in ``out`` and write ``summary.md`` and ``summary.json``."""
    names = set(list_benchmarks())
    results = []
    for path in sorted(out.glob("*.json")):
        if path.stem in names:
            results.append(json.loads(path.read_text(encoding="utf-8")))
    models = sorted({r["model"] for r in results})
    header, values = summary_rows(results)
    lines = [
        "| Model | " + " | ".join(header) + " |",
        "|---|" + "---:|" * len(header),
        f"| {', '.join(Path(m).name for m in models)} | " + " | ".join(values) + " |",
        "",
        "| benchmark | metric | score | questions | problems | failed | unparsed | submission |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in results:
        c = r["counts"]
        lines.append(
            f"| {r['title']} | {r['metric']} | {format_score(r)} | {c['questions']} | {c['problems']} | "
            f"{c['failed']} | {c['unparsed']} | {r.get('submission') or ''} |"
        )
    mme = next((r for r in results if r["benchmark"] == "mme"), None)
    if mme is not None:
        lines += ["", f"MME: perception {mme['score']:.2f}, cognition {mme['cognition']:.2f}."]
    path = out / "summary.md"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    write_json_atomic(
        out / "summary.json",
        {
            "models": models,
            "columns": dict(zip(header, values, strict=True)),
            "benchmarks": {r["benchmark"]: {"metric": r["metric"], "score": r["score"]} for r in results},
        },
    )
    return path


__all__ = ["CARD_COLUMNS", "format_score", "summary_rows", "write_summary"]
