"""The world presets: sizes that train in minutes, and a ViT grid aligned with the world's 3x3 cells."""

from __future__ import annotations

import torch

from internvl.data.synthetic.scenes import CELL, IMAGE_SIZE
from internvl.models.intern_vit import PRESETS
from internvl.models.internvl_cg import build_internvl, internvl_cg_world
from internvl.models.internvl_chat import build_internvl_chat, world_chat_config


def test_world_vit_has_one_patch_per_cell():
    cfg = PRESETS["intern_vit_world"]
    assert (cfg.image_size, cfg.patch_size) == (IMAGE_SIZE, CELL)


def test_world_cg_and_chat_build_and_run():
    cg = build_internvl(internvl_cg_world(500))
    n = sum(p.numel() for p in cg.parameters())
    assert 100_000 < n < 1_000_000
    pixels = torch.randn(2, 3, IMAGE_SIZE, IMAGE_SIZE)
    assert cg.encode_image(pixels).shape == (2, 64)
    assert cg.encode_text(torch.tensor([[1, 5, 6, 2, 0]])).shape == (1, 64)
    chat = build_internvl_chat(world_chat_config(500))
    assert chat.num_image_token == 9 and chat.config.system_message == "Answer the questions."
    assert chat.extract_feature(pixels).shape == (2, 9, 64)
    assert sum(p.numel() for p in chat.parameters()) < 2_000_000


def test_world_llm_init_scale_follows_its_width():
    # transformers' default 0.02 is tuned for widths near 1,000; the world LLM (64) starts at 1/sqrt(64)
    llm = build_internvl_chat(world_chat_config(500)).language_model
    assert llm.config.initializer_range == 64**-0.5
    std = llm.model.layers[0].self_attn.q_proj.weight.std().item()
    assert abs(std - 0.125) < 0.01
