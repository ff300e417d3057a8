"""Text embedding throughput (texts/s): dynamic padding + length sorting against the reference's padded-to-80 path.

Builds a random InternVL-C/G (QLLaMA width 512 x 6 layers by default; the ViT is tiny, texts never
use it) and a SentencePiece tokenizer, makes Flickr-like captions (8-22 words, the word counts of
Flickr30K/COCO captions), and embeds the same texts in this one process three ways with
`embed_texts`: ``padding="max_length"`` (80 ids per text, the reference), dynamic padding in input
order (each batch cut to its longest text), and dynamic padding with length sorting (the default).
Prints texts/s, the ratio to the padded path and the largest difference of the embeddings.

    python benchmarks/text_embedding.py --threads 1
    python benchmarks/text_embedding.py --device cuda --dtype fp16 --width 4096 --layers 32 --texts 5000
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import torch
from _common import cg_config, flickr_like_captions

import internvl.inference.embedding as embedding
from internvl.data.synthetic import build_tokenizer
from internvl.data.tokenization import TEXT_PREFIX, InternVLTextTokenizer
from internvl.models.checkpoint import resolve_dtype
from internvl.models.internvl_cg import build_internvl


def timed(fn, repeats: int, sync) -> tuple[float, torch.Tensor]:
    """Seconds of the fastest of ``repeats`` calls (after a warm-up) and the last result."""
    out = fn()
    best = float("inf")
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        out = fn()
        sync()
        best = min(best, time.perf_counter() - start)
    return best, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--texts", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="fp32")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (1 on a shared machine).")
    parser.add_argument("--json", default=None, help="Also write the results to this JSON file.")
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        # trained on such captions, so a word is about one piece, as with LLaMA's tokenizer on English
        corpus = [TEXT_PREFIX + c for c in flickr_like_captions(3000, seed=1)]
        tok = InternVLTextTokenizer.from_pretrained(build_tokenizer(tmp, corpus=corpus, vocab_size=500))
    model = (
        build_internvl(cg_config(args.width, args.layers, tok.vocab_size, queries=8, text_only=True))
        .to(device, resolve_dtype(args.dtype))
        .eval()
    )
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    texts = flickr_like_captions(args.texts, seed=0)
    lengths = [len(tok.encode(t)) for t in texts]

    def run(padding: str, sort: bool):
        if sort or padding == "max_length":
            return lambda: embedding.embed_texts(model, tok, texts, args.batch_size, padding=padding)
        # dynamic padding without sorting: each input-order batch cut to its longest text
        chunks = [texts[s : s + args.batch_size] for s in range(0, len(texts), args.batch_size)]
        return lambda: torch.cat([embedding.embed_texts(model, tok, c, args.batch_size) for c in chunks])

    ways = {
        "padded to 80 (reference)": run("max_length", False),
        "dynamic padding": run("longest", False),
        "dynamic + length-sorted": run("longest", True),
    }
    results = {}
    for name, fn in ways.items():
        seconds, emb = timed(fn, args.repeats, sync)
        results[name] = {"texts_per_s": len(texts) / seconds, "emb": emb}
    ref = results["padded to 80 (reference)"]
    print(
        f"text embeddings: QLLaMA width {args.width} x {args.layers} layers, {len(texts)} Flickr-like captions "
        f"(ids incl. BOS/EOS: mean {sum(lengths) / len(lengths):.1f}, max {max(lengths)}), batch {args.batch_size}, "
        f"{args.device} {args.dtype}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"best of {args.repeats}"
    )
    header = f"{'path':<26} | {'texts/s':>9} | {'ratio':>6} | {'max |diff|':>10}"
    print(header)
    print("-" * len(header))
    rows = []
    for name, r in results.items():
        ratio = r["texts_per_s"] / ref["texts_per_s"]
        diff = (r["emb"] - ref["emb"]).abs().max().item()
        rows.append({"path": name, "texts_per_s": r["texts_per_s"], "ratio": ratio, "max_abs_diff": diff})
        print(f"{name:<26} | {r['texts_per_s']:9.1f} | {ratio:5.2f}x | {diff:10.2e}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
