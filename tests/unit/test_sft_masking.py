"""One renderer for prompts and labels: Conversation.segments(), turn validation, masking and truncation."""

from __future__ import annotations

import pytest

from internvl.data.conversation import get_conv_template, list_conv_templates
from internvl.data.sft import IGNORE_INDEX, SFTSampleError, parse_turns, preprocess_conversation
from internvl.data.synthetic import CHAT_SPECIAL_TOKENS, build_tokenizer
from internvl.data.text_encoders import HFEncoder, SentencePieceEncoder, load_text_encoder

ROLE_TOKENS = ("<|im_start|>", "<|im_end|>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>")


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory):
    return build_tokenizer(
        tmp_path_factory.mktemp("tok"),
        special_tokens=CHAT_SPECIAL_TOKENS,
        chat_template_tokens=ROLE_TOKENS,
        add_bos_token=False,
    )


@pytest.fixture(scope="module")
def encoder(tok_dir):
    return load_text_encoder(tok_dir)


def _conv(template: str, *messages: str | None):
    conv = get_conv_template(template)
    conv.set_system_message("S")
    for i, m in enumerate(messages):
        conv.append_message(conv.roles[i % 2], m)
    return conv


@pytest.mark.parametrize("template", list_conv_templates())
def test_segments_join_to_the_prompt_and_train_only_answers(template):
    conv = _conv(template, "Q1", "A1", "Q2", "A2", "Q3", None)
    segs = conv.segments()
    assert "".join(t for t, _ in segs) == conv.get_prompt()
    trainable = [t for t, flag in segs if flag]
    end = conv.end_of_turn
    assert trainable == [f"A1{end}", f"A2{end}"]
    assert conv.get_prompt().endswith(conv.roles[1] + ("" if template != "internvl_zh" else ":"))


def test_internvl2_5_newline_after_im_end_is_not_trained():
    segs = _conv("internvl2_5", "Q", "A").segments()
    assert ("A<|im_end|>", True) in segs and segs[segs.index(("A<|im_end|>", True)) + 1] == ("\n", False)


