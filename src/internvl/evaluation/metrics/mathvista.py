"""MathVista answer extraction (rule-based) and the normalisation of ``calculate_score.py``.

The reference's ``extract_answer.py`` tries rules first and falls back to a GPT-4 extraction (chat spec
§10). Only the rules run here (the judge step is off; it needs a remote model):

1. empty response -> "" (unparsed);
2. a multi-choice response that is exactly one of the choices -> it;
3. an integer answer whose response parses with ``int()`` / a float answer whose response parses with
   ``float()`` -> that number as text;
4. ``The answer is "X".`` -> X (the reference's quick-extract rule);
5. our addition for what the judge would do with the letter answers InternVL gives: a multi-choice
   response that is just an option letter ("B", "(B)", "B.") -> that letter.

Anything else is unparsed ("" returned; the caller lists it and scores it wrong). ``normalize_extraction``
is ``calculate_score.py``'s ``normalize_extracted_answer``: for multi-choice "(X)" -> X, a letter -> its
choice text, otherwise the Levenshtein-closest choice (first on ties); integers ``str(int(float(x)))``;
floats ``str(round(float(x), precision))``; lists ``str(x)``. The score is exact equality with the
``answer`` field. Pure.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

_QUICK = re.compile(r'The answer is "(.*)"\.')
_PAREN_LETTER = re.compile(r"\(([a-zA-Z])\)")
_BARE_LETTER = re.compile(r"^\(?([A-Za-z])\)?\.?$")


def levenshtein(a: str, b: str) -> int:
    """Edit distance (insert, delete, substitute: cost 1), as ``Levenshtein.distance``."""
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def extract_answer(response: str, question_type: str, answer_type: str, choices: Sequence[str] | None) -> str:
    """The rule-based part of the reference extraction; "" when no rule applies."""
    if response == "":
        return ""
    if question_type == "multi_choice" and choices and response in choices:
        return response
    if answer_type == "integer":
        try:
            return str(int(response))
        except ValueError:
            pass
    if answer_type == "float":
        try:
            return str(float(response))
        except ValueError:
            pass
    quick = _QUICK.search(response)
    if quick:
        return quick.group(1)
    if question_type == "multi_choice" and choices:
        letter = _BARE_LETTER.match(response.strip())
        if letter and ord(letter.group(1).upper()) - ord("A") < len(choices):
            return letter.group(1).upper()
    return ""


def normalize_extraction(
    extraction: str, choices: Sequence[str] | None, question_type: str, answer_type: str, precision: int | None
) -> str | None:
    """``calculate_score.py``'s normalisation; ``None`` when a number does not parse."""
    if question_type == "multi_choice":
        text = extraction.strip() if isinstance(extraction, str) else str(extraction)
        letters = _PAREN_LETTER.findall(text)
        if letters:
            text = letters[0].upper()
        choices = list(choices or [])
        options = [chr(ord("A") + i) for i in range(len(choices))]
        if text in options:
            return choices[options.index(text)]
        if not choices:
            return text
        distances = [levenshtein(text, c) for c in choices]
        return choices[distances.index(min(distances))]
    try:
        if answer_type == "integer":
            return str(int(float(extraction)))
        if answer_type == "float":
            return str(round(float(extraction), int(precision or 0)))
    except (TypeError, ValueError):
        return None
    return str(extraction)


def mathvista_correct(prediction: str | None, answer: str) -> bool:
    """``safe_equal``: plain equality of the normalised prediction and the answer string."""
    return prediction is not None and prediction == answer


__all__ = ["extract_answer", "levenshtein", "mathvista_correct", "normalize_extraction"]
