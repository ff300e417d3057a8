"""Trainable parameters of an InternVLChatModel per SFT option (freeze / last-N ViT blocks / LoRA)."""

from __future__ import annotations

import warnings

import pytest
import torch

from internvl.core.errors import ConfigError
from internvl.models.internvl_chat import InternVLChatModel, tiny_chat_config
from internvl.training.chat_methods import (
    LLM_LORA_TARGETS,
    VISION_LORA_TARGETS,
    ChatTrainable,
    apply_chat_trainable,
    trainable_summary,
)


def _model() -> InternVLChatModel:
    torch.manual_seed(0)
    return InternVLChatModel(tiny_chat_config(vocab_size=64, image_size=28, vit_layers=3))


def _trainable(model) -> set[str]:
    return {n for n, p in model.named_parameters() if p.requires_grad}


def test_stages_and_freeze_flags():
    m = apply_chat_trainable(_model(), ChatTrainable.finetuning())
    s = trainable_summary(m)
    assert all(s[k][0] == s[k][1] > 0 for k in ("vision_model", "mlp1", "language_model"))
    m = apply_chat_trainable(_model(), ChatTrainable.pretraining())
    s = trainable_summary(m)
    assert s["language_model"][0] == 0 and s["vision_model"][0] == s["vision_model"][1] and s["mlp1"][0] > 0
    m = apply_chat_trainable(_model(), ChatTrainable(freeze_vision=True, freeze_llm=True))  # projector only
    assert _trainable(m) == {n for n, _ in m.named_parameters() if n.startswith("mlp1.")}
    with pytest.raises(ConfigError, match="every parameter is frozen"):
        apply_chat_trainable(_model(), ChatTrainable(freeze_vision=True, freeze_llm=True, freeze_mlp=True))


@pytest.mark.parametrize("n, blocks", [(-1, {2}), (-2, {1, 2}), (1, {1, 2})])
def test_unfreeze_last_vit_blocks(n, blocks):
    m = apply_chat_trainable(_model(), ChatTrainable(freeze_vision=True, unfreeze_vit_layers=n))
    vit = {x for x in _trainable(m) if x.startswith("vision_model.")}
    assert vit == {
        x for x, _ in m.named_parameters() if any(x.startswith(f"vision_model.encoder.layers.{b}.") for b in blocks)
    }
    with pytest.raises(ConfigError, match="has 3 blocks"):
        apply_chat_trainable(_model(), ChatTrainable(unfreeze_vit_layers=-4))


def test_lora_targets_and_gradients():
    pytest.importorskip("peft")
    m = apply_chat_trainable(
        _model(),
        ChatTrainable(freeze_vision=True, freeze_llm=True, freeze_mlp=True, llm_lora_rank=4, vision_lora_rank=2),
    )
    names = _trainable(m)
    assert names and all(".lora_A." in n or ".lora_B." in n for n in names)
    llm_targets = {
        n.split(".lora_")[0].rsplit(".", 2)[-2] + "." + n.split(".lora_")[0].rsplit(".", 1)[-1]
        for n in names
        if n.startswith("language_model.")
    }
    assert llm_targets == set(LLM_LORA_TARGETS)
    vit_targets = {".".join(n.split(".lora_")[0].split(".")[-2:]) for n in names if n.startswith("vision_model.")}
    assert vit_targets == set(VISION_LORA_TARGETS)
    lora_a = dict(m.named_parameters())["language_model.model.layers.0.self_attn.q_proj.lora_A.default.weight"]
    assert lora_a.shape[0] == 4
    # every adapter gets a gradient from the SFT loss, through both the ViT and the LLM
    m.img_context_token_id = 63
    assert m.num_image_token == 1  # 28 px, patch 14, pixel shuffle 0.5
    ids = torch.cat([torch.tensor([[5, 63]]), torch.randint(3, 60, (1, 10))], dim=1)
    out = m(pixel_values=torch.randn(1, 3, 28, 28), input_ids=ids, labels=ids, image_flags=torch.tensor([1]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # ps_version v1 notice
        out.loss.backward()
    # (lora_A's gradient is exactly 0 at the first step because lora_B starts at 0)
    missing = [
        n
        for n, p in m.named_parameters()
        if p.requires_grad and (p.grad is None or (".lora_B." in n and not p.grad.abs().sum()))
    ]
    assert not missing, missing[:5]
    # a LoRA part keeps its base weights frozen even without its freeze flag
    m = apply_chat_trainable(_model(), ChatTrainable(llm_lora_rank=2))
    trainable = _trainable(m)
    assert not any(n.startswith("language_model.") and "lora_" not in n for n in trainable)
    assert any(n.startswith("vision_model.") for n in trainable) and any(n.startswith("mlp1.") for n in trainable)


def test_options_validation():
    with pytest.raises(ConfigError, match="llm_lora_rank=-1"):
        ChatTrainable(llm_lora_rank=-1)
    with pytest.raises(ConfigError, match="lora_dropout"):
        ChatTrainable(lora_dropout=1.5)
