"""The InternVL-Chat-V1-2 card's benchmarks: prompt and scoring rule of each reference eval script (chat
spec §10). Paths are relative to ``--data``, which plays the role of the reference's ``internvl_chat/data``.
"""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path
from typing import Any

from internvl.data.datasets.bench_items import BenchItem
from internvl.data.datasets.bench_jsonl import read_mmvp, read_pope, read_scienceqa, read_seed, read_vqa_jsonl
from internvl.data.datasets.mathvista import read_mathvista
from internvl.data.datasets.mmbench import read_mmbench
from internvl.data.datasets.mme import QUESTIONS_DIR, read_mme
from internvl.data.datasets.mmmu import read_mmmu
from internvl.evaluation.metrics.choice import (
    circular_accuracy,
    circular_group,
    extract_choice,
    extract_choice_scienceqa,
    mmvp_answer,
    mmvp_options,
    pair_accuracy,
    seed_choice,
)
from internvl.evaluation.metrics.mathvista import extract_answer, mathvista_correct, normalize_extraction
from internvl.evaluation.metrics.mmmu import eval_multi_choice, eval_open, parse_open_response
from internvl.evaluation.metrics.vqa import gqa_correct, gqa_normalize, vqa_score
from internvl.evaluation.metrics.yesno import (
    MME_COGNITION,
    MME_PERCEPTION,
    mme_label,
    mme_normalize,
    mme_task_score,
    mme_totals,
    pope_label,
    pope_metrics,
)
from internvl.evaluation.mllm.base import BASE_PROMPT, CHOICE_PROMPT, Benchmark, options_text, percent
from internvl.evaluation.partial_results import write_json_atomic


# -- yes / no -----------------------------------------------------------------------------------------------
class MME(Benchmark):
    name, title, column = "mme", "MME", "MME"
    max_new_tokens, min_new_tokens, score_scale = 20, None, "points"
    about = "14 yes/no tasks; perception (10 tasks) and cognition (4) sums of 100*(acc + acc+)"

    def files(self, data_dir: Path) -> list[Path]:
        return sorted((data_dir / "mme" / QUESTIONS_DIR).glob("*.txt"))

    def read(self, data_dir: Path) -> list[BenchItem]:
        return read_mme(data_dir / "mme")

    def prompt(self, item: BenchItem) -> str:
        return item.question + " " + BASE_PROMPT

    def score(self, items, answers):
        by_task: dict[str, list[list[tuple[str, str | None]]]] = defaultdict(list)
        rows: dict[str, list[tuple[BenchItem, str | None]]] = defaultdict(list)
        unparsed = []
        for item in items:
            ans = answers.get(item.id)
            label = None if ans is None else mme_label(mme_normalize(ans))
            if label == "other":
                unparsed.append({"id": item.id, "answer": ans})
            rows[item.meta.get("task", "?")].append((item, label))
        for task, pairs in rows.items():  # consecutive lines = the two questions of one image
            for i in range(0, len(pairs), 2):
                by_task[task].append([(str(it.answer or ""), label) for it, label in pairs[i : i + 2]])
        tasks = {t: mme_task_score(images) for t, images in sorted(by_task.items())}
        totals = mme_totals(tasks)
        known = set(MME_PERCEPTION) | set(MME_COGNITION)
        return {
            "metric": "perception",
            "score": totals["perception"],
            "cognition": totals["cognition"],
            "breakdown": tasks,
            "other_tasks": sorted(set(tasks) - known),
            "unparsed": unparsed,
        }


