"""SFT tokenisation + label masking: one-pass boundary search vs tokenising every segment prefix.

A Hermes-2 conversation with one image (256 visual tokens) and ``--rounds`` question/answer rounds,
tokenised with the fixture's Yi-like sentencepiece tokenizer (``sft/tokenizer_no_dummy_prefix``; set
INTERNVL_PARITY_FIXTURES or pass ``--tokenizer``). Prints ms per sample for both paths, the ratio and
whether they agree.

    python benchmarks/sft_tokenize.py --rounds 8
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from internvl.data.conversation import get_conv_template
from internvl.data.sft import tokenize_segments
from internvl.data.text_encoders import SentencePieceEncoder


def main() -> None:
    fixtures = Path(
        os.environ.get("INTERNVL_PARITY_FIXTURES", Path(__file__).resolve().parents[2] / "shared/fixtures/upstream")
    )
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokenizer", default=str(fixtures / "sft" / "tokenizer_no_dummy_prefix"))
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    enc = SentencePieceEncoder.from_pretrained(args.tokenizer, add_bos_token=False, pad_token="<unk>")
    conv = get_conv_template("Hermes-2")
    answer = "The dog is running across a wet beach, chasing a red ball. " * 6
    for k in range(args.rounds):
        question = ("<img>" + "<IMG_CONTEXT>" * 256 + "</img>\n" if k == 0 else "") + "What else can you see?"
        conv.append_message(conv.roles[0], question)
        conv.append_message(conv.roles[1], answer)
    segments = conv.segments()
    times = {}
    for name, use_offsets in (("one pass", True), ("prefixes", False)):
        best = float("inf")
        for _ in range(3):
            t = time.perf_counter()
            for _ in range(args.repeat):
                out = tokenize_segments(enc, segments, use_offsets=use_offsets)
            best = min(best, (time.perf_counter() - t) / args.repeat)
        times[name] = (best, out)
    (fast, a), (slow, b) = times["one pass"], times["prefixes"]
    print(
        f"{len(a[0])} tokens, {args.rounds} rounds: one pass {fast * 1e3:.2f} ms, prefixes {slow * 1e3:.2f} ms, "
        f"x{slow / fast:.1f} faster, identical: {a == b}"
    )


if __name__ == "__main__":
    main()
