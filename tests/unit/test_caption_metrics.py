"""pycocoevalcap really running (Java PTB tokenizer, METEOR) on a few captions with hand-checkable values.

Each Java start costs seconds, so everything that needs Java is checked in one call.
"""

from __future__ import annotations

import math
import shutil

import pytest

from internvl.evaluation.metrics.captioning import CAPTION_METRICS, average_length, score_captions

pytestmark = pytest.mark.skipif(shutil.which("java") is None, reason="pycocoevalcap needs Java")


@pytest.mark.slow  # starts Java for every pycocoevalcap scorer: ~30-60 s here
def test_identical_captions_and_a_short_one_score_as_computed_by_hand():
    refs = {
        1: ["A dog runs on the grass."],
        2: ["Two cats sit on a red sofa."],
        3: ["a man rides a bike down the street"],
    }
    preds = {1: "a dog runs on the grass", 2: "Two cats sit on a red sofa!", 3: "a man rides a bike down the street"}
    corpus, per_image = score_captions(refs, preds, per_image=True)
    assert list(corpus) == list(CAPTION_METRICS)
    # After PTB tokenisation (lower-case, punctuation removed) every prediction equals its only reference:
    # BLEU, METEOR and ROUGE-L are 1; CIDEr-D's tf-idf vectors coincide (cosine 1 for n = 1..4, no length
    # penalty) and pycocoevalcap scales by 10, so CIDEr = 10 for every image.
    for name in ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4"):
        assert corpus[name] == pytest.approx(1.0, abs=1e-6)
    assert corpus["METEOR"] == pytest.approx(1.0)
    assert corpus["ROUGE_L"] == pytest.approx(1.0)
    assert corpus["CIDEr"] == pytest.approx(10.0)
    assert all(s["CIDEr"] == pytest.approx(10.0) for s in per_image.values())


def test_bleu_brevity_penalty_and_prediction_checks():
    # "a dog" against a 6-word reference: unigram precision 1, brevity penalty exp(1 - 6/2).
    scores = score_captions({7: ["a dog runs on the grass"]}, {7: "a dog"}, metrics=["Bleu_1"])
    assert scores == {"Bleu_1": pytest.approx(math.exp(1 - 6 / 2), rel=1e-6)}
    with pytest.raises(ValueError, match="1 missing"):
        score_captions({1: ["x y"], 2: ["z"]}, {1: "x"}, metrics=["Bleu_1"])
    with pytest.raises(ValueError, match="unknown caption metric"):
        score_captions({1: ["x"]}, {1: "x"}, metrics=["SPICE"])


def test_average_length_counts_whitespace_words():
    assert average_length(["a dog runs", "two  cats"]) == 2.5
    assert average_length([]) == 0.0


def test_the_java_tokenizer_chatter_goes_to_the_debug_log_not_the_terminal(capfd, caplog):
    """pycocoevalcap's PTB tokenizer (Java) prints "PTBTokenizer tokenized N tokens ..." to stderr on
    every call; a normal run must not show it, `-v` (debug logging) does."""
    import logging

    with caplog.at_level(logging.DEBUG, logger="internvl.evaluation.metrics.captioning"):
        score_captions({1: ["a dog runs"]}, {1: "a dog runs"}, metrics=("Bleu_1",))
    out, err = capfd.readouterr()
    assert "PTBTokenizer" not in err and "PTBTokenizer" not in out
    assert any("PTBTokenizer tokenized" in r.getMessage() for r in caplog.records)
