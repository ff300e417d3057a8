"""Streamed recall@k against clip_benchmark's full-matrix computation, at COCO size.

Random unit embeddings of COCO Karpathy test's shape (5,000 images, 25,010 texts, width 768; each image
has 5 captions, 10 images have 6). The baseline is clip_benchmark's procedure (spec §6.3): the full
(texts x images) score matrix, its transpose, then per 64-row chunk ``topk`` + ``one_hot`` to count
positives. Ours: `retrieval_metrics` (two passes of 1024-text blocks, no sort). Prints the time of each,
the ratio, the size of the largest score buffer each holds, and whether the metrics agree.

    python benchmarks/retrieval_recall.py
    python benchmarks/retrieval_recall.py --images 1000 --dim 256     # quick
"""

from __future__ import annotations

import argparse
import json
import time

import torch
import torch.nn.functional as F

from internvl.evaluation.metrics.retrieval import retrieval_metrics


def clip_benchmark_style(images: torch.Tensor, texts: torch.Tensor, owner: torch.Tensor, ks=(1, 5, 10)) -> dict:
    scores = texts @ images.T  # (T, I): the full matrix
    positives = torch.zeros_like(scores, dtype=torch.bool)
    positives[torch.arange(len(scores)), owner] = True

    def recall(s: torch.Tensor, p: torch.Tensor, k: int) -> torch.Tensor:
        out = []
        for start in range(0, len(s), 64):
            sc, pc = s[start : start + 64], p[start : start + 64]
            top = torch.topk(sc, k, dim=1).indices
            onehot = F.one_hot(top, num_classes=sc.shape[1])  # (64, k, N)
            hits = (onehot * pc[:, None, :]).sum(dim=(1, 2))
            out.append(hits / pc.sum(1))
        return torch.cat(out)

    m = {}
    for k in ks:
        m[f"image_retrieval_recall@{k}"] = (recall(scores, positives, k) > 0).float().mean().item()
        m[f"text_retrieval_recall@{k}"] = (recall(scores.T, positives.T, k) > 0).float().mean().item()
    return m


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=5000)
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--chunk-size", type=int, default=1024)
    ap.add_argument("--signal", type=float, default=0.12, help="How close captions are to their image (recall level).")
    args = ap.parse_args()

    g = torch.Generator().manual_seed(0)
    n_img = args.images
    owner = torch.cat([torch.arange(n_img).repeat_interleave(5), torch.arange(min(10, n_img))])
    images = F.normalize(torch.randn(n_img, args.dim, generator=g), dim=-1)
    noise = F.normalize(torch.randn(len(owner), args.dim, generator=g), dim=-1)
    texts = F.normalize(args.signal * images[owner] + noise, dim=-1)

    t0 = time.perf_counter()
    ours = retrieval_metrics(images, texts, owner, chunk_size=args.chunk_size)
    t_ours = time.perf_counter() - t0
    t0 = time.perf_counter()
    base = clip_benchmark_style(images, texts, owner)
    t_base = time.perf_counter() - t0

    agree = all(ours[k] == base[k] for k in base)  # bit-identical values
    report = {
        "images": n_img,
        "texts": len(owner),
        "dim": args.dim,
        "threads": torch.get_num_threads(),
        "seconds_streamed": round(t_ours, 3),
        "seconds_full_matrix": round(t_base, 3),
        "ratio_full_over_streamed": round(t_base / t_ours, 2),
        "largest_score_buffer_MB_streamed": round(args.chunk_size * n_img * 4 / 2**20, 1),
        "largest_score_buffer_MB_full_matrix": round(len(owner) * n_img * 4 / 2**20, 1),
        "metrics_agree": agree,
        "text_retrieval_recall@1": ours["text_retrieval_recall@1"],
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
