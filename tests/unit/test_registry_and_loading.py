"""Presets (internvl.models.registry) and the one loader (internvl.inference.loading.load_pretrained)."""

from __future__ import annotations

import json

import pytest
import torch

from internvl.core.errors import CheckpointError, ConfigError, UnknownModelError
from internvl.data.synthetic import build_chat_tokenizer, build_tokenizer
from internvl.inference.card import ChatModel
from internvl.inference.loading import load_pretrained, load_tokenizer, save_chat_model
from internvl.models import registry
from internvl.models.intern_vit import InternViT, InternViTConfig
from internvl.models.internvl_cg import InternVLConfig, InternVLModel
from internvl.models.internvl_chat import InternVLChatConfig, InternVLChatModel

FAMILIES = {"intern_vit": InternViTConfig, "internvl_cg": InternVLConfig, "internvl_chat": InternVLChatConfig}


def test_every_family_has_a_tiny_preset_and_every_preset_makes_its_config():
    names = registry.list_presets()
    for family, cls in FAMILIES.items():
        assert f"{family}_tiny" in registry.list_presets(family)
        for name in registry.list_presets(family):
            assert isinstance(registry.get_preset(name), cls), name
    assert set(names) == {n for f in FAMILIES for n in registry.list_presets(f)}


@pytest.mark.parametrize(
    ("name", "cls"),
    [("intern_vit_tiny", InternViT), ("internvl_cg_tiny", InternVLModel), ("internvl_chat_tiny", InternVLChatModel)],
)
def test_tiny_presets_build_deterministically(name, cls):
    a, b = registry.create_model(name, seed=3), registry.create_model(name, seed=3)
    assert type(a) is cls
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    assert sum(p.numel() for p in a.parameters()) < 2_000_000


def test_published_sizes():
    v12 = registry.get_preset("internvl_chat_v1_2")
    assert (v12.num_image_token, v12.vision.num_hidden_layers, v12.vision.image_size) == (256, 45, 448)
    assert (v12.llm_config.hidden_size, v12.llm_config.num_hidden_layers, v12.llm_config.vocab_size) == (
        7168,
        60,
        64007,
    )
    assert registry.get_preset("intern_vit_300m_448").norm_type == "layer_norm"
    cg = registry.get_preset("internvl_cg_14b_224")
    assert (cg.vision_config.hidden_size, cg.num_query_token, cg.clip_embed_dim) == (3200, 96, 768)


def test_presets_take_overrides_and_are_fresh_objects():
    assert registry.get_preset("intern_vit_tiny", image_size=112).image_size == 112
    assert registry.get_preset("internvl_chat_tiny", vocab_size=99).llm_config.vocab_size == 99
    first = registry.get_preset("internvl_chat_tiny")
    first.template = "phi3-chat"
    assert registry.get_preset("internvl_chat_tiny").template == "Hermes-2"


def test_registry_errors():
    with pytest.raises(UnknownModelError, match="unknown model preset 'vit_huge'; known: intern_vit_300m_448"):
        registry.get_preset("vit_huge")
    with pytest.raises(ValueError, match="already registered"):
        registry.register_preset("intern_vit_tiny", "intern_vit")(lambda: None)
    with pytest.raises(TypeError, match="is not an InternViT"):
        registry.build_model({"hidden_size": 3})


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("ckpts")
    vit = registry.create_model("intern_vit_tiny", seed=1)
    vit.save_pretrained(root / "vit")
    build_tokenizer(root / "cg")
    cg = registry.create_model("internvl_cg_tiny", seed=1)
    cg.save_pretrained(root / "cg")
    build_chat_tokenizer(root / "chat")
    tok = load_tokenizer(root / "chat")
    chat = registry.create_model("internvl_chat_tiny", seed=1, vocab_size=len(tok))
    save_chat_model(chat, tok, root / "chat")
    return root, {"vit": vit, "cg": cg, "chat": chat}


def _same_weights(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_load_pretrained_dispatches_on_model_type(checkpoints):
    root, built = checkpoints
    vit = load_pretrained(root / "vit")
    assert type(vit.model) is InternViT and vit.tokenizer is None and vit.model_type == "intern_vit_6b"
    assert vit.image_size == 56 and vit.image_settings is None and _same_weights(vit.model, built["vit"])
    cg = load_pretrained(root / "cg", dtype="bf16")
    assert type(cg.model) is InternVLModel and type(cg.tokenizer).__name__ == "InternVLTextTokenizer"
    assert cg.model.dtype == torch.bfloat16 and cg.model_type == "internvl"
    chat = load_pretrained(root / "chat", device="cpu")
    assert isinstance(chat.model, ChatModel) and chat.model_type == "internvl_chat"
    assert chat.model.img_context_token_id == chat.tokenizer.convert_tokens_to_ids("<IMG_CONTEXT>")
    assert (chat.image_settings.image_size, chat.image_settings.dynamic_image_size) == (56, False)
    assert _same_weights(chat.model, built["chat"])


def test_load_pretrained_refuses_before_reading_weights(checkpoints, tmp_path):
    root, _ = checkpoints
    only_config = tmp_path / "only_config"
    only_config.mkdir()
    (only_config / "config.json").write_text((root / "chat" / "config.json").read_text())
    with pytest.raises(
        ConfigError, match="holds a model_type 'internvl_chat' checkpoint; this command needs model_type 'internvl'"
    ):
        load_pretrained(only_config, model_types=("internvl",))
    (only_config / "config.json").write_text(json.dumps({"model_type": "clip"}))
    with pytest.raises(CheckpointError, match="model_type 'clip'; supported: intern_vit_6b, internvl, internvl_chat"):
        load_pretrained(only_config)
    with pytest.raises(ConfigError, match="device_map='auto' is supported for internvl_chat checkpoints only"):
        load_pretrained(root / "vit", device_map="auto")
    with pytest.raises(ConfigError, match="take no loading options"):
        load_pretrained(root / "cg", load_in_8bit=True)


def test_retrieval_encoder_equals_embed_images_and_texts(checkpoints, tmp_path):
    """eval retrieval and embed share one batch encoder: the same rows for the same inputs and batches."""
    from internvl.data.datasets import ImageCaptions, pre_caption
    from internvl.data.synthetic import synthetic_image
    from internvl.data.transforms import build_transform
    from internvl.evaluation.retrieval import encode_dataset
    from internvl.inference.embedding import embed_images, embed_texts

    root, _ = checkpoints
    loaded = load_pretrained(root / "cg")
    records = []
    for i in range(5):
        path = tmp_path / f"{i}.png"
        synthetic_image(i, 64).save(path)
        records.append(ImageCaptions(i, path, tuple(f"A dog, number {i}. Caption {j}!" for j in range(1 + i % 2))))
    emb = encode_dataset(loaded.model, loaded.tokenizer, records, mode="InternVL-G", batch_size=2, progress=False)
    images = embed_images(
        loaded.model,
        [r.image_path for r in records],
        build_transform("retrieval", loaded.image_size),
        batch_size=2,
        mode="InternVL-G",
    )
    torch.testing.assert_close(emb.images, images, rtol=0, atol=0)
    texts = [pre_caption(c) for r in records for c in r.captions]
    assert emb.text_to_image.tolist() == [i for r in records for i in [r.image_id] * len(r.captions)]
    # all captions go through embed_texts (length-sorted), as many per batch as one image batch has: 2 x round(7/5)
    by_batch = embed_texts(loaded.model, loaded.tokenizer, texts, batch_size=2)
    torch.testing.assert_close(emb.texts, by_batch, rtol=0, atol=0)
