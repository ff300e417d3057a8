"""Yes/no benchmarks: MME (acc, acc+, perception / cognition sums) and POPE (acc, precision, recall, F1).

MME follows the reference in two steps (chat spec §10). ``mme_normalize`` is the eval script's
``post_processing`` (drop newlines; 不是 -> No, 是 -> Yes, 否 -> No; lower-case; true -> yes, false -> no;
delete CJK characters). ``mme_label`` is MME's ``calculation.py``: "yes"/"no" as is, else "yes" or "no"
found in the first 4 characters (yes first), else "other" (always wrong). A task scores
``100 * acc + 100 * acc+`` where acc+ is the share of images whose two questions are both right;
perception sums 10 tasks (max 2000), cognition 4 (max 800).

POPE follows ``eval_pope.py``: keep the text before the first ".", delete commas, split on spaces;
"No", "not" or "no" among the words -> no, anything else -> yes. Per category: accuracy, precision,
recall, F1 and the yes-ratio; the reported score is the mean F1 of the categories. Pure.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

MME_PERCEPTION = (
    "existence",
    "count",
    "position",
    "color",
    "posters",
    "celebrity",
    "scene",
    "landmark",
    "artwork",
    "OCR",
)
MME_COGNITION = ("commonsense_reasoning", "numerical_calculation", "text_translation", "code_reasoning")
_CJK = re.compile(r"[\u4e00-\u9fa5]")


def mme_normalize(response: str) -> str:
    """The MME eval script's ``post_processing`` of the raw answer."""
    text = response.replace("\n", "").replace("不是", "No").replace("是", "Yes").replace("否", "No")
    text = text.lower().replace("true", "yes").replace("false", "no")
    return _CJK.sub("", text)


def mme_label(prediction: str) -> str:
    """MME ``calculation.py``'s ``parse_pred_ans`` on a lower-cased prediction: yes, no or other."""
    pred = prediction.lower()
    if pred in ("yes", "no"):
        return pred
    head = pred[:4]
    if "yes" in head:
        return "yes"
    if "no" in head:
        return "no"
    return "other"


def mme_task_score(images: Sequence[Sequence[tuple[str, str]]]) -> dict:
    """One MME task from its images, each a list of ``(gt, label)`` (2 per image in the official files).

    ``label`` is `mme_label`'s output or ``None`` for a question that could not be answered (wrong).
    Returns ``acc``, ``acc_plus`` (fractions), ``score`` (``100 * (acc + acc_plus)``), ``questions``,
    ``images`` and ``other`` (answers that were neither yes nor no, unanswered ones included).
    """
    rows = [(gt.lower(), label) for image in images for gt, label in image]
    if not rows:
        return {"acc": 0.0, "acc_plus": 0.0, "score": 0.0, "questions": 0, "images": 0, "other": 0}
    right = sum(label == gt for gt, label in rows)
    plus = sum(all(label == gt.lower() for gt, label in image) and len(image) > 0 for image in images)
    acc, acc_plus = right / len(rows), plus / len(images)
    return {
        "acc": acc,
        "acc_plus": acc_plus,
        "score": 100 * acc + 100 * acc_plus,
        "questions": len(rows),
        "images": len(images),
        "other": sum(label not in ("yes", "no") for _, label in rows),
    }


def mme_totals(task_scores: Mapping[str, dict]) -> dict[str, float]:
    """Perception and cognition sums of the task scores present (missing tasks add nothing)."""
    return {
        "perception": sum(task_scores[t]["score"] for t in MME_PERCEPTION if t in task_scores),
        "cognition": sum(task_scores[t]["score"] for t in MME_COGNITION if t in task_scores),
    }


def pope_label(text: str) -> str:
    """``eval_pope.py``'s rule: first sentence, no commas, "No"/"not"/"no" as a word -> "no", else "yes"."""
    if "." in text:
        text = text.split(".")[0]
    words = text.replace(",", "").split(" ")
    return "no" if ("No" in words or "not" in words or "no" in words) else "yes"


def pope_metrics(labels: Sequence[str], predictions: Sequence[str | None]) -> dict:
    """Binary metrics with "yes" as the positive class, as ``eval_pope.py`` prints them.

    ``labels`` are the annotation's "yes"/"no" (anything but "no" counts as yes, as there); a ``None``
    prediction (a question that could not be answered) is counted as the wrong answer. A zero
    denominator gives 0.0 where the reference would raise.
    """
    if len(labels) != len(predictions):
        raise ValueError(f"{len(labels)} labels but {len(predictions)} predictions")
    tp = tn = fp = fn = 0
    yes = 0
    for label, pred in zip(labels, predictions, strict=True):
        gold = label != "no"
        said_yes = (not gold) if pred is None else pred != "no"
        yes += said_yes
        if said_yes and gold:
            tp += 1
        elif said_yes:
            fp += 1
        elif not gold:
            tn += 1
        else:
            fn += 1
    n = len(labels)
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "accuracy": (tp + tn) / n if n else 0.0,
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "yes_ratio": yes / n if n else 0.0,
        "tp": tp,
        "fp": fp,
        "tn": tn,
        "fn": fn,
        "questions": n,
    }


__all__ = [
    "MME_COGNITION",
    "MME_PERCEPTION",
    "mme_label",
    "mme_normalize",
    "mme_task_score",
    "mme_totals",
    "pope_label",
    "pope_metrics",
]
