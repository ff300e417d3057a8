"""Pieces the benchmark scripts share (not a benchmark itself: `make bench` skips ``_*.py``).

`cg_config` scales InternVL-C/G to a width and depth (the ViT too, or only QLLaMA behind a minimal ViT
for the text-side benchmarks); `flickr_like_captions` draws captions of Flickr30K-like lengths.
"""

from __future__ import annotations

import random

from internvl.models.intern_vit import InternViTConfig
from internvl.models.internvl_cg import InternVLConfig
from internvl.models.qllama import QLlamaConfig

WORDS = (
    "a man woman dog cat child two people group young old red blue green white black shirt street "
    "water beach grass field ball bike car building playing running sitting standing walking riding "
    "holding wearing front near next with while on in of the at his her their large small"
).split()


def cg_config(
    width: int, layers: int, vocab: int, *, queries: int = 96, image_size: int = 224, text_only: bool = False
) -> InternVLConfig:
    """InternVL-C/G with ViT and QLLaMA of ``width`` x ``layers`` (heads of 64); ``text_only``: a 1 x 64 ViT
    at 28 px instead, so a benchmark of the text tower times the text tower."""
    heads = max(1, width // 64)
    if text_only:
        vision = InternViTConfig(
            hidden_size=64, num_hidden_layers=1, num_attention_heads=1, intermediate_size=128, image_size=28
        )
    else:
        vision = InternViTConfig(
            hidden_size=width,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            intermediate_size=4 * width,
            image_size=image_size,
        )
    qllama = QLlamaConfig(
        vocab_size=vocab,
        hidden_size=width,
        intermediate_size=4 * width,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        max_position_embeddings=512,
        num_query_token=queries,
        vision_hidden_size=vision.hidden_size,
    )
    return InternVLConfig(
        vision_config=vision,
        qllama_config=qllama,
        clip_embed_dim=width // 2,
        attn_pool_num_heads=vision.num_attention_heads,
        num_query_token=queries,
    )


def flickr_like_captions(n: int, seed: int, *, period: bool = True) -> list[str]:
    """``n`` captions of 8-22 words drawn from `WORDS` (Flickr30K's lengths), ending with a full stop or not."""
    rng = random.Random(seed)
    end = "." if period else ""
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 22))) + end for _ in range(n)]
