"""InternVL-C/G behaviour beyond the golden tensors: LoRA checkpoints, masks, config and I/O round trips."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from internvl.core.errors import CheckpointError, ConfigError
from internvl.models import checkpoint as ckpt
from internvl.models.internvl_cg import InternVLConfig, InternVLModel, build_internvl, internvl_cg_tiny

VISION_TARGETS = ["attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2"]
QLLAMA_TARGETS = [f"self_attn.{p}" for p in ("q_proj", "k_proj", "v_proj", "o_proj")] + [
    f"mlp.{p}" for p in ("gate_proj", "up_proj", "down_proj")
]


@pytest.fixture(scope="module")
def config() -> InternVLConfig:
    return internvl_cg_tiny(vocab_size=64)


@pytest.fixture(scope="module")
def model(config) -> InternVLModel:
    return build_internvl(config, seed=0)


def _inputs(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    pixel_values = torch.randn(2, 3, 56, 56, generator=g)
    input_ids = torch.tensor([[1, 5, 9, 14, 2, 0, 0], [1, 7, 3, 11, 12, 13, 2]])
    return pixel_values, input_ids


def test_lora_checkpoint_loads_merged_like_peft(tmp_path, config):
    """A checkpoint saved with peft LoRA wrappers (as the reference's LoRA fine-tuning writes it) loads
    merged: weights equal peft's merge_and_unload, outputs equal the wrapped model's."""
    peft = pytest.importorskip("peft")
    rank = 4
    model = build_internvl(config, seed=1)
    lora = dict(r=rank, lora_alpha=2 * rank, lora_dropout=0.05)  # alpha = 2r as in the reference
    model.vision_model = peft.get_peft_model(model.vision_model, peft.LoraConfig(target_modules=VISION_TARGETS, **lora))
    model.qllama = peft.get_peft_model(model.qllama, peft.LoraConfig(target_modules=QLLAMA_TARGETS, **lora))
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:  # peft initialises B to zero; make the adapters matter
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    model.eval()
    state = model.state_dict()
    assert any(".base_layer." in k for k in state) and any("qllama.base_model.model.model." in k for k in state)

    pixel_values, input_ids = _inputs()
    with torch.no_grad():
        expected_img = model.clip_projector(model.vision_model(pixel_values).last_hidden_state)
        embeds = model.qllama.get_input_embeddings()(input_ids)
        expected_txt = model.qllama.base_model.model.model(inputs_embeds=embeds, attention_mask=input_ids > 0)

    cfg = dataclasses.replace(config, use_backbone_lora=rank, use_qllama_lora=rank).to_dict()
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    ckpt.save_state_dict(state, tmp_path)
    loaded = InternVLModel.from_pretrained(tmp_path)

    merged_vision = model.vision_model.merge_and_unload()
    merged_qllama = model.qllama.merge_and_unload()
    for prefix, merged in (("vision_model.", merged_vision), ("qllama.", merged_qllama)):
        for key, value in merged.state_dict().items():
            torch.testing.assert_close(loaded.state_dict()[prefix + key], value, atol=1e-6, rtol=1e-6, msg=key)
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode_image(pixel_values), expected_img, atol=1e-5, rtol=1e-5)
        ours = loaded.get_text_features(input_ids, input_ids > 0)
    torch.testing.assert_close(ours, expected_txt.last_hidden_state, atol=1e-5, rtol=1e-5)


def test_lora_rank_mismatch_is_reported(tmp_path, config, model):
    state = dict(model.state_dict())
    w = state.pop("vision_model.encoder.layers.0.attn.qkv.weight")
    prefix = "vision_model.base_model.model.encoder.layers.0.attn.qkv"
    state = {k.replace("vision_model.", "vision_model.base_model.model.", 1): v for k, v in state.items()}
    state[f"{prefix}.base_layer.weight"] = w
    state[f"{prefix}.lora_A.default.weight"] = torch.zeros(8, w.shape[1])
    state[f"{prefix}.lora_B.default.weight"] = torch.zeros(w.shape[0], 8)
    (tmp_path / "config.json").write_text(json.dumps(dataclasses.replace(config, use_backbone_lora=4).to_dict()))
    ckpt.save_state_dict(state, tmp_path)
    with pytest.raises(CheckpointError, match="rank 8"):
        InternVLModel.from_pretrained(tmp_path)


def test_save_load_round_trip_and_ignored_inv_freq(tmp_path, model):
    model.save_pretrained(tmp_path)
    raw = json.loads((tmp_path / "config.json").read_text())
    assert raw["model_type"] == "internvl" and raw["qllama_config"]["model_type"] == "llama"
    assert raw["qllama_config"]["vision_hidden_size"] == raw["vision_config"]["hidden_size"]
    # Older checkpoints store RoPE inv_freq buffers; they are not state here and must be ignored.
    state = ckpt.read_state_dict(tmp_path)
    state["qllama.model.layers.0.self_attn.rotary_emb.inv_freq"] = torch.ones(8)
    ckpt.save_state_dict(state, tmp_path)
    loaded = InternVLModel.from_pretrained(tmp_path)
    pixel_values, input_ids = _inputs()
    with torch.no_grad():
        for mode in ("InternVL-C", "InternVL-G"):
            a, b = model(pixel_values, input_ids, mode), loaded(pixel_values, input_ids, mode)
            torch.testing.assert_close(a.logits_per_image, b.logits_per_image, atol=0, rtol=0)


def test_padding_does_not_change_text_embeddings(model):
    """Right padding (id 0, masked) leaves the EOS embedding unchanged."""
    short = torch.tensor([[1, 5, 9, 14, 2]])
    padded = torch.tensor([[1, 5, 9, 14, 2, 0, 0, 0], [1, 7, 3, 11, 12, 13, 10, 2]])
    with torch.no_grad():
        alone = model.encode_text(short)
        batched = model.encode_text(padded)
    torch.testing.assert_close(batched[:1], alone, atol=1e-6, rtol=1e-6)


def test_image_embeddings_do_not_depend_on_batch_mates(model):
    pixel_values, _ = _inputs()
    with torch.no_grad():
        both = model.encode_image(pixel_values, mode="InternVL-G")
        first = model.encode_image(pixel_values[:1], mode="InternVL-G")
    torch.testing.assert_close(both[:1], first, atol=1e-6, rtol=1e-6)
    # G embeddings are the sum of two unit vectors.
    assert (both.norm(dim=1) <= 2 + 1e-5).all()


def test_batched_generation_equals_one_by_one(model):
    pixel_values, _ = _inputs(3)
    prompt = torch.tensor([1, 5, 9])
    kwargs = dict(num_beams=2, max_new_tokens=5, min_new_tokens=2)
    batched = model.generate(pixel_values, prompt, **kwargs)
    single = [model.generate(pixel_values[i : i + 1], prompt, **kwargs) for i in range(2)]
    for i, ids in enumerate(single):
        n = ids.shape[1]
        assert torch.equal(batched[i, :n], ids[0])
        assert (batched[i, n:] == model.config.qllama_config.pad_token_id).all()


def test_force_image_size_resizes_a_base_checkpoint(tmp_path, config, model):
    model.save_pretrained(tmp_path)
    raw = json.loads((tmp_path / "config.json").read_text())
    raw["force_image_size"] = 84
    (tmp_path / "config.json").write_text(json.dumps(raw))
    loaded = InternVLModel.from_pretrained(tmp_path)
    assert loaded.image_size == 84
    assert loaded.vision_model.embeddings.position_embedding.shape[1] == (84 // 14) ** 2 + 1
    with torch.no_grad():
        assert loaded.encode_image(torch.randn(1, 3, 84, 84)).shape == (1, config.clip_embed_dim)


def test_config_errors(config, model):
    bad = config.to_dict()
    bad["qllama_config"]["vision_hidden_size"] = 3200
    with pytest.raises(ConfigError, match="vision_hidden_size"):
        InternVLConfig.from_dict(bad)
    with pytest.raises(ConfigError, match="vision_config"):
        InternVLConfig.from_dict({"model_type": "internvl_chat"})
    with pytest.raises(ConfigError, match="mode"):
        model.encode_image(torch.zeros(1, 3, 56, 56), mode="InternVL-X")


def test_captioning_mask_layout(model):
    """use_zero_attention_mask: queries see each other both ways but not the text; text is causal and sees queries."""
    nq, p = model.config.num_query_token, 3
    mask = model.qllama.model.build_mask(None, 1, nq + p, 0, torch.float32, torch.device("cpu"), True)
    allowed = mask[0, 0] == 0
    assert allowed[:nq, :nq].all()
    assert not allowed[:nq, nq:].any()
    assert allowed[nq:, :nq].all()
    assert torch.equal(allowed[nq:, nq:], torch.ones(p, p, dtype=torch.bool).tril())
    blocked = mask[0, 0][~allowed]
    assert (blocked == torch.finfo(torch.float32).min).all()  # saturated, never -inf


def test_lora_merge_of_a_bf16_checkpoint_keeps_the_load_precision(tmp_path, config, model):
    """A LoRA checkpoint stored in bf16 (DeepSpeed's dtype) loaded in fp32 merges W + 2*B@A in float32 and
    rounds once to the load dtype, not to bf16 (which would lose the low bits of the adapter update)."""
    rank = 4
    state = {
        k.replace("vision_model.", "vision_model.base_model.model.", 1): v.to(torch.bfloat16)
        for k, v in model.state_dict().items()
    }
    prefix = "vision_model.base_model.model.encoder.layers.0.attn.qkv"
    w = state.pop(f"{prefix}.weight")
    g = torch.Generator().manual_seed(3)
    a = torch.randn(rank, w.shape[1], generator=g).to(torch.bfloat16)
    b = (torch.randn(w.shape[0], rank, generator=g) * 0.01).to(torch.bfloat16)
    state.update(
        {f"{prefix}.base_layer.weight": w, f"{prefix}.lora_A.default.weight": a, f"{prefix}.lora_B.default.weight": b}
    )
    (tmp_path / "config.json").write_text(json.dumps(dataclasses.replace(config, use_backbone_lora=rank).to_dict()))
    ckpt.save_state_dict(state, tmp_path)
    loaded = InternVLModel.from_pretrained(tmp_path, dtype="fp32")
    merged = loaded.state_dict()["vision_model.encoder.layers.0.attn.qkv.weight"]
    expected = w.float() + 2.0 * (b.float() @ a.float())
    assert merged.dtype == torch.float32
    torch.testing.assert_close(merged, expected, atol=1e-7, rtol=1e-6)
    assert not torch.equal(merged, expected.to(torch.bfloat16).float())  # really finer than bf16


def test_rope_rows_come_from_the_cpu_table_and_extend_past_it(model):
    """The reference computes its cos/sin table once on the CPU (float32) and moves it with the model, so
    the rows are gathered from a CPU-built table on every device; positions past the table are computed."""
    from internvl.models.qllama import rope_table, rotary_cos_sin

    qmodel = model.qllama.model
    d, length = qmodel.config.head_dim, qmodel.config.max_position_embeddings
    cos_t, sin_t = qmodel.rope_tables(torch.device("cpu"))
    assert qmodel.rope_tables(torch.device("cpu"))[0] is cos_t  # built once per device
    inv_freq = 1.0 / (10000 ** (torch.arange(0, d, 2).float() / d))
    freqs = torch.einsum("i,j->ij", torch.arange(length, dtype=torch.float32), inv_freq)
    assert torch.equal(cos_t, torch.cat([freqs, freqs], -1).cos()) and torch.equal(sin_t, rope_table(d, length)[1])
    pos = torch.tensor([[0, 5, length - 1, length, length + 7]])
    cos, sin = rotary_cos_sin(pos, d, torch.float16, (cos_t, sin_t))  # (1, 1, 5, d)
    assert torch.equal(cos[0, 0, :3], cos_t[pos[0, :3]].half()) and torch.equal(sin[0, 0, :3], sin_t[pos[0, :3]].half())
    far = rope_table(d, length + 8)
    torch.testing.assert_close(cos[0, 0, 3:].float(), far[0][pos[0, 3:]], atol=1e-3, rtol=0)
    assert "rope" not in " ".join(model.state_dict())  # not state


@pytest.mark.parametrize("num_beams", [1, 5])
def test_min_new_tokens_counts_generated_tokens_only(model, num_beams):
    """Reference captioning: min_new_tokens=8 forbids EOS for the first 8 generated tokens, not counting the
    query tokens and the prompt (given as embeddings); with EOS strongly preferred, EOS comes 9th."""

    def prefer_eos(module, args, out):
        out = out.clone()
        out[..., 2] += 100.0
        return out

    handle = model.qllama.lm_head.register_forward_hook(prefer_eos)
    try:
        ids = model.generate(
            _inputs()[0], torch.tensor([[1, 5, 9]]), num_beams=num_beams, min_new_tokens=8, max_new_tokens=30
        )
    finally:
        handle.remove()
    assert ids.shape == (2, 9)
    assert (ids[:, :8] != 2).all() and (ids[:, 8] == 2).all()
