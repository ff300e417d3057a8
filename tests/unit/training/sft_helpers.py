"""Tiny InternVL-Chat checkpoints, parts (InternViT dir + LLM dir) and a meta mixture for the SFT training tests."""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image

COLORS = {"red": (220, 30, 30), "green": (30, 180, 40), "blue": (30, 60, 220), "yellow": (230, 210, 20)}
CORPUS = (
    "what colour is the image?",
    "the image is red",
    "the image is green",
    "the image is blue",
    "the image is yellow",
    "tell me a fact",
    "water is wet",
    "the sky is blue",
    "grass is green",
    "hello, who are you?",
    "I am a helpful assistant",
)
CHAT_TEMPLATE_TOKENS = ("<|im_start|>", "<|im_end|>")
IMAGE_SIZE = 28  # 2x2 patches of 14 px -> one visual token per tile after pixel shuffle


def _tokenizer(path: Path, chat_tokens: bool) -> Path:
    from internvl.data.synthetic import CHAT_SPECIAL_TOKENS, build_tokenizer

    return build_tokenizer(
        path,
        corpus=CORPUS,
        vocab_size=320,
        add_bos_token=False,
        special_tokens=CHAT_SPECIAL_TOKENS if chat_tokens else (),
        chat_template_tokens=CHAT_TEMPLATE_TOKENS,
        normalization="identity",
    )


def make_chat_checkpoint(path: Path, seed: int = 0) -> Path:
    """A random tiny InternVL-Chat (V1-2 layout, Hermes-2) saved as `internvl chat` reads it."""
    from internvl.inference import chat as api
    from internvl.models.internvl_chat import build_internvl_chat, tiny_chat_config

    _tokenizer(path, chat_tokens=True)
    tok = api.load_tokenizer(path)
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    cfg = tiny_chat_config(len(tok), image_size=IMAGE_SIZE, eos_token_id=im_end, pad_token_id=0)
    model = build_internvl_chat(cfg, seed=seed)
    api.bind_tokenizer(model, tok)
    model.config.img_context_token_id = model.img_context_token_id
    # the tokenizer files stay as built (SentencePiece model + its config), as a released checkpoint ships them
    model.save_pretrained(path, stop_token_ids=api.stop_token_ids(model, tok))
    return path


def make_parts(root: Path, seed: int = 0) -> tuple[Path, Path]:
    """``root/InternViT`` (an InternViT checkpoint) and ``root/LLM`` (a LLaMA with its plain tokenizer:
    no chat tokens yet), the guide's ``pretrained/`` layout in miniature."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from internvl.inference.chat import load_tokenizer
    from internvl.models.intern_vit import InternViTConfig, build_intern_vit

    vit_dir, llm_dir = root / "InternViT-tiny", root / "LLM-tiny"
    vit = build_intern_vit(
        InternViTConfig(
            hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128, image_size=IMAGE_SIZE
        ),
        seed=seed,
    )
    vit.save_pretrained(vit_dir)
    _tokenizer(llm_dir, chat_tokens=False)
    tok = load_tokenizer(llm_dir)
    torch.manual_seed(seed)
    llm = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=len(tok),
            hidden_size=64,
            intermediate_size=160,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=512,
            bos_token_id=1,
            eos_token_id=2,
            pad_token_id=0,
            tie_word_embeddings=False,
        )
    )
    llm.save_pretrained(llm_dir)
    return vit_dir, llm_dir


def make_mixture(root: Path, repeat_images: float = 1.5, repeat_text: float = 0.5) -> Path:
    """A meta JSON with two datasets: 4 one-image colour records (``repeat_time`` > 1) and 4 pure-text
    records (``repeat_time`` < 1)."""
    images = root / "images"
    images.mkdir(parents=True, exist_ok=True)
    q = "what colour is the image?"
    rows = []
    for name, rgb in COLORS.items():
        Image.new("RGB", (40, 40), rgb).save(images / f"{name}.png")
        rows.append(
            {
                "image": f"{name}.png",
                "conversations": [
                    {"from": "human", "value": f"<image>\n{q}"},
                    {"from": "gpt", "value": f"the image is {name}"},
                ],
            }
        )
    (root / "colours.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    facts = [
        ("tell me a fact", "water is wet"),
        ("tell me a fact", "the sky is blue"),
        ("hello, who are you?", "I am a helpful assistant"),
        ("tell me a fact", "grass is green"),
    ]
    (root / "text.jsonl").write_text(
        "".join(
            json.dumps({"conversations": [{"from": "human", "value": a}, {"from": "gpt", "value": b}]}) + "\n"
            for a, b in facts
        )
    )
    meta = {
        "colours": {"root": "images", "annotation": "colours.jsonl", "repeat_time": repeat_images},
        "text": {"root": "", "annotation": "text.jsonl", "repeat_time": repeat_text},
    }
    path = root / "meta.json"
    path.write_text(json.dumps(meta))
    return path
