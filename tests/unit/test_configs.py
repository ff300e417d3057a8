"""Config rules: equality that sees both halves, no hidden rewrites, unknown keys kept, one image-size rule."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import pytest
import torch

from internvl.core.errors import ConfigError
from internvl.core.specs import served_image_size
from internvl.models import checkpoint as ckpt
from internvl.models.internvl_cg import InternVLCG, InternVLCGConfig, InternVLConfig, InternVLModel, internvl_cg_tiny
from internvl.models.internvl_chat import InternVLChatConfig, build_internvl_chat, tiny_chat_config
from internvl.models.qllama import QLlamaConfig
from tests.conftest import parity_root


def test_old_cg_names_are_aliases():
    assert InternVLConfig is InternVLCGConfig and InternVLModel is InternVLCG


def test_cg_configs_differing_only_in_the_qllama_half_are_not_equal():
    a = internvl_cg_tiny()
    b = dataclasses.replace(a, qllama_config=QLlamaConfig(**{**a.qllama_config.to_dict(), "num_hidden_layers": 3}))
    assert a.vision_config == b.vision_config and a.num_query_token == b.num_query_token
    assert a != b
    assert internvl_cg_tiny() == internvl_cg_tiny()


def test_cg_config_is_never_rewritten_behind_the_callers_back():
    q = internvl_cg_tiny().qllama_config
    with pytest.raises(ConfigError, match="num_query_token=4 but qllama_config.num_query_token=8"):
        dataclasses.replace(internvl_cg_tiny(), num_query_token=4)
    assert q.num_query_token == 8
    raw = internvl_cg_tiny().to_dict()
    raw["num_query_token"] = 4  # the reference constructor copies the top-level value into the QLLaMA half
    before = json.dumps(raw, sort_keys=True)
    cfg = InternVLCGConfig.from_dict(raw)
    assert cfg.num_query_token == cfg.qllama_config.num_query_token == 4
    assert json.dumps(raw, sort_keys=True) == before  # the caller's dict is untouched


def test_chat_config_keeps_unknown_config_json_keys():
    raw = json.loads((parity_root() / "internvl_chat" / "config.json").read_text())
    out = InternVLChatConfig.from_dict(raw).to_dict()
    derived = {
        "torch_dtype",
        "hidden_size",
        "architectures",
        "llm_config",
        "vision_config",
    }  # written by to_dict / the saver
    for key, value in raw.items():
        if key not in derived:
            assert key in out, key
            assert out[key] == value, key
    assert out["vision_config"] == raw["vision_config"]


def test_chat_save_goes_through_the_checkpoint_writer_and_keeps_extras(tmp_path):
    cfg = tiny_chat_config(64, system_message="你好")
    cfg.extra["auto_map"] = {"AutoModel": "modeling_internvl_chat.InternVLChatModel"}
    build_internvl_chat(cfg, seed=0).save_pretrained(tmp_path)
    text = (tmp_path / "config.json").read_text(encoding="utf-8")
    assert '"system_message": "你好"' in text  # UTF-8, not \\u escapes
    saved = json.loads(text)
    assert saved["torch_dtype"] == "float32" and saved["auto_map"] == cfg.extra["auto_map"]
    assert list(saved) == sorted(saved)
    assert InternVLChatConfig.from_pretrained(tmp_path).extra == cfg.extra


def test_served_image_size_rule():
    assert served_image_size({"force_image_size": 448, "vision_config": {"image_size": 224}}) == 448
    assert served_image_size({"force_image_size": None, "vision_config": {"image_size": 224}}) == 224
    assert served_image_size({}, default=448) == 448 and served_image_size({}) is None
    assert tiny_chat_config(64, image_size=56).image_size == 56
    assert dataclasses.replace(internvl_cg_tiny(), force_image_size=112).image_size == 112


@pytest.mark.parametrize(
    ("target", "built", "grid", "expected"),
    [
        (None, 224, 16, (224, None)),  # no force: build as configured
        (448, 224, 32, (448, None)),  # the stored table already serves 448px
        (448, 224, 16, (224, 448)),  # a 224px table asked to serve 448px: load, then resize
        (336, 224, 32, (448, 336)),  # stored 448px, served 336px
        (448, 448, None, (448, None)),  # no table in the state dict
    ],
)
def test_plan_position_table(target, built, grid, expected):
    table = None if grid is None else torch.zeros(1, grid * grid + 1, 8)
    assert ckpt.plan_position_table(target, built, table, 14) == expected


def test_auto_config_registration_is_explicit():
    code = (
        "import internvl.models.internvl_chat as m\n"
        "from transformers.models.auto.configuration_auto import CONFIG_MAPPING\n"
        "before = 'internvl_chat' in CONFIG_MAPPING\n"
        "m.register_auto_classes(); m.register_auto_classes()\n"
        "print(before, CONFIG_MAPPING['internvl_chat'] is m.InternVLChatConfig)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "True"]
