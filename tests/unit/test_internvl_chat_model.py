"""InternVLChatModel: config round trip, LLM choice, device maps, loading errors."""

from __future__ import annotations

import json

import pytest
import torch

from internvl.core.errors import CheckpointError, ConfigError, InternVLError
from internvl.models.internvl_chat import (
    InternVLChatConfig,
    InternVLChatModel,
    build_internvl_chat,
    infer_device_map,
    tiny_chat_config,
)
from tests.conftest import parity_root


def test_config_reads_official_layout_and_round_trips():
    raw = json.loads((parity_root() / "internvl_chat" / "config.json").read_text())
    cfg = InternVLChatConfig.from_dict(raw)
    assert (cfg.template, cfg.ps_version, cfg.select_layer, cfg.downsample_ratio) == ("Hermes-2", "v2", -1, 0.5)
    assert cfg.num_image_token == 4 and cfg.llm_config.vocab_size == 160
    assert cfg.llm_config.tie_word_embeddings is False
    again = InternVLChatConfig.from_dict(cfg.to_dict())
    assert again.to_dict() == cfg.to_dict()
    assert "system_message" not in cfg.to_dict()  # only written when the checkpoint sets one
    assert cfg.to_dict()["llm_config"]["rope_theta"] == 5_000_000.0  # readable by transformers 4.x


def test_missing_ps_version_defaults_to_v1_and_bad_values_fail():
    raw = tiny_chat_config(100).to_dict()
    raw.pop("ps_version")
    assert InternVLChatConfig.from_dict(raw).ps_version == "v1"  # the reference constructor default (V1-2)
    with pytest.raises(ConfigError, match="ps_version"):
        InternVLChatConfig.from_dict({**raw, "ps_version": "v9"})
    with pytest.raises(ConfigError, match="InternLM2ForCausalLM"):
        InternVLChatConfig.from_dict({**raw, "llm_config": {"architectures": ["InternLM2ForCausalLM"]}})
    with pytest.raises(ConfigError, match="model_type"):
        InternVLChatConfig.from_dict({**raw, "model_type": "llava"})


def test_qwen2_llm_is_supported():
    model = build_internvl_chat(tiny_chat_config(120, llm_arch="Qwen2ForCausalLM"), seed=1)
    assert type(model.language_model).__name__ == "Qwen2ForCausalLM"
    model.img_context_token_id = 100
    ids = torch.tensor([[5, 100, 100, 100, 100, 6]])
    with torch.no_grad():
        out = model(pixel_values=torch.randn(1, 3, 56, 56), input_ids=ids, labels=ids)
    assert out.logits.shape == (1, 6, 120)
    expected = torch.nn.functional.cross_entropy(out.logits[0, :-1].float(), ids[0, 1:])  # next-token CE
    torch.testing.assert_close(out.loss, expected)


def test_no_split_modules_cover_vit_and_decoder_layers():
    model = build_internvl_chat(tiny_chat_config(100))
    assert {"InternViTLayer", "LlamaDecoderLayer"} <= set(model._no_split_modules)


def _placed_bytes(model, device_map):
    from accelerate.utils import compute_module_sizes

    sizes = compute_module_sizes(model, dtype=torch.float32)
    used: dict = {}
    for name, device in device_map.items():
        used[device] = used.get(device, 0) + sizes[name]
    return used


def test_auto_device_map_keeps_blocks_whole_and_io_modules_together():
    model = build_internvl_chat(tiny_chat_config(400, llm_layers=4))
    total = sum(p.numel() * 4 for p in model.parameters())
    max_memory = {0: total * 3 // 5, 1: total // 4, 2: total}
    device_map = infer_device_map(model, max_memory=max_memory, dtype=torch.float32)
    assert len(set(device_map.values())) > 1
    for device, used in _placed_bytes(model, device_map).items():  # pinning never overfills a device
        assert used <= max_memory[device], (device, used, max_memory[device])
    first = device_map["language_model.model.embed_tokens"]
    for name in ("vision_model", "mlp1", "language_model.lm_head", "language_model.model.norm"):
        assert device_map[name] == first, name
    for key in device_map:  # never inside a ViT block or a decoder layer
        assert not any(f"layers.{i}." in key for i in range(4)), key
    covered = {n for n, _ in model.named_parameters() if any(n == k or n.startswith(k + ".") for k in device_map)}
    assert covered == {n for n, _ in model.named_parameters()}


def test_from_pretrained_cpu_device_map_and_overrides():
    root = parity_root() / "internvl_chat"
    model = InternVLChatModel.from_pretrained(
        root, dtype="bf16", device_map="auto", ps_version="v1", system_message="Hi."
    )
    assert model.vision_model.dtype == torch.bfloat16 and model.config.ps_version == "v1"
    assert model.system_message == "Hi."
    assert model.language_model.model.rotary_emb.inv_freq.dtype == torch.float32  # buffers are not down-cast


def test_8bit_without_cuda_is_a_clear_error():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(InternVLError, match="CUDA"):
        InternVLChatModel.from_pretrained(parity_root() / "internvl_chat", load_in_8bit=True)


def test_wrong_checkpoint_lists_keys(tmp_path):
    model = build_internvl_chat(tiny_chat_config(100))
    model.save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["llm_config"]["num_hidden_layers"] = 3
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="missing keys"):
        InternVLChatModel.from_pretrained(tmp_path)