class POPE(Benchmark):
    name, title, column = "pope", "POPE", "POPE"
    max_new_tokens = 100
    about = "COCO object hallucination (adversarial/popular/random); mean F1 of the 3 categories"

    def files(self, data_dir: Path) -> list[Path]:
        root = data_dir / "pope"
        return [root / "llava_pope_test.jsonl", *sorted((root / "coco").glob("coco_pope_*.json"))]

    def read(self, data_dir: Path) -> list[BenchItem]:
        return read_pope(data_dir / "pope")

    def prompt(self, item: BenchItem) -> str:
        # The reference asserts the LLaVA suffix is there and replaces it by the same string; a question
        # without it gets it appended.
        text = item.question
        return text.strip() if BASE_PROMPT in text else (text.strip() + " " + BASE_PROMPT)

    def score(self, items, answers):
        per: dict[str, tuple[list[str], list[str | None]]] = defaultdict(lambda: ([], []))
        for item in items:
            if item.answer is None:  # no label: cannot be scored either way (listed as a problem)
                continue
            ans = answers.get(item.id)
            labels, preds = per[item.meta["category"]]
            labels.append(item.answer)
            preds.append(None if ans is None else pope_label(ans))
        cats = {c: pope_metrics(*per[c]) for c in sorted(per)}
        f1 = [m["f1"] for m in cats.values()]
        return {
            "metric": "mean F1",
            "score": 100 * sum(f1) / len(f1) if f1 else 0.0,
            "breakdown": cats,
            "accuracy": 100 * sum(m["accuracy"] for m in cats.values()) / len(cats) if cats else 0.0,
            "unparsed": [],
        }


# -- open-ended VQA -------------------------------------------------------------------------------------------
class _VQA(Benchmark):
    folder: str = ""
    questions: str = ""
    annotations: str | None = None
    instruction = BASE_PROMPT
    max_new_tokens = 10

    def files(self, data_dir: Path) -> list[Path]:
        names = [self.questions] + ([self.annotations] if self.annotations else [])
        return [data_dir / self.folder / n for n in names]

    def read(self, data_dir: Path) -> list[BenchItem]:
        ann = data_dir / self.folder / self.annotations if self.annotations else None
        return read_vqa_jsonl(data_dir, data_dir / self.folder / self.questions, ann)

    def prompt(self, item: BenchItem) -> str:
        return item.question + " " + self.instruction

    def score(self, items, answers):
        if not self.local_score:
            return {"metric": "server", "score": None, "breakdown": {}, "unparsed": []}
        scores = [
            vqa_score(answers[i.id], i.answer) if answers.get(i.id) is not None and i.answer else 0.0 for i in items
        ]
        return {"metric": "VQA accuracy", "score": percent(sum(scores), len(scores)), "breakdown": {}, "unparsed": []}


class TextVQA(_VQA):
    name, title, column = "textvqa_val", "TextVQA (val)", "TextVQA"
    folder, questions, annotations = "textvqa", "textvqa_val.jsonl", "textvqa_val_annotations.json"
    about = "TextVQA val, VQA soft accuracy (EvalAI normalisation)"


class TextVQAOCR(TextVQA):
    name, title = "textvqa_val_ocr", "TextVQA (val, OCR tokens)"
    questions = "textvqa_val_llava.jsonl"
    about = "TextVQA val with LLaVA's OCR-token questions"


class VizWizVal(_VQA):
    name, title, column = "vizwiz_val", "VizWiz (val)", None
    folder, questions, annotations = "vizwiz", "vizwiz_val.jsonl", "vizwiz_val_annotations.json"
    instruction = "When the provided information is insufficient, respond with 'Unanswerable'. " + BASE_PROMPT
    about = "VizWiz val, VQA soft accuracy"


class VizWizTest(VizWizVal):
    name, title, column = "vizwiz_test", "VizWiz (test)", "VizWiz"
    questions, annotations, local_score = "vizwiz_test.jsonl", None, False
    about = "VizWiz test: writes the EvalAI submission JSON"

    def submission(self, items, answers, out_dir):
        rows = [{"image": i.id.replace("data/vizwiz/test/", ""), "answer": answers.get(i.id) or ""} for i in items]
        return write_json_atomic(out_dir / "vizwiz_test_submission.json", rows)


class GQA(_VQA):
    name, title, column = "gqa_testdev", "GQA (test-dev balanced)", "GQA"
    folder, questions = "gqa", "llava_gqa_testdev_balanced_qwen_format.jsonl"
    about = "GQA test-dev balanced, exact match after rstrip('.').lower()"

    def score(self, items, answers):
        right = sum(
            answers.get(i.id) is not None and i.answer is not None and gqa_correct(answers[i.id], str(i.answer))
            for i in items
        )
        return {"metric": "accuracy", "score": percent(right, len(items)), "breakdown": {}, "unparsed": []}

    def submission(self, items, answers, out_dir):
        rows = [{"questionId": i.id, "prediction": gqa_normalize(answers.get(i.id) or "")} for i in items]
        return write_json_atomic(out_dir / "testdev_balanced_predictions.json", rows)


