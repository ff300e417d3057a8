"""The benchmark metrics on hand-made inputs; every expected value is worked by hand from the official rules
(EvalAI/m4c VQA evaluator, MME calculation.py, eval_pope.py, the reference's post_process functions,
MMBench circular evaluation, MMVP pairs, MathVista calculate_score.py)."""

from __future__ import annotations

import pytest

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
from internvl.evaluation.metrics.mathvista import (
    extract_answer,
    levenshtein,
    mathvista_correct,
    normalize_extraction,
)
from internvl.evaluation.metrics.vqa import gqa_correct, normalize_answer, vqa_answer_scores, vqa_score
from internvl.evaluation.metrics.yesno import (
    mme_label,
    mme_normalize,
    mme_task_score,
    mme_totals,
    pope_label,
    pope_metrics,
)


# -- VQA normalisation and soft accuracy ------------------------------------------------------------------
@pytest.mark.parametrize(
    "raw, expected",
    [
        ("The Dog", "dog"),  # lower-case, article dropped
        ("a", ""),  # only an article
        ("Two dogs.", "2 dogs"),  # number word, trailing period
        ("none", "0"),
        ("ten", "10"),
        ("eleven", "eleven"),  # only zero..ten are mapped
        ("dont", "don't"),  # contraction restored
        ("Don't", "don't"),
        ("coca-cola", "coca cola"),  # "-" not next to a space -> space
        ("coca - cola", "coca cola"),  # "-" next to a space -> deleted
        ("yes!", "yes"),
        ("hello ?", "hello"),  # "?" dropped in the tokenize step
        ("1,000", "1000"),  # "," dropped before the digit-comma rule can see it
        ("3.5", "3.5"),  # period before a digit kept
        ("3.5.", "3.5"),
        ("e.g.", "eg"),
        ("it's", "it 's"),  # "'s" split off
        ("  Red\tcar\n", "red car"),
        ("(stop)", "stop"),
    ],
)
def test_vqa_normalisation(raw, expected):
    assert normalize_answer(raw) == expected


def test_vqa_period_limit_quirk():
    # re.UNICODE (32) ends up as re.sub's count: only the first 32 removable periods go.
    assert normalize_answer("a" + ". " * 40) == " ".join(["."] * 8)


def test_vqa_soft_scores():
    # 3 of 10 say dog: leaving out a dog annotator leaves 2 matches (2/3), any other leaves 3 (1).
    scores = vqa_answer_scores(["dog"] * 3 + ["cat"] * 7)
    assert scores["dog"] == pytest.approx((3 * 2 / 3 + 7 * 1) / 10)  # 0.9
    assert scores["cat"] == pytest.approx(1.0)
    assert vqa_score("red", ["red"] + ["blue"] * 9) == pytest.approx(9 * (1 / 3) / 10)  # 0.3
    assert vqa_score("red", ["red"] * 2 + ["blue"] * 8) == pytest.approx((2 * 1 / 3 + 8 * 2 / 3) / 10)  # 0.6
    assert vqa_score("bird", ["red"] * 10) == 0.0
    # normalisation on both sides: "Two" == "2" == "two."
    assert vqa_score("Two", ["2", "two.", "2", "The two"] + ["x"] * 6) == pytest.approx(1.0)
    assert vqa_score("the Unanswerable", ["unanswerable"] * 10) == 1.0


def test_gqa_exact_match():
    assert gqa_correct("Yes.", "yes")
    assert gqa_correct("left", "left")
    assert not gqa_correct("the left", "left")  # no article removal in GQA
    assert not gqa_correct("yes ", "yes")  # only periods are stripped


# -- multiple choice ----------------------------------------------------------------------------------------
OPTS = {"A": "cat", "B": "dog", "C": "bird"}


