"""ChatPipeline and the request types on a tiny random InternVL-Chat with a real SentencePiece tokenizer.

Each test compares the pipeline with an independent path (the prompt builder + model.generate, or
one-by-one answers) or checks a validation error; see test_chat_modes.py for the card wrappers.
"""

from __future__ import annotations

import pytest
import torch

from internvl.core.errors import ConfigError, DataFormatError, RequestError
from internvl.data.conversation import build_query
from internvl.data.synthetic import build_chat_tokenizer, synthetic_image
from internvl.inference.loading import load_tokenizer
from internvl.inference.pipeline import ChatPipeline
from internvl.inference.requests import ChatRequest, ChatResponse, GenerationOptions, Message, Visuals
from internvl.models.internvl_chat import InternVLChatModel, build_internvl_chat, tiny_chat_config

pytestmark = pytest.mark.integration
SYSTEM = "Answer the questions."
GREEDY = GenerationOptions(max_new_tokens=6, do_sample=False)


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    path = tmp_path_factory.mktemp("tok")
    build_chat_tokenizer(path)
    return load_tokenizer(path)


@pytest.fixture(scope="module")
def pipe(tokenizer):
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    model = build_internvl_chat(tiny_chat_config(len(tokenizer), system_message=SYSTEM, eos_token_id=im_end), seed=0)
    return ChatPipeline(model, tokenizer)


@pytest.fixture(scope="module")
def images():
    return [synthetic_image(i) for i in range(3)]


class _ForceEndAt:
    """A logits processor that forces ``<|im_end|>`` once ``n`` tokens have been generated (generation
    starts from embeddings, so ``input_ids`` holds only the generated ids)."""

    def __init__(self, n: int, token_id: int) -> None:
        self.n, self.token_id = n, token_id

    def __call__(self, input_ids, scores):
        if input_ids.shape[1] >= self.n:
            scores = torch.full_like(scores, float("-inf"))
            scores[:, self.token_id] = 0.0
        return scores


def _independent(pipe, query: str, pixel_values=None, max_new_tokens: int = 6) -> list[int]:
    enc = pipe.tokenizer(query, return_tensors="pt")
    out = pipe.model.generate(
        pixel_values=pixel_values,
        input_ids=enc.input_ids,
        attention_mask=enc.attention_mask,
        eos_token_id=pipe.end_of_turn_id,
        max_new_tokens=max_new_tokens,
        do_sample=False,
    )
    return out[0].tolist()


def test_answer_matches_prompt_builder_and_generate(pipe, images):
    req = ChatRequest("what is in the image?", images=(images[0],), options=GREEDY)
    resp = pipe.answer(req)
    query, _ = build_query(
        "Hermes-2", "what is in the image?", num_patches_list=[1], num_image_token=4, system_message=SYSTEM
    )
    assert pipe.prompt(req) == query
    ids = _independent(pipe, query, pipe.prepare_images([images[0]]).pixel_values)
    assert resp.text == pipe.tokenizer.decode(ids, skip_special_tokens=True).split("<|im_end|>")[0].strip()
    assert resp.prompt_tokens == pipe.tokenizer(query, return_tensors="pt").input_ids.shape[1]
    assert pipe.end_of_turn_id not in ids
    assert (resp.finish_reason, resp.completion_tokens) == ("length", len(ids)) and len(ids) == 6
    assert resp.history == (("<image>\nwhat is in the image?", resp.text),)
    assert resp.total_tokens == resp.prompt_tokens + 6


def test_finish_reason_stop_counts_the_end_of_turn_token(pipe):
    query = pipe.prompt(ChatRequest("hello"))
    from transformers import LogitsProcessorList

    force = LogitsProcessorList([_ForceEndAt(3, pipe.end_of_turn_id)])
    options = GenerationOptions(max_new_tokens=10, do_sample=False, extra={"logits_processor": force})
    resp = pipe.answer(ChatRequest("hello", options=options))
    ids = _independent(pipe, query, max_new_tokens=3)
    assert resp.finish_reason == "stop" and resp.completion_tokens == 4
    assert resp.text == pipe.tokenizer.decode(ids, skip_special_tokens=True).strip()
    stream = pipe.stream(ChatRequest("hello", options=options))
    assert "".join(stream) == resp.text and stream.response == resp


