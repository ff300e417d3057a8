"""Caption evaluation throughput (images/s): batched `caption_dataset` vs the reference's batch size 1.

The reference's ``evaluate_caption.py`` asserted batch size 1; every image shares the prompt, so we
batch without padding. This builds a small random InternVL-G (ViT and QLLaMA, 96 queries as the
released model) and a SentencePiece tokenizer, writes synthetic JPEGs, and runs the whole caption
loop (DataLoader with workers, transform, beam search, decoding) at each batch size in this process,
with the reference's settings (5 beams, 8 to 30 new tokens). Prints images/s, the ratio to batch 1 and
how many captions equal batch 1's.

    python benchmarks/caption_eval.py --threads 1
    python benchmarks/caption_eval.py --device cuda --dtype fp16 --images 256 --batch-sizes 1 16 64
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from _common import cg_config

from internvl.data.datasets import ImageCaptions
from internvl.data.synthetic import build_tokenizer, synthetic_image
from internvl.data.tokenization import InternVLTextTokenizer
from internvl.evaluation.captioning import caption_dataset
from internvl.models.checkpoint import resolve_dtype
from internvl.models.internvl_cg import build_internvl


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--queries", type=int, default=96)
    parser.add_argument("--num-beams", type=int, default=5)
    parser.add_argument("--num-workers", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="fp32")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (1 on a shared machine).")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        tok = InternVLTextTokenizer.from_pretrained(build_tokenizer(root / "tok"))
        records = []
        for i in range(args.images):
            path = root / f"{i}.jpg"
            synthetic_image(i, args.image_size).save(path, quality=90)
            records.append(ImageCaptions(i, path, ("a caption",)))
        model = build_internvl(
            cg_config(args.width, args.layers, tok.vocab_size, queries=args.queries, image_size=args.image_size)
        )
        model = model.to(torch.device(args.device), resolve_dtype(args.dtype)).eval()
        sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
        caption_dataset(
            model,
            tok,
            records[: max(args.batch_sizes)],
            batch_size=max(args.batch_sizes),
            num_beams=args.num_beams,
            progress=False,
        )  # warm-up
        rows = []
        for bs in args.batch_sizes:
            sync()
            start = time.perf_counter()
            out = caption_dataset(
                model,
                tok,
                records,
                batch_size=bs,
                num_workers=args.num_workers,
                num_beams=args.num_beams,
                progress=False,
            )
            sync()
            rows.append((bs, len(records) / (time.perf_counter() - start), [r["caption"] for r in out]))
    base = rows[0]
    print(
        f"caption eval: InternVL-G ViT {args.layers}x{args.width} @ {args.image_size}px, QLLaMA {args.layers}x"
        f"{args.width}, {args.queries} queries, {args.images} images, beam {args.num_beams}, 8-30 new tokens, "
        f"{args.num_workers} workers, {args.device} {args.dtype}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads"
    )
    header = f"{'batch':>5} | {'images/s':>8} | {'ratio':>6} | {'captions equal to batch ' + str(base[0]):>26}"
    print(header)
    print("-" * len(header))
    for bs, speed, caps in rows:
        same = sum(a == b for a, b in zip(caps, base[2], strict=True))
        print(f"{bs:>5} | {speed:>8.2f} | {speed / base[1]:>5.2f}x | {same:>20} / {len(caps)}")


if __name__ == "__main__":
    main()
