"""Recipes as files, batch arithmetic, trainable sets per method, lr decay through the schedule, LoRA grads."""

from __future__ import annotations

import json
import math

import pytest
import torch

from internvl.core.errors import ConfigError
from internvl.models import intern_vit, qllama
from internvl.models.internvl_cg import build_internvl, internvl_cg_tiny
from internvl.training.config import CONFIG_DIR, load_recipe, resolve_batch
from internvl.training.losses import retrieval_loss
from internvl.training.methods import apply_method, parameter_counts
from internvl.training.optim import build_optimizer, param_groups, warmup_cosine

SHIPPED = sorted((CONFIG_DIR / "retrieval").glob("*.yaml"))


def test_every_shipped_file_parses():
    assert len(SHIPPED) >= 4
    for f in SHIPPED:
        load_recipe(f, ["model.path=x"])
    for f in sorted((CONFIG_DIR / "deepspeed").glob("*.json")):
        cfg = json.loads(f.read_text())
        assert "optimizer" not in cfg and "scheduler" not in cfg, f  # see configs/README.md
        assert cfg["zero_optimization"]["stage"] == int(f.stem[-1])
    assert not list(CONFIG_DIR.rglob("*.py"))


def test_guide_values():
    full = load_recipe("flickr30k_full_364")
    assert (full.method.name, full.model.image_size, full.model.drop_path_rate) == ("full", 364, 0.3)
    assert (full.optim.lr, full.optim.weight_decay, full.optim.vit_layer_decay, full.optim.qllama_layer_decay) == (
        1e-6,
        0.05,
        0.9,
        0.9,
    )
    assert (full.schedule.global_batch_size, full.schedule.warmup_steps, full.schedule.epochs) == (1024, 100, 10)
    assert (full.engine.zero_stage, full.engine.precision) == (1, "bf16")
    assert load_recipe("coco_full_364").schedule.epochs == 5
    head, lora = load_recipe("flickr30k_head"), load_recipe("flickr30k_lora")
    for r in (head, lora):
        assert (r.model.image_size, r.schedule.global_batch_size, r.engine.zero_stage) == (224, 128, 3)
        assert r.optim.vit_layer_decay == r.optim.qllama_layer_decay == 1.0
    assert (head.method.name, lora.method.name, lora.method.lora_rank) == ("head", "lora", 16)


def test_overrides_and_errors():
    r = load_recipe("flickr30k_head", ["optim.lr=2e-6", "data.registry=[a.yaml]", "data.val=null"])
    assert r.optim.lr == 2e-6 and r.data.registry == ["a.yaml"] and r.data.val is None
    with pytest.raises(ConfigError, match="did you mean 'lr'"):
        load_recipe("flickr30k_head", ["optim.lrr=1"])
    with pytest.raises(ConfigError, match="optim.lr: expected float"):
        load_recipe("flickr30k_head", ["optim.lr=fast"])
    with pytest.raises(ConfigError, match="layer-wise lr decay applies to method 'full' only"):
        load_recipe("flickr30k_head", ["optim.vit_layer_decay=0.9"])
    with pytest.raises(ConfigError, match=r"engine.cpu_threads=-2; expected 0"):
        load_recipe("flickr30k_head", ["engine.cpu_threads=-2", "data.registry=[a.yaml]"])
    with pytest.raises(ConfigError, match="model.path is empty"):
        load_recipe("tiny_synthetic")
    with pytest.raises(ConfigError, match="not a shipped recipe"):
        load_recipe("no_such_recipe")


@pytest.mark.parametrize(
    "args,expected",
    [
        ((1024, 32), (32, 1)),  # guide: 32 GPUs x 32
        ((128, 4, 32), (32, 1)),  # guide head/LoRA: 4 GPUs x 32
        ((128, 4, 8), (8, 4)),  # 4 x 24 GB GPUs: accumulate
        ((1024, 8, None, 4), (32, 4)),
        ((4, 2, 1, 2), (1, 2)),
    ],
)
def test_batch_arithmetic(args, expected):
    plan = resolve_batch(*args)
    assert (plan.per_device_batch_size, plan.gradient_accumulation_steps) == expected
    assert plan.per_device_batch_size * plan.world_size * plan.gradient_accumulation_steps == plan.global_batch_size


@pytest.mark.parametrize(
    "args,match",
    [
        ((128, 3), "not divisible by 3 device"),
        ((128, 4, 24), "not a multiple of per-device batch 24"),
        ((128, 4, 8, 2), "= 64, but schedule.global_batch_size is 128"),
        ((128, 4, 0), "expected >= 1"),
    ],
)
def test_batch_arithmetic_errors(args, match):
    with pytest.raises(ConfigError, match=match):
        resolve_batch(*args)


def _tiny():
    return build_internvl(internvl_cg_tiny(), seed=0)


