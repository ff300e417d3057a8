"""Multi-turn chat: time to first token per turn, `ChatSession` (cached) vs the reference's rebuild.

The reference's ``chat(history=...)`` re-encodes the image and prefills the whole conversation every
turn (what ``ChatPipeline.answer`` does, kept for parity). A `ChatSession` keeps the KV cache and the
image features, so turn k prefills only its new tokens. On a small random InternVL-Chat with one image
(default 448px = 256 visual tokens, as V1-2), earlier turns answer ``--answer-tokens`` tokens each;
the timed call is turn k with one new token (time to first token), best of ``--repeats`` (each repeat
replays turns 1..k-1 in a fresh session, untimed). Both paths must give the same first token.

    python benchmarks/chat_turns.py --threads 1
    python benchmarks/chat_turns.py --turns 2 5 10 --image-size 224
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch

from internvl.data.synthetic import build_chat_tokenizer, synthetic_image
from internvl.inference.loading import load_tokenizer
from internvl.inference.pipeline import ChatPipeline
from internvl.inference.requests import ChatRequest, GenerationOptions
from internvl.models.internvl_chat import build_internvl_chat, tiny_chat_config

QUESTIONS = [
    "what is in the image?",
    "what color is the largest object?",
    "and what is behind it?",
    "how many objects are there?",
    "describe the scene in one sentence.",
    "is it day or night?",
    "what is on the left?",
    "what is on the right?",
    "anything unusual?",
    "summarise our chat.",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, nargs="+", default=[2, 5])
    parser.add_argument("--answer-tokens", type=int, default=24, help="tokens per earlier answer")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--image-size", type=int, default=448)
    parser.add_argument("--vit-width", type=int, default=256)
    parser.add_argument("--vit-layers", type=int, default=4)
    parser.add_argument("--llm-width", type=int, default=256)
    parser.add_argument("--llm-layers", type=int, default=4)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: leave default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if max(args.turns) > len(QUESTIONS) or min(args.turns) < 1:
        parser.error(f"--turns must lie in 1..{len(QUESTIONS)}")

    with tempfile.TemporaryDirectory() as tmp:
        build_chat_tokenizer(tmp)
        tok = load_tokenizer(tmp)
    cfg = tiny_chat_config(
        len(tok),
        image_size=args.image_size,
        vit_width=args.vit_width,
        vit_layers=args.vit_layers,
        llm_width=args.llm_width,
        llm_layers=args.llm_layers,
        system_message="Answer briefly.",
        eos_token_id=tok.convert_tokens_to_ids("<|im_end|>"),
    )
    pipe = ChatPipeline(build_internvl_chat(cfg, seed=0).eval(), tok)
    visuals = pipe.prepare_images([synthetic_image(0, size=args.image_size)])
    answer = GenerationOptions(max_new_tokens=args.answer_tokens, min_new_tokens=args.answer_tokens, do_sample=False)
    first = GenerationOptions(max_new_tokens=1, do_sample=False)

    def turn(k: int, session):
        """(request of turn k, the session after turns 1..k-1): history built through the session."""
        history = None
        for q in QUESTIONS[: k - 1]:
            history = session.answer(ChatRequest(q, visuals=visuals, history=history, options=answer)).history
        return ChatRequest(QUESTIONS[k - 1], visuals=visuals, history=history, options=first)

    def best(fn, setup) -> tuple[float, object]:
        times, out = [], None
        for _ in range(args.repeats + 1):  # the first is a warm-up
            state = setup()
            t0 = time.perf_counter()
            out = fn(state)
            times.append(time.perf_counter() - t0)
        return min(times[1:]), out

    print(
        f"sizes: ViT {args.vit_layers}x{args.vit_width} @ {args.image_size}px "
        f"({pipe.num_image_token} visual tokens), LLM {args.llm_layers}x{args.llm_width}; "
        f"earlier answers {args.answer_tokens} tokens; greedy; "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, best of {args.repeats}"
    )
    header = (
        f"{'turn':>4} | {'prompt ids':>10} | {'prefilled':>9} | {'rebuild TTFT ms':>15} | "
        f"{'session TTFT ms':>15} | {'ratio':>6}"
    )
    print(header)
    print("-" * len(header))
    with torch.inference_mode():
        for k in args.turns:

            def setup(k=k):
                session = pipe.session()
                return session, turn(k, session)

            t_ref, ref = best(lambda s: pipe.answer(s[1]), setup)
            t_ses, (fast, last) = best(lambda s: (s[0].answer(s[1]), s[0].last), setup)
            if fast != ref:
                raise SystemExit(f"turn {k}: the session answered {fast.text!r}, the rebuild {ref.text!r}")
            print(
                f"{k:>4} | {last.prompt_tokens:>10} | {last.prefilled_tokens:>9} | {t_ref * 1e3:>15.1f} | "
                f"{t_ses * 1e3:>15.1f} | {t_ref / t_ses:>5.1f}x"
            )


if __name__ == "__main__":
    main()