@pytest.mark.parametrize(
    "pred, expected",
    [
        ("A", "A"),
        (" C ", "C"),
        ("A.", "A"),
        ("B dog", "B"),
        ("A cat sits on the mat", "A"),  # first character is a letter: taken (reference quirk)
        ("It is a dog", "B"),  # option text found
        ("cat and dog", "A"),  # the first option in letter order whose text occurs
        ("(A)", "(A)"),  # MMBench's rule does not read "(A)": unparsed
        ("The answer is A", "The answer is A"),  # unparsed (no option text inside)
        ("The answer is B. dog", "B"),
        ("", ""),
        ("x", "x"),  # one character is returned as is (and is wrong)
    ],
)
def test_extract_choice(pred, expected):
    assert extract_choice(pred, OPTS) == expected


@pytest.mark.parametrize(
    "pred, expected",
    [
        ("(A)", "A"),
        ("(B) something", "B"),
        ("F. none", "F"),  # "X." rule; F is no option, so still wrong
        ("B", "B"),
        ("It is a dog", "B"),
        ("(A", "(A"),  # the reference would raise IndexError here
    ],
)
def test_extract_choice_scienceqa(pred, expected):
    assert extract_choice_scienceqa(pred, OPTS) == expected


def test_seed_first_character():
    assert seed_choice("B") == "B"
    assert seed_choice("B. dog") == "B"
    assert seed_choice("The answer is A") == "T"
    assert seed_choice("") == ""


def test_mmbench_circular():
    assert circular_group(2_000_003) == 3 and circular_group(17) == 17
    # question 0: all four rotations right; question 1: rotations disagree; question 2: one row, right
    groups = {0: [True, True, True, True], 1: [True, False, True], 2: [True]}
    assert circular_accuracy(groups) == (2, 3)


def test_mmvp_pairs_and_options():
    assert pair_accuracy([True, True, True, False, False, False, True]) == (1, 3)  # last one unpaired
    assert mmvp_options("(a) Open (b) Closed") == {"A": "Open", "B": "Closed"}
    assert mmvp_answer("(b)") == "B"


# -- MME ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "raw, expected",
    [
        ("Yes\n", "yes"),
        ("是", "yes"),
        ("不是", "no"),
        ("否", "no"),
        ("True", "yes"),
        ("No, it is false.", "no, it is no."),
        ("是的", "yes"),  # CJK left over after the replacements is deleted
    ],
)
def test_mme_normalize(raw, expected):
    assert mme_normalize(raw) == expected


@pytest.mark.parametrize(
    "pred, expected",
    [
        ("yes", "yes"),
        ("no", "no"),
        ("Yes", "yes"),
        ("yes, there is", "yes"),
        ("not really", "no"),
        ("nope", "no"),
        ("know", "no"),  # "no" inside the first 4 characters
        ("yesno", "yes"),  # yes is checked first
        ("i think yes", "other"),  # beyond the first 4 characters
        ("unknown", "other"),
        ("  yes", "other"),
        ("", "other"),
    ],
)
def test_mme_label(pred, expected):
    assert mme_label(pred) == expected


def test_mme_scores_pairs_with_one_wrong():
    both_right = [("Yes", "yes"), ("No", "no")]
    one_wrong = [("Yes", "yes"), ("No", "yes")]
    s = mme_task_score([both_right, one_wrong])
    # acc = 3/4, acc+ = 1/2 -> 75 + 50
    assert (s["acc"], s["acc_plus"], s["score"]) == (0.75, 0.5, 125.0)
    other = mme_task_score([[("Yes", "other"), ("No", "no")], [("No", None), ("Yes", "yes")]])
    assert (other["acc"], other["acc_plus"], other["score"], other["other"]) == (0.5, 0.0, 50.0, 2)
    totals = mme_totals({"existence": s, "count": other, "code_reasoning": {"score": 200.0}})
    assert totals == {"perception": 175.0, "cognition": 200.0}


# -- POPE ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "text, expected",
    [
        ("Yes, there is a dog.", "yes"),
        ("No.", "no"),
        ("no, there isn't", "no"),
        ("There is no dog in the image.", "no"),
        ("Yes. But no dog", "yes"),  # only the first sentence counts
        ("Not at all", "yes"),  # "Not" is not in the word list (reference quirk)
        ("NO", "yes"),
        ("Nope", "yes"),
        ("", "yes"),
    ],
)
def test_pope_label(text, expected):
    assert pope_label(text) == expected


