"""Old import paths of moved code resolve to the very objects at their new homes (other branches import them)."""

from __future__ import annotations

import importlib

import pytest

MOVED = [
    # (old module, name, new module, new name)
    ("internvl.inference.chat", "load_chat_model", "internvl.inference.loading", "load_chat_model"),
    ("internvl.inference.chat", "load_tokenizer", "internvl.inference.loading", "load_tokenizer"),
    ("internvl.inference.chat", "save_chat_model", "internvl.inference.loading", "save_chat_model"),
    ("internvl.inference.chat", "bind_tokenizer", "internvl.inference.loading", "bind_tokenizer"),
    ("internvl.inference.chat", "stop_token_ids", "internvl.inference.loading", "stop_token_ids"),
    ("internvl.inference.chat", "image_settings", "internvl.inference.loading", "image_settings"),
    ("internvl.inference.chat", "ChatModel", "internvl.inference.card", "ChatModel"),
    ("internvl.inference.chat", "as_chat_model", "internvl.inference.card", "as_chat_model"),
    ("internvl.inference.chat", "cut_at_stop", "internvl.inference.streaming", "cut_at_stop"),
    ("internvl.inference.inspect", "describe_checkpoint", "internvl.models.checkpoint_info", "describe_checkpoint"),
    ("internvl.evaluation.runtime", "pick_device", "internvl.core.devices", "pick_device"),
    ("internvl.evaluation.runtime", "pick_dtype", "internvl.core.devices", "pick_dtype"),
    ("internvl.evaluation.runtime", "load_model_and_tokenizer", "internvl.inference.loading", "load_cg_model"),
    ("internvl.evaluation.runtime", "write_json", "internvl.core.io", "write_json"),
    ("internvl.evaluation.partial_results", "write_json_atomic", "internvl.core.io", "write_json_atomic"),
    ("internvl.models.checkpoint", "resolve_dtype", "internvl.core.devices", "resolve_dtype"),
    ("internvl.models.checkpoint", "DTYPES", "internvl.core.devices", "DTYPES"),
    ("internvl.models.internvl_chat", "infer_device_map", "internvl.models.device_map", "infer_device_map"),
    ("internvl.models.internvl_chat", "IMG_CONTEXT_TOKEN", "internvl.core.tokens", "IMG_CONTEXT_TOKEN"),
    ("internvl.data.conversation", "IMG_CONTEXT_TOKEN", "internvl.core.tokens", "IMG_CONTEXT_TOKEN"),
    ("internvl.data.conversation", "IMAGE_PLACEHOLDER", "internvl.core.tokens", "IMAGE_PLACEHOLDER"),
    ("internvl.data.conversation", "IMG_START_TOKEN", "internvl.core.tokens", "IMG_START_TOKEN"),
    ("internvl.data.conversation", "IMG_END_TOKEN", "internvl.core.tokens", "IMG_END_TOKEN"),
    ("internvl.data.synthetic", "CHAT_SPECIAL_TOKENS", "internvl.core.tokens", "CHAT_SPECIAL_TOKENS"),
    ("internvl.models.internvl_cg", "InternVLModel", "internvl.models.internvl_cg", "InternVLCG"),
    ("internvl.models.internvl_cg", "InternVLConfig", "internvl.models.internvl_cg", "InternVLCGConfig"),
    ("internvl.cli.embed", "list_images", "internvl.cli._common", "list_images"),
    ("internvl.cli.embed", "progress_bar", "internvl.cli._common", "progress_bar"),
]


@pytest.mark.parametrize(("old", "name", "new", "new_name"), MOVED, ids=[f"{o}.{n}" for o, n, _, _ in MOVED])
def test_old_path_is_the_new_object(old, name, new, new_name):
    assert getattr(importlib.import_module(old), name) is getattr(importlib.import_module(new), new_name)


def test_card_functions_stay_in_inference_chat():
    api = importlib.import_module("internvl.inference.chat")
    for name in ("chat", "batch_chat", "stream_chat", "video_chat", "load_images"):
        assert callable(getattr(api, name)) and getattr(api, name).__module__ == "internvl.inference.chat"