def test_auto_device_map_reserves_room_for_pinned_modules_on_meta():
    """A 40B-like layout on meta (no GPU needed): a big lm_head would be placed last by accelerate; pinning
    it to the first device must not exceed that device's budget (it did before the reservation)."""
    from accelerate import init_empty_weights

    with init_empty_weights():
        model = InternVLChatModel(tiny_chat_config(3000, llm_layers=8, vit_layers=4))
    total = sum(p.numel() * 4 for p in model.parameters())
    max_memory = {0: int(total * 0.7), 1: int(total * 0.2), 2: int(total * 0.6)}
    device_map = infer_device_map(model, max_memory=max_memory, dtype=torch.float32)
    assert device_map["language_model.lm_head"] == device_map["vision_model"] == 0
    layer_devices = [device_map[f"language_model.model.layers.{i}"] for i in range(8)]
    assert layer_devices == sorted(layer_devices) and len(set(layer_devices)) >= 2  # whole layers, in order
    # rotary_emb has buffers only; a map without it leaves inv_freq behind (InternVL#774)
    assert device_map["language_model.model.rotary_emb"] == 0
    for name, module in model.named_modules():
        if (
            next(module.parameters(recurse=False), None) is not None
            or next(module.buffers(recurse=False), None) is not None
        ):
            assert any(name == k or name.startswith(k + ".") for k in device_map), name
    used = _placed_bytes(model, device_map)
    assert all(used[d] <= max_memory[d] for d in used), (used, max_memory)
    assert "disk" not in used and "cpu" not in used
    with pytest.raises(InternVLError, match="cannot hold the vision tower"):
        infer_device_map(model, max_memory={0: total // 10, 1: total, 2: total}, dtype=torch.float32)
    # a device with no budget holds nothing: the fixed modules go to the next one
    skipped = infer_device_map(model, max_memory={0: 0, 1: total, 2: total}, dtype=torch.float32)
    assert 0 not in skipped.values() and skipped["vision_model"] == skipped["language_model.lm_head"] == 1
    # string budgets in accelerate's format are accepted
    assert infer_device_map(model, max_memory={0: "1GB", 1: "1GB"}, dtype=torch.float32)


def test_card_loading_kwargs_are_accepted_and_typos_rejected():
    root = parity_root() / "internvl_chat"
    # the card's call: torch_dtype, low_cpu_mem_usage, use_flash_attn, trust_remote_code
    model = InternVLChatModel.from_pretrained(
        root, torch_dtype=torch.bfloat16, low_cpu_mem_usage=True, use_flash_attn=True, trust_remote_code=True
    )
    assert model.vision_model.dtype == torch.bfloat16
    with pytest.raises(ConfigError, match="ps_verison"):
        InternVLChatModel.from_pretrained(root, ps_verison="v1")


def test_system_message_is_settable_like_the_reference_attribute():
    model = build_internvl_chat(tiny_chat_config(100))
    assert model.system_message is None
    model.system_message = "Answer the questions."
    assert model.config.system_message == "Answer the questions."
    assert model.config.to_dict()["system_message"] == "Answer the questions."


def test_card_methods_on_the_model_only_class_point_to_chat_model():
    model = build_internvl_chat(tiny_chat_config(100))
    for name in ("chat", "batch_chat", "stream_chat", "video_chat"):
        with pytest.raises(InternVLError, match="as_chat_model"):
            getattr(model, name)(None, None, "hi")


def test_device_map_strategies_on_meta():
    from accelerate import init_empty_weights

    with init_empty_weights():
        model = InternVLChatModel(tiny_chat_config(3000, llm_layers=8, vit_layers=4))
    total = sum(p.numel() * 4 for p in model.parameters())
    roomy = {0: 2 * total, 1: 2 * total, 2: 2 * total}
    assert set(infer_device_map(model, max_memory=roomy, strategy="sequential", dtype=torch.float32).values()) == {0}
    balanced = infer_device_map(model, max_memory=roomy, strategy="balanced", dtype=torch.float32)
    assert balanced["vision_model"] == 0 and set(balanced.values()) - {0}  # layers move off the first GPU
    low0 = infer_device_map(model, max_memory=roomy, strategy="balanced_low_0", dtype=torch.float32)
    assert 0 not in low0.values() and low0["language_model.model.embed_tokens"] == 1
    with pytest.raises(ConfigError, match="strategy"):
        infer_device_map(model, max_memory=roomy, strategy="fastest")
