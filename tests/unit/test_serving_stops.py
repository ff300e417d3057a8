"""OpenAI ``stop`` sequences: the streamed cut (`StopCutter`) equals the non-streamed one (`cut_at_stops`)
for every way of splitting the text into pieces."""

from __future__ import annotations

import random

import pytest

pytest.importorskip("pydantic")
from internvl.serving.worker import StopCutter, cut_at_stops  # noqa: E402


def test_cut_at_the_stop_that_completes_first():
    assert cut_at_stops("hello world", ["o w", "zzz"]) == ("hell", True)
    assert cut_at_stops("hello", ["zzz"]) == ("hello", False)
    # "c" completes (at 3) before "abcd" (at 4), although "abcd" starts earlier.
    assert cut_at_stops("xabcd", ["abcd", "c"]) == ("xab", True)
    assert cut_at_stops("aXb", []) == ("aXb", False)


def _streamed(pieces, stops):
    cutter = StopCutter(stops)
    out = "".join(cutter.push(p) for p in pieces) + cutter.finish()
    return out, cutter.stopped


@pytest.mark.parametrize("seed", range(200))
def test_streamed_cut_equals_the_plain_cut(seed):
    rng = random.Random(seed)
    alphabet = "ab c"
    text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 30)))
    stops = ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 4))) for _ in range(rng.randint(1, 3))]
    cuts = sorted(rng.sample(range(1, len(text)), k=min(len(text) - 1, rng.randint(0, 8)))) if len(text) > 1 else []
    pieces = [text[i:j] for i, j in zip([0, *cuts], [*cuts, len(text)], strict=True)]
    assert _streamed(pieces, stops) == cut_at_stops(text, stops), (text, stops, pieces)


def test_nothing_is_released_that_a_stop_could_still_claim():
    cutter = StopCutter(["END"])
    assert cutter.push("abc E") == "abc "
    assert cutter.push("N") == ""
    assert cutter.push("x") == "ENx"
    assert cutter.push("yEND tail") == "y" and cutter.stopped
    assert cutter.push("more") == "" and cutter.finish() == ""