# -- multiple choice ------------------------------------------------------------------------------------------
class _Choice(Benchmark):
    max_new_tokens = 100
    extract = staticmethod(extract_choice)

    def _judge(self, items, answers) -> tuple[dict[str, bool], list[dict]]:
        correct, unparsed = {}, []
        for item in items:
            ans = answers.get(item.id)
            pred = None if ans is None else self.extract(ans, item.options)
            if ans is not None and pred not in item.options:
                unparsed.append({"id": item.id, "answer": ans, "extracted": pred})
            correct[item.id] = pred is not None and item.answer is not None and pred == item.answer
        return correct, unparsed


class MMBench(_Choice):
    file: str = ""
    language = "en"
    requires = ("openpyxl",)

    def files(self, data_dir: Path) -> list[Path]:
        return [data_dir / "mmbench" / self.file]

    def read(self, data_dir: Path) -> list[BenchItem]:
        return read_mmbench(data_dir / "mmbench" / self.file)

    def prompt(self, item: BenchItem) -> str:
        question = (item.hint + "\n" + item.question) if item.hint is not None else item.question
        for key, text in item.options.items():
            question += f"\n{key}. {text}"
        return question + "\n" + CHOICE_PROMPT[self.language]

    def score(self, items, answers):
        correct, unparsed = self._judge(items, answers)
        if not self.local_score:
            return {"metric": "server", "score": None, "breakdown": {}, "unparsed": unparsed}
        groups: dict[int, list[bool]] = defaultdict(list)
        category: dict[int, str] = {}
        for item in items:
            if "index" not in item.meta:  # malformed row: no question to attach it to
                continue
            g = circular_group(item.meta["index"])
            groups[g].append(correct[item.id])
            if item.meta["index"] == g or g not in category:
                category[g] = item.meta.get("category") or "?"
        right, total = circular_accuracy(groups)
        by_cat: dict[str, dict[int, list[bool]]] = defaultdict(dict)
        for g, rows in groups.items():
            by_cat[category[g]][g] = rows
        breakdown = {c: percent(*circular_accuracy(gs)) for c, gs in sorted(by_cat.items())}
        base = [correct[i.id] for i in items if i.meta.get("index", -1) == circular_group(i.meta.get("index", -1))]
        return {
            "metric": "circular accuracy",
            "score": percent(right, total),
            "breakdown": breakdown,
            "questions": total,
            "single_pass_accuracy": percent(sum(base), len(base)),
            "unparsed": unparsed,
        }

    def submission(self, items, answers, out_dir):
        """The reference's xlsx: the TSV's columns without hint/category/source/image/comment/l2-category,
        a ``prediction`` column (the extracted letter) inserted as the 7th column."""
        from openpyxl import Workbook

        header = [
            c
            for c in next((i.meta["columns"] for i in items if "columns" in i.meta), [])
            if c not in ("hint", "category", "source", "image", "comment", "l2-category")
        ]
        header.insert(min(6, len(header)), "prediction")
        book = Workbook()
        sheet = book.active
        sheet.append(header)
        for item in items:
            if "row" not in item.meta:
                continue
            ans = answers.get(item.id)
            row = dict(item.meta["row"], prediction=None if ans is None else self.extract(ans, item.options))
            sheet.append([_cell(row.get(c)) for c in header])
        path = out_dir / f"{self.name}_submission.xlsx"
        book.save(path)
        return path


_XML_ILLEGAL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")


def _cell(value: Any) -> Any:
    """An xlsx cell value: integer strings as numbers; control characters (which XML, hence openpyxl,
    refuses) dropped, so one garbled answer cannot fail the whole submission file."""
    if isinstance(value, str) and value.lstrip("-").isdigit():
        return int(value)
    if isinstance(value, str):
        return _XML_ILLEGAL.sub("", value)
    return value


class MMBenchDevEN(MMBench):
    name, title, column = "mmbench_dev_en", "MMBench (dev, EN)", "MMBench-EN"
    file = "mmbench_dev_20230712.tsv"
    about = "MMBench dev EN (TSV); circular accuracy + xlsx for the server"


class MMBenchDevCN(MMBench):
    name, title, column = "mmbench_dev_cn", "MMBench (dev, CN)", "MMBench-CN"
    file, language = "mmbench_dev_cn_20231003.tsv", "cn"
    about = "MMBench dev CN (TSV); circular accuracy + xlsx for the server"


