"""MMMU scoring as the reference's ``main_eval_only.py`` runs it (MMMU's ``eval_utils``).

Multiple-choice: the letter `choice.extract_choice` read from the answer must equal the gold letter.
Open questions: ``parse_open_response`` turns the answer into candidates (the tail after the last
"key" indicator of each sentence: "could be", "so", "is", "thus", "therefore", "final", "answer",
"result", and "=" in the last sentence; plus every number found in them), each normalised by
``normalize_str`` (numbers -> float rounded to 2 places; text lower-cased, a single character padded
with a space on one side to avoid trivial matches). A candidate number is right when it equals a
normalised gold number; a candidate string when a normalised gold string occurs in it. Pure.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

_KEYS = ("could be ", "so ", "is ", "thus ", "therefore ", "final ", "answer ", "result ")
_TRIVIAL = {":", ",", ".", "!", "?", ";", "'"}
_SENTENCES = re.compile(r"\.\s(?=[A-Z])|\n")
_COMMAS = re.compile(r"-?\b\d{1,3}(?:,\d{3})+\b")
_SCIENTIFIC = re.compile(r"-?\d+(?:\.\d+)?[eE][+-]?\d+")
_SIMPLE = re.compile(r"-?(?:\d+\.\d+|\.\d+|\d+\b)(?![eE][+-]?\d+)(?![,\d])")


def _is_number(text: str) -> bool:
    try:
        float(text.replace(",", ""))
        return True
    except ValueError:
        return False


def normalize_str(text: str) -> list[float | str]:
    """MMMU's ``normalize_str``."""
    text = text.strip()
    if _is_number(text):
        return [round(float(text.replace(",", "")), 2)]
    text = text.lower()
    return [" " + text, text + " "] if len(text) == 1 else [text]


def extract_numbers(text: str) -> list[str]:
    """Numbers with thousands separators, then scientific notation, then plain numbers (MMMU's order)."""
    return _COMMAS.findall(text) + _SCIENTIFIC.findall(text) + _SIMPLE.findall(text)


def _key_subresponses(response: str) -> list[str]:
    # Lower-cased before the split, so the "(?=[A-Z])" sentence rule never fires: only newlines split
    # (as in MMMU's code).
    response = response.strip().strip(".").lower()
    sentences = _SENTENCES.split(response)
    keys = []
    for i, sentence in enumerate(sentences):
        indicators = _KEYS + (("=",) if i == len(sentences) - 1 else ())
        shortest: str | None = None
        for ind in indicators:
            if ind in sentence:
                tail = sentence.split(ind)[-1].strip()
                # MMMU's test is "not shortest": an empty tail found first is replaced by any later one
                if not shortest or len(tail) < len(shortest):
                    shortest = tail
        if shortest and shortest.strip() not in _TRIVIAL:
            keys.append(shortest)
    return keys or [response]


def parse_open_response(response: str) -> list[float | str]:
    """Candidate answers of an open question (order is irrelevant; MMMU returns a set as a list)."""
    keys = _key_subresponses(response)
    candidates: list[str] = list(keys)
    for key in keys:
        candidates += extract_numbers(key)
    out: list[float | str] = []
    for c in candidates:
        for n in normalize_str(c):
            if n not in out:
                out.append(n)
    return out


def eval_open(gold: str | Sequence[str], predictions: Sequence[float | str]) -> bool:
    """MMMU's ``eval_open``."""
    golds: list[float | str] = []
    for g in [gold] if isinstance(gold, str) else gold:
        golds += normalize_str(g)
    for pred in predictions:
        if isinstance(pred, str):
            if any(isinstance(g, str) and g in pred for g in golds):
                return True
        elif pred in golds:
            return True
    return False


def eval_multi_choice(gold: str | Sequence[str], prediction: str) -> bool:
    """MMMU's ``eval_multi_choice``: exact equality with the gold letter (or one of several)."""
    return prediction == gold if isinstance(gold, str) else prediction in gold


__all__ = ["eval_multi_choice", "eval_open", "extract_numbers", "normalize_str", "parse_open_response"]