def test_parse_turns_rules():
    t = parse_turns(
        [
            {"from": "system", "value": "sys"},
            {"from": "gpt", "value": "hi"},
            {"from": "human", "value": "q"},
            {"from": "gpt", "value": "a"},
        ]
    )
    assert t.system == "sys" and t.messages == [("user", "q"), ("assistant", "a")]  # leading gpt dropped
    kept = parse_turns(
        [{"from": "gpt", "value": "hi"}, {"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}],
        keep_leading_assistant=True,
    )
    assert kept.messages[0] == ("assistant", "hi")
    cases = [
        (
            [{"from": "human", "value": "q"}, {"from": "robot", "value": "a"}],
            "unknown_role",
            "turn 1: unknown role 'robot'",
        ),
        (
            [{"from": "human", "value": "q"}, {"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}],
            "alternation",
            "turn 1: expected a gpt turn",
        ),
        ([{"from": "human", "value": "q"}, {"from": "gpt", "value": "  "}], "empty_answer", "turn 1"),
        ([{"from": "human", "value": "q"}], "alternation", "end with a gpt answer"),
        (
            [{"from": "human", "value": "q"}, {"from": "system", "value": "s"}, {"from": "gpt", "value": "a"}],
            "unknown_role",
            "turn 1",
        ),
    ]
    for conversations, kind, message in cases:
        with pytest.raises(SFTSampleError, match=message) as err:
            parse_turns(conversations)
        assert err.value.kind == kind


def _supervised_text(encoder, out) -> str:
    ids = [int(i) for i, lab in zip(out["input_ids"], out["labels"], strict=True) if lab != IGNORE_INDEX]
    return encoder.sp.decode([i for i in ids if i < encoder.sp.get_piece_size()]), ids


def test_labels_are_the_answers_and_their_end_token(encoder):
    conv = [
        {"from": "human", "value": "<image>\nwhat is in the image?"},
        {"from": "gpt", "value": "a dog runs"},
        {"from": "human", "value": "and then?"},
        {"from": "gpt", "value": "two cats sit"},
    ]
    out = preprocess_conversation(conv, "Hermes-2", encoder, num_image_tokens=[4])
    text, ids = _supervised_text(encoder, out)
    assert text.replace(" ", "") == "adogruns<|im_end|>twocatssit<|im_end|>"
    assert ids.count(encoder.token_id("<|im_end|>")) == 2 and ids[-1] == encoder.token_id("<|im_end|>")
    assert int((out["input_ids"] == encoder.token_id("<IMG_CONTEXT>")).sum()) == 4
    assert out["attention_mask"].tolist() == [1] * len(out["input_ids"])


def test_truncation_keeps_text_cuts_and_never_cuts_image_tokens(encoder):
    conv = [{"from": "human", "value": "<image>\nwhat?"}, {"from": "gpt", "value": "a dog runs on the green grass"}]
    full = preprocess_conversation(conv, "Hermes-2", encoder, num_image_tokens=[8])
    n = len(full["input_ids"])
    first_label = int((full["labels"] != IGNORE_INDEX).nonzero()[0])
    cut = preprocess_conversation(conv, "Hermes-2", encoder, num_image_tokens=[8], max_length=n - 3)
    assert cut["input_ids"].tolist() == full["input_ids"][: n - 3].tolist()
    assert cut["labels"].tolist() == full["labels"][: n - 3].tolist()
    with pytest.raises(SFTSampleError, match="no answer token") as err:
        preprocess_conversation(conv, "Hermes-2", encoder, num_image_tokens=[8], max_length=first_label)
    assert err.value.kind == "over_length"
    img_end = full["input_ids"].tolist().index(encoder.token_id("</img>"))
    with pytest.raises(SFTSampleError, match="cut the image block") as err:
        preprocess_conversation(conv, "Hermes-2", encoder, num_image_tokens=[8], max_length=img_end)
    assert err.value.kind == "over_length"
    padded = preprocess_conversation(
        conv, "Hermes-2", encoder, num_image_tokens=[8], max_length=n + 5, pad_to_max_length=True
    )
    assert padded["attention_mask"].tolist() == [1] * n + [0] * 5
    assert padded["labels"][n:].tolist() == [IGNORE_INDEX] * 5
    assert padded["input_ids"][n:].tolist() == [encoder.pad_token_id] * 5


def test_placeholder_rules(encoder):
    ask = {"from": "human", "value": "<image> and <image>"}
    with pytest.raises(SFTSampleError, match="2 <image> placeholder.*1 image") as err:
        preprocess_conversation([ask, {"from": "gpt", "value": "a"}], "Hermes-2", encoder, num_image_tokens=[4])
    assert err.value.kind == "placeholder_mismatch"
    with pytest.raises(SFTSampleError) as err:
        preprocess_conversation(
            [{"from": "human", "value": "q"}, {"from": "gpt", "value": "see <image>"}], "Hermes-2", encoder
        )
    assert err.value.kind == "placeholder_in_answer"


def test_fallback_template_trains_on_answers(encoder):
    """internvl_zh (the reference's vicuna-style fallback masks every sample): the answers are trained."""
    conv = [{"from": "human", "value": "what?"}, {"from": "gpt", "value": "a dog runs"}]
    out = preprocess_conversation(conv, "internvl_zh", encoder)
    text, ids = _supervised_text(encoder, out)
    assert text.strip() == "a dog runs" and ids[-1] == encoder.eos_token_id


def test_hf_encoder_gives_the_same_labels_structure(tok_dir, encoder):
    from transformers import AutoTokenizer

    hf = HFEncoder(AutoTokenizer.from_pretrained(str(tok_dir)))
    conv = [{"from": "human", "value": "what?"}, {"from": "gpt", "value": "a dog runs"}]
    out = preprocess_conversation(conv, "Hermes-2", hf)
    sup = [int(i) for i, lab in zip(out["input_ids"], out["labels"], strict=True) if lab != IGNORE_INDEX]
    assert hf.tokenizer.decode(sup[:-1]).strip() == "a dog runs" and sup[-1] == hf.token_id("<|im_end|>")
    assert isinstance(encoder, SentencePieceEncoder)


def test_literal_image_token_strings_in_text_are_rejected(encoder):
    conv = [{"from": "human", "value": "what is <IMG_CONTEXT>?"}, {"from": "gpt", "value": "a token"}]
    with pytest.raises(SFTSampleError, match="1 <IMG_CONTEXT> and 0 </img> ids for 0 visual tokens") as err:
        preprocess_conversation(conv, "Hermes-2", encoder)
    assert err.value.kind == "tokenizer"


def test_hf_encoder_remembers_texts_and_pickles_into_workers(tok_dir):
    import pickle

    from transformers import AutoTokenizer

    from internvl.data.tokenization import TextIdCache

    tokenizer = AutoTokenizer.from_pretrained(str(tok_dir))
    hf = HFEncoder(tokenizer)
    text = "<|im_start|>user\nWhat colour is the circle?<|im_end|>"
    first = hf.encode(text)
    assert first == hf.encode(text) == HFEncoder(tokenizer).encode(text)
    assert pickle.loads(pickle.dumps(hf)).encode(text) == first
    cache, calls = TextIdCache(size=2), []

    def encode(t):
        calls.append(t)
        return [len(t)]

    assert [cache.get(t, encode) for t in ("a", "a", "bb", "a", "ccc", "a")] == [(1,), (1,), (2,), (1,), (3,), (1,)]
    assert calls == ["a", "bb", "ccc", "a"]  # full at two texts: emptied, then filled again
