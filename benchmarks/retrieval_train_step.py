"""Stage-2 fine-tuning step time: batches cut to their longest caption against the reference's padded-to-80 batches.

Builds a random InternVL-C/G (QLLaMA width 256 x 4 layers and 96 queries by default; the ViT is tiny,
its cost does not depend on the text) and a SentencePiece tokenizer, makes one batch of Flickr-like
captions (8-22 words) with their negatives and ``summarize:`` prompts, collates it twice with
`collate_pairs` (``length=80``: the reference; ``None``: dynamic padding) and times forward + backward of
`retrieval_loss` for both objectives (``itm_itc``: ITM + ITC through QLLaMA over 3B rows of queries +
text; ``itc_c``: InternVL-C). Prints seconds per step, the ratio and the loss difference.

    python benchmarks/retrieval_train_step.py --threads 1
    python benchmarks/retrieval_train_step.py --device cuda --width 1024 --layers 12 --batch-size 64
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch
from _common import cg_config, flickr_like_captions

from internvl.data.pairs import PairTokenizer, collate_pairs
from internvl.data.synthetic import build_tokenizer
from internvl.data.tokenization import MAX_LENGTH, TEXT_PREFIX, InternVLTextTokenizer
from internvl.models.internvl_cg import build_internvl
from internvl.training.losses import retrieval_loss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--queries", type=int, default=96, help="QLLaMA query tokens (96 in InternVL-14B).")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (1 on a shared machine).")
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    with tempfile.TemporaryDirectory() as tmp:
        corpus = [TEXT_PREFIX + c for c in flickr_like_captions(3000, seed=1, period=False)]
        text = InternVLTextTokenizer.from_pretrained(build_tokenizer(tmp, corpus=corpus, vocab_size=500), prefix="")
    tok = PairTokenizer(text, pad_token_id=0, pad_to_max_length=False)  # the explicit masks make any pad id work
    model = (
        build_internvl(cg_config(args.width, args.layers, text.vocab_size, queries=args.queries, text_only=True))
        .to(device)
        .train()
    )
    texts = flickr_like_captions(2 * args.batch_size, seed=0, period=False)
    g = torch.Generator().manual_seed(0)
    samples = []
    for i in range(args.batch_size):
        fields = tok.retrieval_fields(texts[i], texts[args.batch_size + i])
        sample = {k: torch.tensor(v) for k, v in fields.items()}
        sample["pixel_values"] = torch.randn(3, 28, 28, generator=g)
        sample["image_ids"] = torch.tensor([i])
        samples.append(sample)
    batches = {
        "padded to 80 (reference)": collate_pairs(samples, 0, MAX_LENGTH),
        "dynamic padding": collate_pairs(samples, 0),
    }
    width = batches["dynamic padding"]["summarize_input_ids"].shape[1]
    print(
        f"retrieval training step (forward + backward): QLLaMA width {args.width} x {args.layers} layers, "
        f"{args.queries} queries, batch {args.batch_size} Flickr-like captions (batch cut to {width} ids vs "
        f"{MAX_LENGTH}), {args.device} fp32, torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"best of {args.repeats}"
    )
    header = f"{'objective':<9} | {'path':<25} | {'s/step':>8} | {'ratio':>6} | {'|loss diff|':>11}"
    print(header)
    print("-" * len(header))
    for objective in ("itm_itc", "itc_c"):
        results = {}
        for name, batch in batches.items():
            batch = {k: v.to(device) for k, v in batch.items()}
            best, loss = float("inf"), None
            for _ in range(args.repeats + 1):  # the first call warms up
                model.zero_grad(set_to_none=True)
                sync()
                start = time.perf_counter()
                out = retrieval_loss(model, batch, objective=objective)
                out.loss.backward()
                sync()
                best, loss = min(best, time.perf_counter() - start), out.loss.item()
            results[name] = (best, loss)
        ref_s, ref_loss = results["padded to 80 (reference)"]
        for name, (seconds, loss) in results.items():
            print(
                f"{objective:<9} | {name:<25} | {seconds:8.4f} | {ref_s / seconds:5.2f}x | {abs(loss - ref_loss):11.2e}"
            )


if __name__ == "__main__":
    main()
