"""Every shipped SFT recipe parses and validates, with the reference's values (chat spec §8.2-8.3)."""

from __future__ import annotations

import math

import pytest

from internvl.core.errors import ConfigError
from internvl.training.sft_recipe import SFT_CONFIG_DIR, load_sft_recipe


def test_every_shipped_recipe_parses_and_validates():
    files = sorted(SFT_CONFIG_DIR.glob("*"))
    assert [f.name for f in files] == [
        "tiny_synthetic.yaml",
        "v1_2_2nd_finetune_full.yaml",
        "v1_2_2nd_finetune_lora.yaml",
        "v1_2_finetune.yaml",
        "world_chat.yaml",
    ]
    tiny = load_sft_recipe("tiny_synthetic", ["model.path=ckpt", "data.meta_path=m.json"])  # the tests' CPU recipe
    assert tiny.engine.precision == "fp32" and tiny.schedule.global_batch_size == 4
    world = load_sft_recipe("world_chat", ["model.vision_path=v", "model.llm_path=l", "data.meta_path=m.json"])
    assert world.schedule.max_seconds > 0 and world.model.downsample_ratio == 1.0  # `internvl demo` stage 2
    for f in files[1:4]:
        r = load_sft_recipe(f)
        assert r.data.template == "Hermes-2" and r.data.max_length == 2048 and r.model.ps_version == "v1"
        assert r.optim.lr == 1e-5 and r.optim.weight_decay == 0.05 and r.schedule.epochs == 1
        assert r.schedule.warmup_ratio == 0.03 and r.schedule.lr_scheduler == "cosine"
        assert r.engine.precision == "bf16" and r.engine.zero_stage == 3 and r.data.group_by_length


def test_v1_2_finetune_values():
    r = load_sft_recipe("v1_2_finetune")  # by name
    assert r.model.vision_path.endswith("InternViT-6B-448px-V1-2") and r.model.llm_path.endswith("Nous-Hermes-2-Yi-34B")
    assert r.model.mlp_path.endswith("mlp_projector/hermes_2_yi_34b.pth") and not r.model.path
    assert r.model.drop_path_rate == 0.4 and r.model.gradient_checkpointing and r.model.vision_select_layer == -1
    assert not r.data.dynamic_image_size
    assert r.schedule.global_batch_size == 512 and r.world_size() == 64
    t = r.method.trainable()
    assert not (t.freeze_vision or t.freeze_mlp or t.freeze_llm) and not (t.llm_lora_rank or t.vision_lora_rank)
    assert (r.log.save_steps, r.log.save_total_limit, r.log.logging_steps) == (200, 3, 1)
    steps = math.ceil(1_267_819 / r.schedule.global_batch_size)
    assert math.ceil(r.schedule.warmup_ratio * steps) == 75  # spec §8.2: ~75 warm-up steps of ~2,477


def test_second_finetune_values():
    full, lora = load_sft_recipe("v1_2_2nd_finetune_full"), load_sft_recipe("v1_2_2nd_finetune_lora")
    for r in (full, lora):
        assert r.model.path.endswith("InternVL-Chat-V1-2-Plus") and r.data.max_dynamic_patch == 1
        assert r.model.drop_path_rate == 0.0 and r.log.save_total_limit == 1
        assert r.data.meta_path.endswith("internvl_1_2_finetune_custom.json")
    assert (full.schedule.global_batch_size, full.world_size()) == (128, 16)
    assert (lora.schedule.global_batch_size, lora.world_size()) == (16, 2)
    tf, tl = full.method.trainable(), lora.method.trainable()
    assert tf.freeze_vision and not tf.freeze_llm and not tf.freeze_mlp and tf.llm_lora_rank == 0
    assert tl.freeze_vision and tl.freeze_llm and tl.freeze_mlp and tl.llm_lora_rank == 16


def test_overrides_and_errors(tmp_path):
    r = load_sft_recipe("v1_2_2nd_finetune_lora", ["optim.lr=2e-5", "method.llm_lora_rank=8", "data.meta_path=m.json"])
    assert r.optim.lr == 2e-5 and r.method.llm_lora_rank == 8 and r.data.meta_path == "m.json"
    bad = [
        (["optim.lrr=1"], r"optim.lrr: unknown key 'lrr' \(did you mean 'lr'\?\)"),
        (["optim.lr=fast"], "optim.lr: expected float"),
        (["data.template=Hermes-3"], "data.template='Hermes-3'"),
        (["model.vision_path=v", "model.llm_path=l"], "either model.path"),
        (["model.ps_version=v3"], "ps_version"),
        (["schedule.per_device_batch_size=3"], "not a multiple"),
        (["method.llm_lora_rank=-2"], "llm_lora_rank=-2"),
        (["data.meta_path="], "data.meta_path is empty"),
        (["engine.cpu_threads=-1"], r"engine.cpu_threads=-1; expected 0 \(torch's default\) or more"),
    ]
    for overrides, message in bad:
        with pytest.raises(ConfigError, match=message):
            load_sft_recipe("v1_2_2nd_finetune_full", overrides)
    with pytest.raises(ConfigError, match="not a shipped recipe"):
        load_sft_recipe("v9_finetune")
    (tmp_path / "r.yaml").write_text("name: x\nmodel: [1\n")
    with pytest.raises(ConfigError, match=r"r.yaml:\d+: invalid YAML"):
        load_sft_recipe(tmp_path / "r.yaml")
