"""Open-ended VQA scoring: the EvalAI answer normalisation, VQA soft accuracy and exact match.

The reference scores TextVQA and VizWiz val with ``TextVQAAccuracyEvaluator`` (the m4c / EvalAI
evaluator, chat spec §10); this module reproduces its rules exactly, quirks included:

* ``normalize_answer`` lower-cases, drops ``,`` and ``?``, splits off ``'s``, then treats the punctuation
  list character by character: a mark next to a space (or any text with a digit-comma-digit run)
  is deleted, otherwise it becomes a space. Periods not followed by a digit are deleted, at most 32 of
  them (the reference passes ``re.UNICODE`` where ``re.sub`` expects ``count``). Then number words
  ``zero``..``ten`` (and ``none``) become digits, the articles ``a an the`` are dropped and
  apostrophe-less contractions get their apostrophe (``dont`` -> ``don't``).
* ``vqa_answer_scores``: each distinct human answer scores the mean, over the 10 leave-one-out subsets
  of annotators, of ``min(1, matches / 3)``; a prediction scores its normalised form's value, else 0.

GQA uses exact match after the reference's ``convert_gqa_for_eval`` (``rstrip('.')`` and lower-case).
Pure: imports nothing from the package.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

# Apostrophe-less spellings -> the spelling the annotations use (the EvalAI table, same keys).
CONTRACTIONS = {
    "aint": "ain't",
    "arent": "aren't",
    "cant": "can't",
    "couldve": "could've",
    "couldnt": "couldn't",
    "couldn'tve": "couldn't've",
    "couldnt've": "couldn't've",
    "didnt": "didn't",
    "doesnt": "doesn't",
    "dont": "don't",
    "hadnt": "hadn't",
    "hadnt've": "hadn't've",
    "hadn'tve": "hadn't've",
    "hasnt": "hasn't",
    "havent": "haven't",
    "hed": "he'd",
    "hed've": "he'd've",
    "he'dve": "he'd've",
    "hes": "he's",
    "howd": "how'd",
    "howll": "how'll",
    "hows": "how's",
    "Id've": "I'd've",
    "I'dve": "I'd've",
    "Im": "I'm",
    "Ive": "I've",
    "isnt": "isn't",
    "itd": "it'd",
    "itd've": "it'd've",
    "it'dve": "it'd've",
    "itll": "it'll",
    "let's": "let's",
    "maam": "ma'am",
    "mightnt": "mightn't",
    "mightnt've": "mightn't've",
    "mightn'tve": "mightn't've",
    "mightve": "might've",
    "mustnt": "mustn't",
    "mustve": "must've",
    "neednt": "needn't",
    "notve": "not've",
    "oclock": "o'clock",
    "oughtnt": "oughtn't",
    "ow's'at": "'ow's'at",
    "'ows'at": "'ow's'at",
    "'ow'sat": "'ow's'at",
    "shant": "shan't",
    "shed've": "she'd've",
    "she'dve": "she'd've",
    "she's": "she's",
    "shouldve": "should've",
    "shouldnt": "shouldn't",
    "shouldnt've": "shouldn't've",
    "shouldn'tve": "shouldn't've",
    "somebody'd": "somebodyd",
    "somebodyd've": "somebody'd've",
    "somebody'dve": "somebody'd've",
    "somebodyll": "somebody'll",
    "somebodys": "somebody's",
    "someoned": "someone'd",
    "someoned've": "someone'd've",
    "someone'dve": "someone'd've",
    "someonell": "someone'll",
    "someones": "someone's",
    "somethingd": "something'd",
    "somethingd've": "something'd've",
    "something'dve": "something'd've",
    "somethingll": "something'll",
    "thats": "that's",
    "thered": "there'd",
    "thered've": "there'd've",
    "there'dve": "there'd've",
    "therere": "there're",
    "theres": "there's",
    "theyd": "they'd",
    "theyd've": "they'd've",
    "they'dve": "they'd've",
    "theyll": "they'll",
    "theyre": "they're",
    "theyve": "they've",
    "twas": "'twas",
    "wasnt": "wasn't",
    "wed've": "we'd've",
    "we'dve": "we'd've",
    "weve": "we've",
    "werent": "weren't",
    "whatll": "what'll",
    "whatre": "what're",
    "whats": "what's",
    "whatve": "what've",
    "whens": "when's",
    "whered": "where'd",
    "wheres": "where's",
    "whereve": "where've",
    "whod": "who'd",
    "whod've": "who'd've",
    "who'dve": "who'd've",
    "wholl": "who'll",
    "whos": "who's",
    "whove": "who've",
    "whyll": "why'll",
    "whyre": "why're",
    "whys": "why's",
    "wont": "won't",
    "wouldve": "would've",
    "wouldnt": "wouldn't",
    "wouldnt've": "wouldn't've",
    "wouldn'tve": "wouldn't've",
    "yall": "y'all",
    "yall'll": "y'all'll",
    "y'allll": "y'all'll",
    "yall'd've": "y'all'd've",
    "y'alld've": "y'all'd've",
    "y'all'dve": "y'all'd've",
    "youd": "you'd",
    "youd've": "you'd've",
    "you'dve": "you'd've",
    "youll": "you'll",
    "youre": "you're",
    "youve": "you've",
}
NUMBER_WORDS = {
    "none": "0",
    "zero": "0",
    "one": "1",
    "two": "2",
    "three": "3",
    "four": "4",
    "five": "5",
    "six": "6",
    "seven": "7",
    "eight": "8",
    "nine": "9",
    "ten": "10",
}
ARTICLES = frozenset({"a", "an", "the"})
PUNCTUATION = (";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!")
# The reference writes (?!<=\d) (a typo for a look-behind): it never blocks, so every "." not followed
# by a digit is removed.
_PERIOD = re.compile(r"\.(?!\d)")
_DIGIT_COMMA_DIGIT = re.compile(r"(?<=\d)(\,)+(?=\d)")
_MAX_PERIODS = 32  # re.UNICODE (== 32) lands in re.sub's `count` argument in the reference


def _punctuation(text: str) -> str:
    out = text
    strip_all = _DIGIT_COMMA_DIGIT.search(text) is not None
    for p in PUNCTUATION:
        if p + " " in text or " " + p in text or strip_all:
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    return _PERIOD.sub("", out, count=_MAX_PERIODS)


def _digits_articles(text: str) -> str:
    words = [NUMBER_WORDS.get(w, w) for w in text.lower().split()]
    words = [w for w in words if w not in ARTICLES]
    return " ".join(CONTRACTIONS.get(w, w) for w in words)


def normalize_answer(answer: str) -> str:
    """The EvalAI / m4c normalisation applied to both predictions and human answers."""
    text = answer.lower().replace(",", "").replace("?", "").replace("'s", " 's").strip()
    text = text.replace("\n", " ").replace("\t", " ").strip()
    return _digits_articles(_punctuation(text))


def vqa_answer_scores(gt_answers: Sequence[str]) -> dict[str, float]:
    """Soft score of every distinct normalised human answer (leave-one-annotator-out, min(1, n/3))."""
    answers = [normalize_answer(a) for a in gt_answers]
    if not answers:
        return {}
    scores = {}
    for candidate in set(answers):
        total = 0.0
        for left_out in range(len(answers)):
            matches = sum(1 for j, a in enumerate(answers) if j != left_out and a == candidate)
            total += min(1.0, matches / 3)
        scores[candidate] = total / len(answers)
    return scores


def vqa_score(prediction: str, gt_answers: Sequence[str]) -> float:
    """VQA soft accuracy of one prediction in [0, 1]."""
    return vqa_answer_scores(gt_answers).get(normalize_answer(prediction), 0.0)


def gqa_normalize(prediction: str) -> str:
    """The reference's ``convert_gqa_for_eval``: trailing periods removed, lower-cased."""
    return prediction.rstrip(".").lower()


def gqa_correct(prediction: str, gold: str) -> bool:
    """GQA's official ``eval.py`` compares the converted prediction with the gold answer exactly."""
    return gqa_normalize(prediction) == gold


__all__ = [
    "ARTICLES",
    "CONTRACTIONS",
    "NUMBER_WORDS",
    "PUNCTUATION",
    "gqa_correct",
    "gqa_normalize",
    "normalize_answer",
    "vqa_answer_scores",
    "vqa_score",
]
