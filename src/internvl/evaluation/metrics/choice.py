"""Multiple-choice answers: the reference's option-letter extraction and the aggregate rules.

``extract_choice`` is the ``post_process`` of the reference's MMBench / MMVP / MMMU scripts (chat spec
§10): the stripped prediction itself when it is one character; else its first character when that is
an option letter (so "A cat" -> "A", a known quirk); else the first option (in letter order) whose
text occurs in the prediction; else the prediction unchanged, which then matches no letter.
``extract_choice_scienceqa`` adds the ScienceQA script's two late rules ("X." -> X, "(X)" -> X), which
only apply when the earlier ones found nothing. ``seed_choice`` is SEED's ``calculation.py`` rule
(the first character).

Aggregates: MMBench circular evaluation (a question counts only when every rotation of it is right;
rotations share ``index % 1_000_000``) and MMVP pairs (consecutive questions, both right).
Pure: imports nothing from the package.
"""

from __future__ import annotations

import re
from collections.abc import Hashable, Iterable, Mapping, Sequence

CIRCULAR_OFFSET = 1_000_000


def extract_choice(prediction: str, options: Mapping[str, str]) -> str:
    """The option letter the reference reads from ``prediction`` (or the prediction when none applies)."""
    pred = prediction.strip()
    if len(pred) == 1:
        return pred
    if len(pred) > 1 and pred[0] in options:
        return pred[0]
    if len(pred) > 1:
        for letter, text in options.items():
            if str(text) in pred:
                return letter
    return pred


def extract_choice_scienceqa(prediction: str, options: Mapping[str, str]) -> str:
    """ScienceQA's variant: `extract_choice`, then "X." -> "X" and "(X)" -> "X" on what is left."""
    pred = extract_choice(prediction, options)
    if pred in options:
        return pred
    if len(pred) > 1 and pred[1] == ".":
        pred = pred[0]
    if len(pred) > 2 and pred[0] == "(" and pred[2] == ")":  # the reference indexes pred[2] unguarded
        pred = pred[1]
    return pred


def seed_choice(prediction: str) -> str:
    """SEED's ``calculation.py``: the prediction when it is one character, else its first character."""
    return prediction if len(prediction) == 1 else prediction[:1]


def is_letter(answer: str, options: Iterable[str]) -> bool:
    """Whether an extracted answer is one of the option letters (else it is reported as unparsed)."""
    return answer in set(options)


def circular_group(index: int) -> int:
    """The question a circular copy belongs to: copies ``k`` of question ``i`` have index ``i + k * 1e6``."""
    return int(index) % CIRCULAR_OFFSET


def circular_accuracy(correct_by_group: Mapping[Hashable, Sequence[bool]]) -> tuple[int, int]:
    """(questions whose every rotation is right, questions). A question with no rows is not counted."""
    groups = [rows for rows in correct_by_group.values() if len(rows)]
    return sum(all(rows) for rows in groups), len(groups)


def pair_accuracy(correct: Sequence[bool]) -> tuple[int, int]:
    """MMVP: (pairs with both answers right, complete pairs), pairing consecutive questions (1,2), (3,4), ...

    As in the reference a trailing unpaired question is not counted.
    """
    pairs = len(correct) // 2
    return sum(bool(correct[2 * i]) and bool(correct[2 * i + 1]) for i in range(pairs)), pairs


_MMVP_OPTION = re.compile(r"\(([a-z])\)")


def mmvp_options(options: str) -> dict[str, str]:
    """MMVP's ``Options`` cell ``"(a) Open (b) Closed"`` -> ``{"A": "Open", "B": "Closed"}``.

    The reference splits on "(b)" (two options, the case for every MMVP row); this splits on every
    "(x)" marker, which gives the same result there.
    """
    parts = _MMVP_OPTION.split(options)
    out = {}
    for i in range(1, len(parts) - 1, 2):
        out[parts[i].upper()] = parts[i + 1].strip()
    return out


def mmvp_answer(correct_answer: str) -> str:
    """``"(a)"`` -> ``"A"`` as the reference's replace chain does (other text is kept)."""
    out = correct_answer
    for low, up in (("(a)", "A"), ("(b)", "B"), ("(c)", "C"), ("(d)", "D")):
        out = out.replace(low, up)
    return out


__all__ = [
    "CIRCULAR_OFFSET",
    "circular_accuracy",
    "circular_group",
    "extract_choice",
    "extract_choice_scienceqa",
    "is_letter",
    "mmvp_answer",
    "mmvp_options",
    "pair_accuracy",
    "seed_choice",
]