def _batch(model, b=3, length=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    vocab = model.config.qllama_config.vocab_size
    out = {"pixel_values": torch.randn(b, 3, 56, 56, generator=g), "image_ids": torch.tensor([[1], [2], [1]])[:b]}
    for name in ("positive", "negative", "summarize"):
        ids = torch.randint(3, vocab, (b, length), generator=g)
        lengths = torch.randint(3, length + 1, (b,), generator=g)
        mask = (torch.arange(length)[None] < lengths[:, None]).long()
        out[f"{name}_input_ids"], out[f"{name}_attention_mask"] = ids * mask, mask
    return out


def test_trainable_sets_per_method():
    cfg = internvl_cg_tiny()
    counts = {}
    for method in ("full", "head", "lora"):
        model = _tiny()
        apply_method(model, method, lora_rank=4)
        names = sorted(n for n, p in model.named_parameters() if p.requires_grad)
        counts[method] = parameter_counts(model)
        if method == "full":
            assert names == sorted(n for n, _ in model.named_parameters() if n != "qllama.lm_head.weight")
        elif method == "head":
            assert names == ["text_projection"]
        else:
            adapters = [n for n in names if n != "text_projection"]
            v, q = cfg.vision_config, cfg.qllama_config
            assert len(adapters) == 2 * (4 * v.num_hidden_layers + 7 * q.num_hidden_layers)
            assert all(".lora_A.default." in n or ".lora_B.default." in n for n in adapters)
            assert not [n for n in adapters if "cross_attn" in n]
            vd, vi, qd, qi = v.hidden_size, v.intermediate_size, q.hidden_size, q.intermediate_size
            per_vit_layer = 4 * ((vd + 3 * vd) + (vd + vd) + (vd + vi) + (vi + vd))
            per_q_layer = 4 * (4 * (qd + qd) + 2 * (qd + qi) + (qi + qd))
            assert counts[method]["vision_model"][0] == v.num_hidden_layers * per_vit_layer
            assert counts[method]["qllama"][0] == q.num_hidden_layers * per_q_layer
    text_projection = cfg.qllama_config.hidden_size * cfg.clip_embed_dim
    assert counts["head"]["total"][0] == text_projection
    assert (
        counts["full"]["total"][0]
        == counts["full"]["total"][1] - cfg.qllama_config.vocab_size * cfg.qllama_config.hidden_size
    )
    assert counts["lora"]["total"][1] > counts["full"]["total"][1]  # adapters add parameters


def test_layer_decay_survives_the_schedule():
    model = _tiny()
    apply_method(model, "full")
    base = 1e-3
    groups = param_groups(model, base, 0.05, {"vit": 0.9, "qllama": 0.9})
    scales = [g["lr_scale"] for g in groups]
    assert len(set(scales)) == 4  # 2-layer towers: 0.9^3 .. 1
    opt = build_optimizer(groups, base)
    sched = warmup_cosine(opt, warmup_steps=3, total_steps=10)
    loss_batch = _batch(model)
    for step in range(1, 6):
        opt.zero_grad()
        retrieval_loss(model, loss_batch).loss.backward()
        opt.step()
        sched.step()
        factor = step / 3 if step < 3 else 0.5 * (1 + math.cos(math.pi * (step - 3) / 7))
        for g in opt.param_groups:
            assert math.isclose(g["lr"], base * g["lr_scale"] * factor, rel_tol=1e-12), (step, g["name"])


def test_lora_adapters_get_gradients_under_checkpointing(monkeypatch):
    calls = {"n": 0}
    real = torch.utils.checkpoint.checkpoint

    def counting(*args, **kwargs):
        calls["n"] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(qllama, "checkpoint", counting)
    monkeypatch.setattr(intern_vit, "checkpoint", counting)
    model = _tiny()
    apply_method(model, "lora", lora_rank=4, lora_dropout=0.0)
    model.vision_model.set_gradient_checkpointing(True)
    model.qllama.set_gradient_checkpointing(True)
    model.train()
    batch = _batch(model)
    adapters = {n: p for n, p in model.named_parameters() if ".lora_" in n}
    retrieval_loss(model, batch).loss.backward()
    assert calls["n"] == 4  # 2 ViT + 2 QLLaMA layers ran checkpointed
    assert all(p.grad is not None for p in adapters.values())
    assert all(p.grad.abs().sum() > 0 for n, p in adapters.items() if ".lora_B." in n)
    # lora_B starts at zero, so lora_A's gradient is zero until B has moved once.
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    opt.step()
    opt.zero_grad()
    retrieval_loss(model, batch).loss.backward()
    dead = [n for n, p in adapters.items() if not p.grad.abs().sum() > 0]
    assert dead == []
    assert all(p.grad is None for n, p in model.named_parameters() if not p.requires_grad)
