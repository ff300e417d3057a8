"""Conversation templates and the chat() prompt builder (hand-written expected strings)."""

from __future__ import annotations

import pytest

from internvl.core.errors import DataFormatError, UnknownModelError
from internvl.data.conversation import (
    INTERNVL_SYSTEM_MESSAGE,
    V1_2_PLUS_SYSTEM_MESSAGE,
    add_image_placeholder,
    build_query,
    expand_image_placeholders,
    get_conv_template,
    list_conv_templates,
    resolve_system_message,
)


def test_registered_templates():
    assert list_conv_templates() == sorted(["Hermes-2", "internlm2-chat", "internvl2_5", "internvl_zh", "phi3-chat"])
    with pytest.raises(UnknownModelError, match="Hermes-3"):
        get_conv_template("Hermes-3")


def test_get_conv_template_returns_independent_copies():
    a = get_conv_template("Hermes-2")
    a.append_message(a.roles[0], "hi")
    assert get_conv_template("Hermes-2").messages == []


def test_hermes2_layout_has_no_newline_after_im_end():
    prompt, stop = build_query("Hermes-2", "Q", system_message="S")
    assert prompt == "<|im_start|>system\nS<|im_end|><|im_start|>user\nQ<|im_end|><|im_start|>assistant\n"
    assert stop == "<|im_end|>"


def test_internvl2_5_separator_keeps_newline_but_stop_is_stripped():
    prompt, stop = build_query("internvl2_5", "Q", system_message="S")
    assert prompt == "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nQ<|im_end|>\n<|im_start|>assistant\n"
    assert stop == "<|im_end|>"


def test_image_placeholder_auto_insertion_rules():
    assert add_image_placeholder("Q", True, None) == "<image>\nQ"
    assert add_image_placeholder("Q", False, None) == "Q"  # no images
    assert add_image_placeholder("Q", True, []) == "Q"  # history=[] disables it, as in the reference
    assert add_image_placeholder("a <image> b", True, None) == "a <image> b"
    assert (
        add_image_placeholder("see <image 1>", True, None) == "<image>\nsee <image 1>"
    )  # MMMU style is not a placeholder


def test_expansion_replaces_in_order_and_keeps_extra_placeholders():
    out = expand_image_placeholders("<image> and <image> and <image>", [2, 1], num_image_token=2)
    ctx = "<IMG_CONTEXT>"
    assert out == f"<img>{ctx * 4}</img> and <img>{ctx * 2}</img> and <image>"


def test_expansion_with_too_few_placeholders_names_both_counts():
    with pytest.raises(DataFormatError, match=r"1 <image> placeholder\(s\) but 2 images"):
        expand_image_placeholders("<image> only", [1, 1], num_image_token=4)


def test_history_image_is_expanded_first_and_empty_answers_leave_turn_open():
    prompt, _ = build_query(
        "Hermes-2", "Q2", history=[("<image>\nQ1", "A1")], num_patches_list=[1], num_image_token=1, system_message="S"
    )
    assert prompt == (
        "<|im_start|>system\nS<|im_end|><|im_start|>user\n<img><IMG_CONTEXT></img>\nQ1<|im_end|>"
        "<|im_start|>assistant\nA1<|im_end|><|im_start|>user\nQ2<|im_end|><|im_start|>assistant\n"
    )
    prompt, _ = build_query("Hermes-2", "Q2", history=[("Q1", "")], system_message="S")
    assert "<|im_start|>assistant\n<|im_start|>user\nQ2" in prompt  # "" renders like None (reference quirk)


def test_system_message_resolution_order():
    assert resolve_system_message("Hermes-2") == INTERNVL_SYSTEM_MESSAGE
    assert resolve_system_message("Hermes-2", V1_2_PLUS_SYSTEM_MESSAGE) == V1_2_PLUS_SYSTEM_MESSAGE
    assert resolve_system_message("Hermes-2", V1_2_PLUS_SYSTEM_MESSAGE, "Be brief.") == "Be brief."
    assert resolve_system_message("Hermes-2", None, "") == ""  # an explicit empty message is honoured


def test_internvl_zh_layout():
    prompt, stop = build_query("internvl_zh", "Q2", history=[("Q1", "A1")])
    assert prompt == " <human>: Q1 <bot>: A1</s><human>: Q2 <bot>:"
    assert stop == "</s>"


def test_openai_messages():
    conv = get_conv_template("Hermes-2")
    conv.set_system_message("S")
    conv.append_message(conv.roles[0], "Q")
    conv.append_message(conv.roles[1], "A")
    conv.append_message(conv.roles[0], "Q2")
    conv.append_message(conv.roles[1], None)
    assert conv.to_openai_api_messages() == [
        {"role": "system", "content": "S"},
        {"role": "user", "content": "Q"},
        {"role": "assistant", "content": "A"},
        {"role": "user", "content": "Q2"},
    ]
