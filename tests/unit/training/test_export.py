"""The exported checkpoint computes what the trained model computed (LoRA merged; logit_scale 0-dim again)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from internvl.core.distributed import DistContext
from internvl.core.errors import ConfigError
from internvl.data.pairs import PairTokenizer
from internvl.models.internvl_cg import InternVLModel
from internvl.training.config import load_recipe
from internvl.training.recipes.retrieval import RetrievalFinetune, RetrievalLossModule
from tests.unit.training.helpers import make_checkpoint


def test_lora_export_merges_to_the_same_function(tmp_path):
    ckpt = make_checkpoint(tmp_path / "ckpt")
    recipe = load_recipe(
        "tiny_synthetic",
        [f"model.path={ckpt}", "method.name=lora", "method.lora_rank=4", f"log.output_dir={tmp_path / 'out'}"],
    )
    job = RetrievalFinetune(recipe)
    model = job.load_model()
    wrapped = RetrievalLossModule(model, DistContext())
    assert model.logit_scale.shape == (1,)
    with torch.no_grad():  # stand-in for training: move the adapters and the projection
        g = torch.Generator().manual_seed(0)
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn(p.shape, generator=g))
    model.eval()
    pixels = torch.randn(2, 3, 56, 56, generator=g)
    ids = torch.tensor([[1, 40, 41, 42, 2, 0], [1, 50, 2, 0, 0, 0]])
    with torch.no_grad():
        image, text = model.encode_image(pixels, "InternVL-G"), model.encode_text(ids)
    final = tmp_path / "final"
    job.export(model, wrapped.state_dict(), PairTokenizer.from_pretrained(ckpt), final)
    loaded = InternVLModel.from_pretrained(final)
    assert loaded.logit_scale.ndim == 0 and loaded.config.use_backbone_lora == 0
    assert not [k for k in loaded.state_dict() if "lora" in k]
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode_image(pixels, "InternVL-G"), image, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(loaded.encode_text(ids), text, atol=1e-5, rtol=1e-5)
    keys = list(load_file(str(final / "adapter" / "model.safetensors")))  # adapters only
    assert keys and all(".lora_A." in k or ".lora_B." in k for k in keys)
    assert (final / "tokenizer.model").is_file()


def test_training_size_and_drop_path_are_recorded_like_the_reference(tmp_path):
    """image_size != the checkpoint's: the position table is resized and the export says force_image_size."""
    ckpt = make_checkpoint(tmp_path / "ckpt")
    recipe = load_recipe("tiny_synthetic", [f"model.path={ckpt}", "model.image_size=84", "model.drop_path_rate=0.3"])
    job = RetrievalFinetune(recipe)
    model = job.load_model()
    assert model.image_size == 84 and model.vision_model.embeddings.position_embedding.shape[1] == (84 // 14) ** 2 + 1
    assert [layer.drop_path_rate for layer in model.vision_model.encoder.layers] == [0.0, 0.3]
    final = tmp_path / "final"
    job.export(
        model, RetrievalLossModule(model, DistContext()).state_dict(), PairTokenizer.from_pretrained(ckpt), final
    )
    cfg = json.loads((final / "config.json").read_text())
    assert cfg["force_image_size"] == 84 and cfg["vision_config"]["drop_path_rate"] == 0.3
    assert cfg["vision_config"]["image_size"] == 56  # the pretrained size, as the reference's FT checkpoints
    loaded = InternVLModel.from_pretrained(final)
    assert loaded.image_size == 84
    torch.testing.assert_close(
        loaded.vision_model.embeddings.position_embedding, model.vision_model.embeddings.position_embedding
    )


def test_a_second_run_into_the_same_folder_needs_resume(tmp_path):
    ckpt = make_checkpoint(tmp_path / "ckpt")
    (tmp_path / "out" / "checkpoint-2").mkdir(parents=True)
    recipe = load_recipe("tiny_synthetic", [f"model.path={ckpt}", f"log.output_dir={tmp_path / 'out'}"])
    with pytest.raises(ConfigError, match="already holds checkpoints of a run; pass --resume"):
        RetrievalFinetune(recipe).run()