class MMBenchTestEN(MMBench):
    name, title, column = "mmbench_test_en", "MMBench (test, EN)", "MMBench-EN"
    file, local_score = "mmbench_test_en_20231003.tsv", False
    about = "MMBench test EN: xlsx submission for the MMBench server"


class MMBenchTestCN(MMBench):
    name, title, column = "mmbench_test_cn", "MMBench (test, CN)", "MMBench-CN"
    file, language, local_score = "mmbench_test_cn_20231003.tsv", "cn", False
    about = "MMBench test CN: xlsx submission for the MMBench server"


class ScienceQA(_Choice):
    name, title, column = "scienceqa_test", "ScienceQA (image, test)", "ScienceQA"
    extract = staticmethod(extract_choice_scienceqa)
    about = "ScienceQA test questions with an image; accuracy"

    def files(self, data_dir: Path) -> list[Path]:
        return [data_dir / "scienceqa" / "scienceqa_test_img.jsonl"]

    def read(self, data_dir: Path) -> list[BenchItem]:
        return read_scienceqa(data_dir, data_dir / "scienceqa" / "scienceqa_test_img.jsonl")

    def prompt(self, item: BenchItem) -> str:
        question = (item.hint + "\n" + item.question) if item.hint else item.question
        return (question + "\n" + options_text(item.options) + "\n" + CHOICE_PROMPT["en"]).strip()

    def score(self, items, answers):
        correct, unparsed = self._judge(items, answers)
        return {
            "metric": "accuracy",
            "score": percent(sum(correct.values()), len(items)),
            "breakdown": {},
            "unparsed": unparsed,
        }


class MMVP(_Choice):
    name, title, column = "mmvp", "MMVP", "MMVP"
    about = "MMVP, 150 pairs; a pair counts when both answers are right"

    def files(self, data_dir: Path) -> list[Path]:
        return [data_dir / "MMVP" / "Questions.csv"]

    def read(self, data_dir: Path) -> list[BenchItem]:
        items = read_mmvp(data_dir / "MMVP")
        for item in items:
            if item.problem is None:
                item.options = mmvp_options(item.meta["options_text"])
                item.answer = mmvp_answer(item.answer)
        return items

    def prompt(self, item: BenchItem) -> str:
        return item.question + "\n" + options_text(item.options) + "\n" + CHOICE_PROMPT["en"]

    def score(self, items, answers):
        correct, unparsed = self._judge(items, answers)
        right, pairs = pair_accuracy([correct[i.id] for i in items])
        return {
            "metric": "pair accuracy",
            "score": percent(right, pairs),
            "pairs": pairs,
            "question_accuracy": percent(sum(correct.values()), len(items)),
            "breakdown": {},
            "unparsed": unparsed,
        }


class SEED(Benchmark):
    name, title, column = "seed_image", "SEED (v1, image)", "SEED"
    max_new_tokens = 100
    about = "SEED-Bench v1 image questions (types 1-9); first character vs the answer letter"

    def files(self, data_dir: Path) -> list[Path]:
        root = data_dir / "SEED"
        return [root / "seed.jsonl"] + ([root / "SEED-Bench.json"] if (root / "SEED-Bench.json").is_file() else [])

    def read(self, data_dir: Path) -> list[BenchItem]:
        return read_seed(data_dir / "SEED")

    def prompt(self, item: BenchItem) -> str:
        return item.question

    def score(self, items, answers):
        per: dict[str, list[bool]] = defaultdict(list)
        unparsed = []
        for item in items:
            ans = answers.get(item.id)
            pred = None if ans is None else seed_choice(ans)
            if ans is not None and pred not in ("A", "B", "C", "D"):
                unparsed.append({"id": item.id, "answer": ans, "extracted": pred})
            qtype = item.meta.get("question_type_id")
            per[str(qtype)].append(pred is not None and pred == item.answer)
        image = [ok for t, rows in per.items() for ok in rows if not (t.isdigit() and int(t) >= 10)]
        return {
            "metric": "image accuracy",
            "score": percent(sum(image), len(image)),
            "breakdown": {t: percent(sum(r), len(r)) for t, r in sorted(per.items())},
            "unparsed": unparsed,
        }


_MMMU_PROMPT = {"multiple-choice": CHOICE_PROMPT["en"], "open": BASE_PROMPT}


