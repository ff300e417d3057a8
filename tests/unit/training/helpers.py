"""Tiny checkpoints and generated flickr_format data for the training tests (CPU-sized)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

COLORS = {"red": (220, 30, 30), "green": (30, 180, 40), "blue": (30, 60, 220), "yellow": (230, 210, 20)}
SHAPES = ("square", "bar")
SIDES = ("left", "right")


def make_checkpoint(path: Path, seed: int = 0) -> Path:
    """A tiny InternVL-C/G checkpoint with a sentencepiece tokenizer that has a [PAD] token."""
    from transformers import AutoTokenizer

    from internvl.data.synthetic import DEFAULT_CORPUS, build_tokenizer
    from internvl.models.internvl_cg import build_internvl, internvl_cg_tiny

    corpus = (*DEFAULT_CORPUS, *(f"a {c} {s} on the {d}" for c in COLORS for s in SHAPES for d in SIDES))
    build_tokenizer(path, corpus=corpus, add_eos_token=True)
    tok = AutoTokenizer.from_pretrained(path)
    tok.add_special_tokens({"pad_token": "[PAD]"})
    tok.save_pretrained(path)
    build_internvl(internvl_cg_tiny(vocab_size=len(tok)), seed=seed).save_pretrained(path)
    return path


def scene(color: str, shape: str, side: str, seed: int, size: int = 56) -> Image.Image:
    rng = np.random.default_rng(seed)
    img = np.full((size, size, 3), 235, dtype=np.uint8) + rng.integers(-15, 15, (size, size, 3)).astype(np.uint8)
    w, h = (18, 18) if shape == "square" else (10, 34)
    x0 = int(rng.integers(2, size // 2 - w)) if side == "left" else int(rng.integers(size // 2, size - w - 2))
    y0 = int(rng.integers(2, size - h - 2))
    img[y0 : y0 + h, x0 : x0 + w] = COLORS[color]
    return Image.fromarray(img)


def make_flickr_set(
    root: Path, name: str, n_images: int, seed: int = 0, captions_per_image: int = 2, first_id: int = 1000
) -> Path:
    """``root/<name>.txt`` + ``root/images/*.jpg`` whose captions describe the images; returns a registry file."""
    rng = np.random.default_rng(seed)
    images = root / "images"
    images.mkdir(parents=True, exist_ok=True)
    lines = ["image,caption"]
    for i in range(n_images):
        color = list(COLORS)[int(rng.integers(len(COLORS)))]
        shape, side = SHAPES[int(rng.integers(2))], SIDES[int(rng.integers(2))]
        image_id = first_id + i
        scene(color, shape, side, seed * 100_003 + i).save(images / f"{image_id}.jpg", quality=95)
        templates = [
            f"a {color} {shape} on the {side}",
            f"the {side} side shows a {color} {shape}",
            f"a {shape} in {color} on the {side}",
        ]
        lines += [f"{image_id}.jpg,{t}" for t in templates[:captions_per_image]]
    (root / f"{name}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    registry = root / f"{name}_registry.yaml"
    registry.write_text(
        json.dumps(
            {"datasets": [{"name": name, "root": "images", "annotation": f"{name}.txt", "format": "flickr_format"}]}
        )
    )
    return registry