def test_pope_metrics():
    labels = ["yes", "yes", "no", "no", "yes", "no"]
    preds = ["yes", "no", "no", "yes", None, None]  # None: unanswered, counted as the wrong answer
    m = pope_metrics(labels, preds)
    # TP 1 (q1), FN 2 (q2, q5), TN 1 (q3), FP 2 (q4, q6)
    assert (m["tp"], m["fn"], m["tn"], m["fp"]) == (1, 2, 1, 2)
    assert m["precision"] == pytest.approx(1 / 3)
    assert m["recall"] == pytest.approx(1 / 3)
    assert m["f1"] == pytest.approx(1 / 3)
    assert m["accuracy"] == pytest.approx(2 / 6)
    assert m["yes_ratio"] == pytest.approx(3 / 6)
    empty = pope_metrics(["yes"], ["no"])
    assert empty["precision"] == 0.0 and empty["f1"] == 0.0


# -- MathVista ---------------------------------------------------------------------------------------------------
def test_levenshtein():
    assert levenshtein("kitten", "sitting") == 3
    assert levenshtein("", "abc") == 3
    assert levenshtein("flaw", "lawn") == 2


def test_mathvista_extraction_and_normalisation():
    choices = ["12", "15", "18"]
    mc = ("multi_choice", "text")
    assert extract_answer("15", *mc, choices) == "15"
    assert extract_answer("B", *mc, choices) == "B"
    assert extract_answer("(C)", *mc, choices) == "C"
    assert extract_answer("D", *mc, choices) == ""  # no fourth choice
    assert extract_answer('The answer is "18".', *mc, choices) == "18"
    assert extract_answer("I think it's 15", *mc, choices) == ""
    assert normalize_extraction("B", choices, *mc, None) == "15"
    assert normalize_extraction("(C)", choices, *mc, None) == "18"
    assert normalize_extraction("150", choices, *mc, None) == "15"  # distances 2, 1, 2
    assert normalize_extraction("17", choices, *mc, None) == "12"  # a three-way tie at 1: the first
    assert normalize_extraction("", choices, *mc, None) == "12"  # all at distance 2: the first
    # free form
    assert extract_answer("3", "free_form", "integer", None) == "3"
    assert extract_answer("3.0", "free_form", "integer", None) == ""  # int() fails; the judge would be next
    assert extract_answer("2.50", "free_form", "float", None) == "2.5"
    assert extract_answer("", "free_form", "float", None) == ""
    assert normalize_extraction("3.7", None, "free_form", "integer", None) == "3"
    assert normalize_extraction("1.456", None, "free_form", "float", 2) == "1.46"
    assert normalize_extraction("abc", None, "free_form", "float", 1) is None
    assert normalize_extraction("[1, 2]", None, "free_form", "list", None) == "[1, 2]"
    assert mathvista_correct("1.46", "1.46") and not mathvista_correct(None, "1.46")


# -- MMMU ---------------------------------------------------------------------------------------------------------
def test_mmmu_open_response_parsing():
    from internvl.evaluation.metrics.mmmu import eval_multi_choice, eval_open, normalize_str, parse_open_response

    assert normalize_str(" 1,234.567 ") == [1234.57]
    assert normalize_str("B") == [" b", "b "]  # single characters padded against trivial matches
    assert parse_open_response("The answer is 42.") == [42.0]  # "is " gives the shortest tail "42"
    assert parse_open_response("Paris") == ["paris"]
    # "=" only counts in the last sentence; "3,000" and the trailing "000" are both numbers to MMMU
    assert set(parse_open_response("x = 3,000 meters")) == {"3,000 meters", 3000.0, 0.0}
    assert parse_open_response("First compute.\nSo the result is 7") == [7.0]
    assert eval_open("42.001", [42.0])  # gold rounded to 2 places
    assert eval_open("par", ["paris"])  # a gold string inside a candidate string
    assert not eval_open("B", ["b"]) and eval_open("B", parse_open_response("B"))
    assert eval_open(["24", "twenty-four"], parse_open_response("It is twenty-four"))
    assert eval_multi_choice("C", "C") and not eval_multi_choice("C", "(C)") and eval_multi_choice(["A", "C"], "C")