class MMMU(Benchmark):
    name, title, column = "mmmu_val", "MMMU (val)", "MMMU"
    max_new_tokens = 100
    requires = ("pyarrow",)
    about = "MMMU validation, 30 subjects (HF parquet); letter match / MMMU's open-answer parser"

    def files(self, data_dir: Path) -> list[Path]:
        return sorted((data_dir / "MMMU").rglob("validation-*.parquet"))

    def read(self, data_dir: Path) -> list[BenchItem]:
        return read_mmmu(data_dir / "MMMU", "validation")

    def prompt(self, item: BenchItem) -> str:
        question = item.question
        if item.options:
            question += "\n" + options_text(item.options)
        return (question + "\n" + _MMMU_PROMPT.get(item.meta["question_type"], BASE_PROMPT)).strip()

    def score(self, items, answers):
        per: dict[str, list[bool]] = defaultdict(list)
        unparsed = []
        for item in items:
            ans, ok = answers.get(item.id), False
            if ans is not None and item.answer is not None:
                if item.options:  # the reference post-processes every question with options to a letter
                    pred = extract_choice(ans, item.options)
                    if pred not in item.options:
                        unparsed.append({"id": item.id, "answer": ans, "extracted": pred})
                    ok = (
                        eval_multi_choice(item.answer, pred)
                        if item.meta["question_type"] == "multiple-choice"
                        else eval_open(item.answer, parse_open_response(pred))
                    )
                else:
                    ok = eval_open(item.answer, parse_open_response(ans))
            per[item.meta.get("subject") or "?"].append(ok)
        right = sum(sum(v) for v in per.values())
        return {
            "metric": "accuracy",
            "score": percent(right, len(items)),
            "breakdown": {k: percent(sum(v), len(v)) for k, v in sorted(per.items())},
            "unparsed": unparsed,
        }


class MathVista(Benchmark):
    name, title, column = "mathvista_testmini", "MathVista (testmini)", "MathVista"
    max_new_tokens = 4096
    requires = ("pyarrow",)
    about = "MathVista testmini (HF parquet); rule-based answer extraction (no GPT judge), exact match"

    def files(self, data_dir: Path) -> list[Path]:
        return sorted((data_dir / "MathVista").rglob("testmini-*.parquet"))

    def read(self, data_dir: Path) -> list[BenchItem]:
        return read_mathvista(data_dir / "MathVista", "testmini")

    def prompt(self, item: BenchItem) -> str:
        return item.question  # the dataset's `query`, hint included, verbatim

    def score(self, items, answers):
        per: dict[str, list[bool]] = defaultdict(list)
        unparsed, correct = [], 0
        for item in items:
            m, ans = item.meta, answers.get(item.id)
            ok = False
            if ans is not None:
                extraction = extract_answer(ans, m.get("question_type", ""), m.get("answer_type", ""), m.get("choices"))
                if extraction == "":
                    unparsed.append({"id": item.id, "answer": ans})
                else:
                    pred = normalize_extraction(
                        extraction,
                        m.get("choices"),
                        m.get("question_type", ""),
                        m.get("answer_type", ""),
                        m.get("precision"),
                    )
                    ok = mathvista_correct(pred, str(item.answer))
            correct += ok
            per[f"question_type={m.get('question_type')}"].append(ok)
            if m.get("task"):
                per[f"task={m['task']}"].append(ok)
        return {
            "metric": "accuracy",
            "score": percent(correct, len(items)),
            "breakdown": {k: percent(sum(v), len(v)) for k, v in sorted(per.items())},
            "unparsed": unparsed,
        }


BENCHMARKS: tuple[type[Benchmark], ...] = (
    MMMU,
    MathVista,
    MME,
    MMBenchDevEN,
    MMBenchDevCN,
    MMBenchTestEN,
    MMBenchTestCN,
    POPE,
    TextVQA,
    TextVQAOCR,
    VizWizVal,
    VizWizTest,
    GQA,
    ScienceQA,
    MMVP,
    SEED,
)


__all__ = [
    "BENCHMARKS",
    "GQA",
    "MME",
    "MMVP",
    "POPE",
    "SEED",
    "MMBench",
    "ScienceQA",
    "TextVQA",
    "VizWizTest",
    "VizWizVal",
]
