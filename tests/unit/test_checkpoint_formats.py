"""InternViT save/reload in every official weight layout, and clear errors for wrong checkpoints."""

from __future__ import annotations

import json

import pytest
import torch

from internvl.core.errors import CheckpointError
from internvl.models import checkpoint as ckpt
from internvl.models.intern_vit import PRESETS, InternViT, build_intern_vit


@pytest.fixture(scope="module")
def tiny():
    return build_intern_vit(PRESETS["intern_vit_tiny"], seed=1)


@pytest.fixture(scope="module")
def pixels():
    return torch.randn(2, 3, 56, 56, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize(
    "safe,shard,expect",
    [
        (True, None, ["model.safetensors"]),
        (True, 20_000, ["model.safetensors.index.json"]),
        (False, None, ["pytorch_model.bin"]),
        (False, 20_000, ["pytorch_model.bin.index.json"]),
    ],
)
def test_save_reload_identical_outputs(tmp_path, tiny, pixels, safe, shard, expect):
    tiny.save_pretrained(tmp_path, safe_serialization=safe, max_shard_size=shard)
    for name in expect:
        assert (tmp_path / name).is_file()
    if shard:
        assert len(ckpt.weight_files(tmp_path)) > 1
    reloaded = InternViT.from_pretrained(tmp_path)
    with torch.no_grad():
        torch.testing.assert_close(reloaded(pixels).last_hidden_state, tiny(pixels).last_hidden_state, atol=0, rtol=0)


@pytest.mark.parametrize("dtype", ["bf16", "fp16", torch.float32])
def test_load_in_dtype(tmp_path, tiny, dtype):
    tiny.save_pretrained(tmp_path)
    model = InternViT.from_pretrained(tmp_path, dtype=dtype)
    assert model.dtype == ckpt.resolve_dtype(dtype)
    assert json.loads((tmp_path / "config.json").read_text())["model_type"] == "intern_vit_6b"


def test_wrong_checkpoint_names_missing_and_unexpected_keys(tmp_path, tiny):
    sd = dict(tiny.state_dict())
    sd["encoder.layers.0.attn.qkv.bias"] = torch.zeros(192)  # a 300M-style key the 6B flavour lacks
    del sd["encoder.layers.1.ls2"]
    tiny.save_pretrained(tmp_path)
    ckpt.save_state_dict(sd, tmp_path)
    with pytest.raises(CheckpointError) as err:
        InternViT.from_pretrained(tmp_path)
    msg = str(err.value)
    assert "missing keys (1): encoder.layers.1.ls2" in msg
    assert "unexpected keys (1): encoder.layers.0.attn.qkv.bias" in msg


def test_shape_mismatch_is_reported_before_loading(tmp_path, tiny):
    sd = dict(tiny.state_dict())
    sd["encoder.layers.0.mlp.fc1.weight"] = torch.zeros(7, 64)
    tiny.save_pretrained(tmp_path)
    ckpt.save_state_dict(sd, tmp_path)
    with pytest.raises(CheckpointError, match=r"fc1.weight: checkpoint \(7, 64\) vs model \(128, 64\)"):
        InternViT.from_pretrained(tmp_path)


def test_missing_files_are_clear(tmp_path):
    with pytest.raises(CheckpointError, match="no config.json"):
        InternViT.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(CheckpointError, match="no weights found"):
        InternViT.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text("{oops")
    with pytest.raises(CheckpointError, match="invalid JSON at line 1"):
        ckpt.read_config(tmp_path)


def test_index_naming_a_missing_shard(tmp_path, tiny):
    tiny.save_pretrained(tmp_path, max_shard_size=20_000)
    next(tmp_path.glob("model-00002-*.safetensors")).unlink()
    with pytest.raises(CheckpointError, match="names shards that do not exist"):
        InternViT.from_pretrained(tmp_path)


def test_composite_checkpoint_with_vision_prefix_and_force_image_size(tmp_path, tiny):
    """An InternVL composite (vision_model.* keys, force_image_size) yields its vision tower."""
    resized = build_intern_vit(PRESETS["intern_vit_tiny"], seed=1)
    resized.resize_position_embeddings(84)
    sd = {f"vision_model.{k}": v for k, v in resized.state_dict().items()}
    sd["mlp1.0.weight"] = torch.ones(3)
    ckpt.save_state_dict(sd, tmp_path)
    cfg = {"model_type": "internvl_chat", "force_image_size": 84, "vision_config": PRESETS["intern_vit_tiny"].to_dict()}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    vit = InternViT.from_pretrained(tmp_path)
    assert vit.image_size == 84 and vit.config.image_size == 84
    x = torch.randn(1, 3, 84, 84)
    with torch.no_grad():
        torch.testing.assert_close(vit(x).last_hidden_state, resized(x).last_hidden_state, atol=0, rtol=0)
