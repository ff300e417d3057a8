"""InternVL-C/G embedding throughput (items/s) against batch size.

Builds a small random InternVL-C/G (default: ViT width 256 x 4 layers at 224px = 257 tokens, QLLaMA
width 256 x 4 layers with 96 queries, text length 80) and times ``encode_image`` in both modes and
``encode_text`` for each batch size, in this one process (best of repeated calls). The baseline is batch size 1;
the ratio
column is throughput / throughput at batch 1 (how much batching buys on this machine).

    python benchmarks/cg_embedding.py
    python benchmarks/cg_embedding.py --batch-sizes 1 8 32 128 --device cuda --dtype fp16 --width 1024 --layers 8
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from _common import cg_config

from internvl.models.checkpoint import resolve_dtype
from internvl.models.internvl_cg import build_internvl


def throughput(fn, n_items: int, min_seconds: float, sync) -> float:
    """Items/s of the fastest of repeated calls (best-of-N, as timeit: robust to other load on the machine)."""
    fn()  # warm-up
    sync()
    best, total, calls = float("inf"), 0.0, 0
    while total < min_seconds or calls < 3:
        start = time.perf_counter()
        fn()
        sync()
        elapsed = time.perf_counter() - start
        best, total, calls = min(best, elapsed), total + elapsed, calls + 1
    return n_items / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 4, 16, 32])
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--vocab", type=int, default=1000)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="fp32")
    parser.add_argument("--min-seconds", type=float, default=1.0, help="Timing window per measurement.")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads (1 avoids OpenMP spin-wait stalls on a shared, loaded machine).",
    )
    parser.add_argument("--json", default=None, help="Also write the table to this JSON file.")
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dtype = resolve_dtype(args.dtype)
    model = build_internvl(cg_config(args.width, args.layers, args.vocab, image_size=args.image_size)).to(device, dtype)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    gen = torch.Generator().manual_seed(0)
    rows = []
    for bs in args.batch_sizes:
        pixels = torch.randn(bs, 3, args.image_size, args.image_size, generator=gen).to(device, dtype)
        ids = torch.randint(3, args.vocab, (bs, 80), generator=gen)
        lengths = torch.randint(8, 80, (bs,), generator=gen)
        ids[torch.arange(80)[None] >= lengths[:, None]] = 0  # right padding, as the tokenizer produces
        ids[:, 0] = 1
        ids[torch.arange(bs), lengths - 1] = 2
        ids = ids.to(device)
        with torch.inference_mode():
            row = {"batch": bs}
            for mode in ("InternVL-C", "InternVL-G"):
                row[mode] = throughput(
                    lambda p=pixels, m=mode: model.encode_image(p, mode=m), bs, args.min_seconds, sync
                )
            row["text"] = throughput(lambda i=ids: model.encode_text(i), bs, args.min_seconds, sync)
        rows.append(row)

    base = rows[0]
    print(
        f"InternVL-C/G embeddings, width {args.width}, {args.layers}+{args.layers} layers, {args.image_size}px, "
        f"{args.device} {args.dtype}, torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    print(f"items/s (ratio vs batch {base['batch']})")
    header = f"{'batch':>6} | {'image C':>16} | {'image G':>16} | {'text':>16}"
    print(header)
    print("-" * len(header))
    for row in rows:
        cells = [f"{row[k]:8.1f} ({row[k] / base[k]:4.2f}x)" for k in ("InternVL-C", "InternVL-G", "text")]
        print(f"{row['batch']:>6} | " + " | ".join(f"{c:>16}" for c in cells))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