def test_stream_joins_to_answer_and_reports_the_same_response(pipe, images):
    visuals = pipe.prepare_images(images[:2])
    assert visuals.prefix == "Image-1: <image>\nImage-2: <image>\n" and visuals.num_patches_list == (1, 1)
    req = ChatRequest("compare them", visuals=visuals, options=GREEDY)
    stream = pipe.stream(req)
    assert stream.response is None
    pieces = list(stream)
    answer = pipe.answer(req)
    assert "".join(pieces) == answer.text
    assert stream.response == answer
    assert answer.history[0][0] == "Image-1: <image>\nImage-2: <image>\ncompare them"


def test_history_turn_skips_the_prefix_and_expands_history_placeholders(pipe, images):
    visuals = pipe.prepare_images(images[:2])
    first = pipe.answer(ChatRequest("compare them", visuals=visuals, options=GREEDY))
    second = ChatRequest("and now?", visuals=visuals, history=first.history, options=GREEDY)
    expected, _ = build_query(
        "Hermes-2",
        "and now?",
        history=list(first.history),
        num_patches_list=[1, 1],
        num_image_token=4,
        system_message=SYSTEM,
    )
    assert pipe.prompt(second) == expected
    assert pipe.answer(second).history == (*first.history, ("and now?", pipe.answer(second).text))


def test_answer_batch_equals_one_by_one_with_mixed_images_and_options(pipe, images):
    other = GenerationOptions(max_new_tokens=3, do_sample=False)
    requests = [
        ChatRequest("what is in the image?", images=(images[0],), options=GREEDY),
        ChatRequest("hello there, how are you today?", options=other),
        ChatRequest("describe", images=(images[1], images[2]), options=GREEDY),
        ChatRequest("hi", system_message="You are a cat.", options=GREEDY),
        ChatRequest("short", options=other),
    ]
    batched = pipe.answer_batch(requests)
    assert batched == [pipe.answer(r) for r in requests]
    assert pipe.answer_batch(requests, batch_size=2) == batched
    assert [r.completion_tokens for r in batched] == [6, 3, 6, 6, 3]


def test_requests_never_mutate_the_model_or_the_tokenizer(pipe, images, monkeypatch):
    written = []
    original = InternVLChatModel.__setattr__

    def record(self, name, value):
        written.append(name)
        original(self, name, value)

    state = {k: v.clone() for k, v in pipe.model.state_dict().items()}
    padding_side = pipe.tokenizer.padding_side
    monkeypatch.setattr(InternVLChatModel, "__setattr__", record)
    req = ChatRequest("hi", images=(images[0],), options=GREEDY)
    pipe.answer(req)
    pipe.answer_batch([req, ChatRequest("yo", options=GREEDY)])
    list(pipe.stream(req))
    ChatPipeline(pipe.model, pipe.tokenizer)  # binding the same tokenizer again writes nothing either
    assert written == []
    assert pipe.tokenizer.padding_side == padding_side
    after = pipe.model.state_dict()
    assert after.keys() == state.keys() and all(torch.equal(state[k], after[k]) for k in state)


def test_from_messages_builds_history_system_and_placeholders(pipe, images):
    messages = [
        {"role": "system", "content": "Be brief."},
        Message("user", "what is this?", images=(images[0],)),
        {"role": "assistant", "content": "a shape"},
        {"role": "user", "content": "and these?", "images": (images[1], images[2])},
    ]
    req = ChatRequest.from_messages(messages, options={"max_new_tokens": 2})
    assert req.system_message == "Be brief." and req.options == GenerationOptions(max_new_tokens=2)
    assert req.history == (("<image>\nwhat is this?", "a shape"),)
    assert req.question == "Image-2: <image>\nImage-3: <image>\nand these?"
    expected, _ = build_query(
        "Hermes-2",
        req.question,
        history=list(req.history),
        num_patches_list=[1, 1, 1],
        num_image_token=4,
        system_message="Be brief.",
    )
    assert pipe.prompt(req) == expected


