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
import random
import tempfile
import time

import torch

import internvl.inference.embedding as embedding
from internvl.data.synthetic import build_tokenizer
from internvl.data.tokenization import TEXT_PREFIX, InternVLTextTokenizer
from internvl.models.checkpoint import resolve_dtype
from internvl.models.intern_vit import InternViTConfig
from internvl.models.internvl_cg import InternVLConfig, build_internvl
from internvl.models.qllama import QLlamaConfig

WORDS = (
    "a man woman dog cat child two people group young old red blue green white black shirt street "
    "water beach grass field ball bike car building playing running sitting standing walking riding "
    "holding wearing front near next with while on in of the at his her their large small"
).split()


def build(width: int, layers: int, vocab: int) -> InternVLConfig:
    heads = max(1, width // 64)
    vision = InternViTConfig(
        hidden_size=64, num_hidden_layers=1, num_attention_heads=1, intermediate_size=128, image_size=28, patch_size=14
    )
    qllama = QLlamaConfig(
        vocab_size=vocab,
        hidden_size=width,
        intermediate_size=4 * width,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        max_position_embeddings=512,
        num_query_token=8,
        vision_hidden_size=64,
    )
    return InternVLConfig(
        vision_config=vision, qllama_config=qllama, clip_embed_dim=width // 2, attn_pool_num_heads=1, num_query_token=8
    )


def captions(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 22))) + "." for _ in range(n)]


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
        corpus = [TEXT_PREFIX + c for c in captions(3000, seed=1)]
        tok = InternVLTextTokenizer.from_pretrained(build_tokenizer(tmp, corpus=corpus, vocab_size=500))
    model = build_internvl(build(args.width, args.layers, tok.vocab_size)).to(device, resolve_dtype(args.dtype)).eval()
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    texts = captions(args.texts, seed=0)
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
