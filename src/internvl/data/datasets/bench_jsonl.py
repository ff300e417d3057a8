"""The JSONL / CSV benchmark files of the reference's eval scripts: POPE, TextVQA, VizWiz, GQA, ScienceQA,
SEED and MMVP. Each reader returns one `BenchItem` per line, a malformed line or a missing image
included (with ``problem`` set), in file order.

Paths inside these files are written relative to the reference's ``internvl_chat/`` folder
(``data/textvqa/train_images/x.jpg``) or to the benchmark's image folder; see `reference_path`.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from internvl.core.errors import DataFormatError
from internvl.data.datasets.bench_items import BenchItem, missing_image, reference_path, require_file

POPE_CATEGORIES = ("adversarial", "popular", "random")
OPTION_LETTERS = ("A", "B", "C", "D", "E")


def _jsonl(path: Path) -> Iterator[tuple[int, str, dict | None, str | None]]:
    """(line number, source, object or None, error) per non-empty line."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise DataFormatError(f"{path}: not UTF-8 text ({e})") from None
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        source = f"{path}:{lineno}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            yield lineno, source, None, f"{source}: not valid JSON ({e})"
            continue
        if not isinstance(obj, dict):
            yield lineno, source, None, f"{source}: expected a JSON object, got {type(obj).__name__}"
            continue
        yield lineno, source, obj, None


def _fields(obj: dict, source: str, names: tuple[str, ...]) -> str | None:
    missing = [n for n in names if n not in obj]
    return f"{source}: missing field(s) {missing}" if missing else None


# -- POPE ------------------------------------------------------------------------------------------------------
def read_pope(folder: str | Path) -> list[BenchItem]:
    """``llava_pope_test.jsonl`` (question_id, image, text, category) + labels from ``coco/coco_pope_<cat>.json``.

    As ``eval_pope.py`` does, the k-th question of a category gets the label on the k-th line of that
    category's file (the question file carries no labels); a label line whose image differs from the
    question's is reported as a problem. Images: ``val2014/<image>``.
    """
    folder = Path(folder)
    qfile = require_file(
        folder / "llava_pope_test.jsonl",
        "POPE question file",
        "It is LLaVA's playground/data/eval/pope/llava_pope_test.jsonl.",
    )
    labels: dict[str, list[dict]] = {}
    for cat in POPE_CATEGORIES:
        lfile = folder / "coco" / f"coco_pope_{cat}.json"
        if lfile.is_file():
            labels[cat] = [obj or {"_error": err} for _, _, obj, err in _jsonl(lfile)]
    if not labels:
        raise DataFormatError(
            f"POPE: no label files {folder}/coco/coco_pope_{{adversarial,popular,random}}.json "
            "(from the POPE repository, output/coco/)"
        )
    items: list[BenchItem] = []
    seen: dict[str, int] = {}
    for lineno, source, obj, err in _jsonl(qfile):
        item = BenchItem(id=f"line{lineno}", source=source, problem=err)
        items.append(item)
        if obj is None:
            continue
        item.problem = _fields(obj, source, ("question_id", "image", "text", "category"))
        if item.problem:
            continue
        item.id, item.question = str(obj["question_id"]), str(obj["text"])
        cat = str(obj["category"])
        item.meta["category"] = cat
        item.image = folder / "val2014" / str(obj["image"])
        k = seen.get(cat, 0)
        seen[cat] = k + 1
        rows = labels.get(cat)
        if rows is None:
            item.problem = f"{source}: category {cat!r} has no label file {folder}/coco/coco_pope_{cat}.json"
        elif k >= len(rows):
            item.problem = f"{source}: question {k + 1} of category {cat!r} but its label file has {len(rows)} lines"
        elif "label" not in rows[k] or ("image" in rows[k] and rows[k]["image"] != obj["image"]):
            item.problem = (
                f"{source}: label line {k + 1} of coco_pope_{cat}.json ({rows[k].get('image')}, "
                f"{rows[k].get('label', rows[k].get('_error'))}) does not match image {obj['image']}"
            )
        else:
            item.answer = str(rows[k]["label"])
        missing_image(item)
    return items


# -- open-ended VQA ----------------------------------------------------------------------------------------------
def read_vqa_jsonl(
    data_dir: str | Path, questions: str | Path, annotations: str | Path | None = None, *, answer_field: str = "answer"
) -> list[BenchItem]:
    """The reference's VQA JSONL (``question_id``, ``image``, ``question`` [, ``answer``]) with, when given,
    the VQA-format annotation JSON (``{"annotations": [{"question_id", "answers": [{"answer"}, ...]}]}``)
    whose human answers become ``item.answer`` (a list). Without annotations ``answer`` is the line's own
    ``answer_field`` (GQA) or None (test splits)."""
    data_dir, qfile = Path(data_dir), Path(questions)
    require_file(qfile, "question file", "See README.md (Benchmarks, data layout) for where it comes from.")
    human: dict[str, list[str]] | None = None
    if annotations is not None:
        afile = require_file(Path(annotations), "annotation file", "It holds the human answers of the val split.")
        try:
            entries = json.loads(afile.read_text(encoding="utf-8"))["annotations"]
            human = {str(e["question_id"]): [str(a["answer"]) for a in e["answers"]] for e in entries}
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise DataFormatError(
                f"{afile}: expected {{'annotations': [{{'question_id', 'answers': "
                f"[{{'answer'}}]}}]}} ({type(e).__name__}: {e})"
            ) from None
    items: list[BenchItem] = []
    for lineno, source, obj, err in _jsonl(qfile):
        item = BenchItem(id=f"line{lineno}", source=source, problem=err)
        items.append(item)
        if obj is None:
            continue
        item.problem = _fields(obj, source, ("question_id", "image", "question"))
        if item.problem:
            continue
        item.id, item.question = str(obj["question_id"]), str(obj["question"])
        item.meta["image"] = str(obj["image"])
        item.image = reference_path(data_dir, qfile.parent, str(obj["image"]))
        if human is not None:
            item.answer = human.get(item.id)
            if item.answer is None:
                item.problem = f"{source}: question_id {item.id} has no human answers in {annotations}"
        else:
            item.answer = obj.get(answer_field)
        missing_image(item)
    return items