@pytest.mark.parametrize(
    ("messages", "match"),
    [
        ([], "end with a user message"),
        ([{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}], "end with a user message"),
        (
            [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}],
            r"message 1: role 'user', expected 'assistant'",
        ),
        ([{"role": "bot", "content": "a"}], "role 'bot'"),
        (
            [{"role": "assistant", "content": "a", "images": ["x.png"]}, {"role": "user", "content": "b"}],
            "expected 'user'",
        ),
    ],
)
def test_from_messages_rejects_bad_conversations(messages, match):
    with pytest.raises(RequestError, match=match):
        ChatRequest.from_messages(messages)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"max_new_tokens": 0}, "max_new_tokens=0"),
        ({"max_new_tokens": True}, "must be an integer"),
        ({"temperature": 0.0}, "temperature=0.0"),
        ({"top_p": 1.5}, "top_p=1.5"),
        ({"num_beams": 0}, "num_beams=0"),
        ({"min_new_tokens": 5, "max_new_tokens": 2}, "exceeds max_new_tokens"),
        ({"do_sample": "yes"}, "do_sample"),
        ({"max_new_tokens": 2, "extra": {"max_new_tokens": 3}}, "repeats the named option"),
    ],
)
def test_generation_options_validate(kwargs, match):
    with pytest.raises(RequestError, match=match):
        GenerationOptions(**kwargs)


def test_generation_options_from_the_card_dict_pass_through_unchanged():
    card = {"max_new_tokens": 8, "do_sample": False, "temperature": None, "no_repeat_ngram_size": 3}
    options = GenerationOptions.from_value(card)
    assert options.max_new_tokens == 8 and options.extra == {"temperature": None, "no_repeat_ngram_size": 3}
    assert options.to_generate_kwargs() == card
    from transformers import GenerationConfig

    config = GenerationConfig(max_new_tokens=4)
    assert GenerationOptions.from_value(config).to_generate_kwargs() == {"generation_config": config}
    with pytest.raises(RequestError, match="dict or a GenerationConfig"):
        GenerationOptions.from_value(3)


def test_request_validation(pipe, images):
    visuals = pipe.prepare_images([images[0]])
    with pytest.raises(RequestError, match="images or visuals, not both"):
        ChatRequest("x", images=(images[0],), visuals=visuals)
    with pytest.raises(RequestError, match=r"history\[0\]"):
        ChatRequest("x", history=[("only one",)])
    with pytest.raises(RequestError, match="images\\[0\\] must be a path or a PIL image"):
        ChatRequest("x", images=(3,))
    with pytest.raises(DataFormatError, match="3 tiles but num_patches_list=\\[1, 1\\] sums to 2"):
        Visuals(torch.zeros(3, 3, 56, 56), (1, 1))
    with pytest.raises(RequestError, match="request 1 has history"):
        pipe.answer_batch([ChatRequest("a"), ChatRequest("b", history=[("q", "a")])])
    with pytest.raises(RequestError, match="own streamer"):
        pipe.stream(ChatRequest("a", options={"streamer": object()}))
    with pytest.raises(ValueError, match="finish_reason"):
        ChatResponse("a", "cancelled", 1, 1, ())


class _FailAt:
    """A logits processor that raises once ``n`` tokens have been generated (an error inside generate)."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __call__(self, input_ids, scores):
        if input_ids.shape[1] >= self.n:
            raise RuntimeError("boom inside generate")
        return scores


def test_stream_reraises_a_generation_error_in_the_caller_and_joins_the_thread(pipe):
    import threading

    from transformers import LogitsProcessorList

    options = GenerationOptions(
        max_new_tokens=20, do_sample=False, extra={"logits_processor": LogitsProcessorList([_FailAt(3)])}
    )
    stream = pipe.stream(ChatRequest("hello", options=options))
    with pytest.raises(RuntimeError, match="boom inside generate"):
        list(stream)
    assert stream.response is None
    assert not [t for t in threading.enumerate() if t.name == "internvl-generate"]


def test_load_and_the_cli_share_one_path(pipe, tmp_path):
    from internvl.inference.loading import save_chat_model

    save_chat_model(pipe.model, pipe.tokenizer, tmp_path / "ckpt")
    loaded = ChatPipeline.load(tmp_path / "ckpt", device="cpu")
    req = ChatRequest("hello", options=GREEDY)
    assert loaded.answer(req) == pipe.answer(req)
    assert (loaded.template, loaded.system_message, loaded.end_of_turn_id) == (
        pipe.template,
        pipe.system_message,
        pipe.end_of_turn_id,
    )
    from internvl.models.registry import create_model

    create_model("intern_vit_tiny").save_pretrained(tmp_path / "vit")
    with pytest.raises(ConfigError, match="this command needs model_type 'internvl_chat'"):
        ChatPipeline.load(tmp_path / "vit")
