"""InternViT behaviour beyond the golden fixtures: flavours, drop path, checkpointing, dtypes, resizing."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from internvl.core.errors import ConfigError
from internvl.models.intern_vit import PRESETS, InternViT, InternViTConfig, build_intern_vit

TINY = PRESETS["intern_vit_tiny"]
LN_TINY = dataclasses.replace(TINY, norm_type="layer_norm", qkv_bias=True, qk_normalization=False)


def _pixels(b=2, s=56, seed=0):
    return torch.randn(b, 3, s, s, generator=torch.Generator().manual_seed(seed))


def test_layer_norm_flavour_has_300m_keys():
    keys = set(build_intern_vit(LN_TINY).state_dict())
    assert "encoder.layers.0.attn.qkv.bias" in keys
    assert "encoder.layers.0.norm1.bias" in keys
    assert not any("q_norm" in k for k in keys)
    rms_keys = set(build_intern_vit(TINY).state_dict())
    assert "encoder.layers.0.attn.q_norm.weight" in rms_keys and "encoder.layers.0.attn.qkv.bias" not in rms_keys


def test_sdpa_attention_equals_explicit_softmax():
    """Oracle: the SDPA path against the reference's eager formula (q * scale) @ k^T -> softmax -> @ v."""
    model = build_intern_vit(TINY, seed=3)
    attn = model.encoder.layers[0].attn
    x = torch.randn(2, 17, 64)
    b, n, d = x.shape
    qkv = attn.qkv(x).reshape(b, n, 3, d)
    q, k, v = qkv.unbind(2)
    q, k = attn.q_norm(q), attn.k_norm(k)
    q, k, v = (t.view(b, n, 4, 16).transpose(1, 2) for t in (q, k, v))
    weights = ((q * 16**-0.5) @ k.transpose(-2, -1)).softmax(-1)
    expected = attn.proj((weights @ v).transpose(1, 2).reshape(b, n, d))
    with torch.no_grad():
        torch.testing.assert_close(attn(x), expected, atol=1e-6, rtol=1e-5)


def test_pooler_is_class_token_and_hidden_state_count():
    model = build_intern_vit(TINY)
    with torch.no_grad():
        out = model(_pixels(), output_hidden_states=True)
    assert torch.equal(out.pooler_output, out.last_hidden_state[:, 0])
    assert len(out.hidden_states) == TINY.num_hidden_layers + 1
    assert torch.equal(out.hidden_states[-1], out.last_hidden_state)


def test_drop_path_schedule_is_linear_and_only_active_in_training():
    cfg = dataclasses.replace(TINY, num_hidden_layers=4, drop_path_rate=0.3)
    model = build_intern_vit(cfg)
    rates = [layer.drop_path_rate for layer in model.encoder.layers]
    assert rates == pytest.approx([0.0, 0.1, 0.2, 0.3])
    x = _pixels()
    with torch.no_grad():
        assert torch.equal(model(x).last_hidden_state, model(x).last_hidden_state)  # eval: deterministic
        model.train()
        torch.manual_seed(0)
        a = model(x).last_hidden_state
        torch.manual_seed(1)
        b = model(x).last_hidden_state
    assert not torch.equal(a, b)


def test_gradient_checkpointing_gives_same_gradients():
    x = _pixels()
    grads = []
    for enabled in (False, True):
        model = build_intern_vit(TINY, seed=7).train()
        model.set_gradient_checkpointing(enabled)
        model(x).last_hidden_state.square().mean().backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], atol=1e-6, rtol=1e-5, msg=name)
    assert all(g.abs().sum() > 0 for n, g in grads[0].items() if "ls" in n or "qkv" in n)


def test_on_the_fly_position_interpolation_equals_explicit_resize():
    model = build_intern_vit(TINY, seed=2)
    x = _pixels(1, 84)
    with torch.no_grad():
        on_the_fly = model(x).last_hidden_state
        model.resize_position_embeddings(84)
        resized = model(x).last_hidden_state
    assert model.embeddings.position_embedding.shape == (1, 37, 64)
    torch.testing.assert_close(on_the_fly, resized, atol=1e-6, rtol=1e-5)


def test_bf16_close_to_fp32():
    model = build_intern_vit(TINY, seed=4)
    x = _pixels()
    with torch.no_grad():
        ref = model(x).last_hidden_state
        low = model.to(torch.bfloat16)(x).last_hidden_state
    assert low.dtype == torch.bfloat16
    rel = (low.float() - ref).norm() / ref.norm()
    assert rel < 2e-2


def test_config_validation_and_round_trip():
    with pytest.raises(ConfigError, match="divisible"):
        InternViTConfig(hidden_size=65, num_attention_heads=4)
    with pytest.raises(ConfigError, match="norm_type"):
        InternViTConfig(norm_type="batch_norm")
    d = TINY.to_dict()
    assert d["model_type"] == "intern_vit_6b"
    assert InternViTConfig.from_dict(d) == TINY
    assert InternViTConfig.from_dict({"vision_config": d}) == TINY
    legacy = {k: v for k, v in d.items() if k != "norm_type"}
    assert InternViTConfig.from_dict(legacy).norm_type == "rms_norm"


def test_bad_pixel_shape_is_rejected():
    with pytest.raises(ValueError, match=r"float\[B, 3, H, W\]"):
        build_intern_vit(TINY)(torch.zeros(3, 56, 56))


def test_meta_device_loading_does_not_touch_random_init(tmp_path):
    model = build_intern_vit(TINY, seed=5)
    model.save_pretrained(tmp_path)
    loaded = InternViT.from_pretrained(tmp_path)
    assert all(p.device.type == "cpu" for p in loaded.parameters())
    expected, got = model.state_dict(), loaded.state_dict()
    assert list(got) == list(expected)
    for n, a in expected.items():
        assert torch.equal(a, got[n]), n


def test_force_image_size_resizes_a_stored_table_of_another_size(tmp_path):
    model = build_intern_vit(TINY, seed=6)
    model.save_pretrained(tmp_path)
    loaded = InternViT.from_pretrained(tmp_path, force_image_size=84)
    assert loaded.image_size == 84 and loaded.config.image_size == 84
    model.resize_position_embeddings(84)
    torch.testing.assert_close(loaded.embeddings.position_embedding, model.embeddings.position_embedding)
    assert InternViT.from_pretrained(tmp_path, force_image_size=56).image_size == 56