# -- multiple choice --------------------------------------------------------------------------------------------
def read_scienceqa(data_dir: str | Path, path: str | Path) -> list[BenchItem]:
    """``scienceqa_test_img.jsonl``: image, hint, question, choices (list), answer (index into choices)."""
    data_dir, path = Path(data_dir), Path(path)
    require_file(path, "ScienceQA file", "It is the reference's data/scienceqa/scienceqa_test_img.jsonl.")
    items = []
    for lineno, source, obj, err in _jsonl(path):
        item = BenchItem(id=f"line{lineno}", source=source, problem=err)
        items.append(item)
        if obj is None:
            continue
        item.problem = _fields(obj, source, ("image", "question", "choices", "answer"))
        if item.problem:
            continue
        choices = obj["choices"]
        if not isinstance(choices, list) or not 1 <= len(choices) <= len(OPTION_LETTERS):
            item.problem = f"{source}: choices must be a list of 1 to 5 strings"
            continue
        item.id = str(obj.get("question_id", obj.get("id", f"line{lineno}")))
        item.question, item.hint = str(obj["question"]), obj.get("hint") or None
        item.options = {OPTION_LETTERS[i]: str(c) for i, c in enumerate(choices)}
        answer = obj["answer"]
        if not isinstance(answer, int) or not 0 <= answer < len(choices):
            item.problem = f"{source}: answer {answer!r} is not an index into the {len(choices)} choices"
        else:
            item.answer = OPTION_LETTERS[answer]
        item.image = reference_path(data_dir, path.parent, str(obj["image"]))
        missing_image(item)
    return items


def read_seed(folder: str | Path) -> list[BenchItem]:
    """``seed.jsonl`` (question_id, image, text with the options and instruction, answer letter) under
    ``folder``; images relative to ``folder``. ``question_type_id`` (1-9 image, 10-12 video) comes from the
    line or, when present, ``SEED-Bench.json``'s ``questions``, as ``calculation.py`` reads it."""
    folder = Path(folder)
    path = require_file(folder / "seed.jsonl", "SEED file", "It is the reference's data/SEED/seed.jsonl.")
    types: dict[str, Any] = {}
    anno = folder / "SEED-Bench.json"
    if anno.is_file():
        try:
            types = {str(q["question_id"]): q for q in json.loads(anno.read_text(encoding="utf-8"))["questions"]}
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise DataFormatError(
                f"{anno}: expected {{'questions': [{{'question_id', 'question_type_id', 'answer'}}]}} ({e})"
            ) from None
    items = []
    for lineno, source, obj, err in _jsonl(path):
        item = BenchItem(id=f"line{lineno}", source=source, problem=err)
        items.append(item)
        if obj is None:
            continue
        item.problem = _fields(obj, source, ("question_id", "image", "text"))
        if item.problem:
            continue
        item.id, item.question = str(obj["question_id"]), str(obj["text"])
        ref = types.get(item.id, {})
        item.answer = ref.get("answer", obj.get("answer"))
        qtype = ref.get("question_type_id", obj.get("question_type_id"))
        item.meta["question_type_id"] = qtype
        if item.answer is None:
            item.problem = f"{source}: no answer (neither in the line nor in {anno})"
        item.image = folder / str(obj["image"])
        missing_image(item)
    return items


def read_mmvp(folder: str | Path) -> list[BenchItem]:
    """``Questions.csv`` (lndex [sic] or Index, Question, Options "(a) x (b) y", Correct Answer "(a)") and
    ``MMVP Images/<index>.jpg``. Row order matters: consecutive rows form MMVP's pairs."""
    folder = Path(folder)
    path = require_file(folder / "Questions.csv", "MMVP question file", "It is MMVP's Questions.csv (HF MMVP/MMVP).")
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    items = []
    for n, row in enumerate(rows, start=2):
        source = f"{path}:{n}"
        index = row.get("lndex", row.get("Index"))
        item = BenchItem(id=str(index if index else f"line{n}"), source=source)
        items.append(item)
        if not index or not row.get("Question") or not row.get("Options") or not row.get("Correct Answer"):
            item.problem = f"{source}: needs Index (or lndex), Question, Options and Correct Answer"
            continue
        item.question = row["Question"]
        item.meta["options_text"] = row["Options"]
        item.answer = row["Correct Answer"]
        item.image = folder / "MMVP Images" / f"{index}.jpg"
        missing_image(item)
    return items


__all__ = ["POPE_CATEGORIES", "read_mmvp", "read_pope", "read_scienceqa", "read_seed", "read_vqa_jsonl"]
