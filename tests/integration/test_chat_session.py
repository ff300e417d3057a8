"""ChatSession: multi-turn answers from the KV cache equal the from-scratch pipeline's, turn by turn."""

from __future__ import annotations

import pytest

from internvl.core.compat import CACHE_CONTINUATION_MIN, supports_cache_continuation
from internvl.core.errors import RequestError
from internvl.data.synthetic import build_chat_tokenizer, synthetic_image
from internvl.inference.loading import load_tokenizer
from internvl.inference.pipeline import ChatPipeline
from internvl.inference.requests import ChatRequest, GenerationOptions
from internvl.models.internvl_chat import build_internvl_chat, tiny_chat_config

pytestmark = pytest.mark.integration
GREEDY = GenerationOptions(max_new_tokens=8, do_sample=False)
QUESTIONS = ["what is in the image?", "what color is it?", "and the background?", "how many objects?", "describe it"]


@pytest.fixture(scope="module")
def pipe(tmp_path_factory):
    path = tmp_path_factory.mktemp("tok")
    build_chat_tokenizer(path)
    tok = load_tokenizer(path)
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    model = build_internvl_chat(tiny_chat_config(len(tok), system_message="Answer.", eos_token_id=im_end), seed=0)
    return ChatPipeline(model.eval(), tok)


@pytest.fixture(scope="module")
def visuals(pipe):
    return pipe.prepare_images([synthetic_image(0)]), pipe.prepare_images([synthetic_image(1)])


def _turns(pipe, session, visuals, questions, options=GREEDY):
    """Run the questions as one conversation through both paths; returns the session's stats per turn."""
    history, stats = None, []
    for q in questions:
        req = ChatRequest(q, visuals=visuals, history=history, options=options)
        fast, ref = session.answer(req), pipe.answer(req)
        assert fast == ref, q
        stats.append(session.last)
        history = ref.history
    return history, stats


continues_from_cache = pytest.mark.skipif(
    not supports_cache_continuation(),
    reason=f"cache continuation needs transformers >= {CACHE_CONTINUATION_MIN}; older releases rebuild each turn",
)


@pytest.mark.skipif(supports_cache_continuation(), reason="this release continues from the cache")
def test_older_transformers_rebuild_every_turn_with_the_same_answers(pipe, visuals):
    session = pipe.session()
    _, stats = _turns(pipe, session, visuals[0], QUESTIONS[:3])  # answers equal pipe.answer (checked inside)
    assert all(s.from_scratch and s.reused_tokens == 0 for s in stats)


@continues_from_cache
def test_five_turns_with_an_image_equal_the_rebuild_and_prefill_only_new_tokens(pipe, visuals):
    session = pipe.session()
    history, stats = _turns(pipe, session, visuals[0], QUESTIONS)
    first = stats[0]
    assert (first.reused_tokens, first.encoded_images, first.from_scratch) == (0, 1, False)
    for prev, turn in zip(stats, stats[1:], strict=False):
        assert turn.encoded_images == 0  # the image's tokens are all in the cache
        # the whole previous prompt came from the cache (and the answer up to where its re-tokenised text
        # differs from the generated ids: a random model's pieces do not round-trip)
        assert turn.reused_tokens >= prev.prompt_tokens
        assert turn.prefilled_tokens == turn.prompt_tokens - turn.reused_tokens
    assert len(history) == 5 and session.cached_tokens > stats[-1].prompt_tokens


@continues_from_cache
def test_edited_history_and_another_image_fall_back_to_a_rebuild(pipe, visuals):
    session = pipe.session()
    history, _ = _turns(pipe, session, visuals[0], QUESTIONS[:3])
    edited = ((history[0][0].replace("the image", "this picture"), history[0][1]), *history[1:])
    req = ChatRequest("and now?", visuals=visuals[0], history=edited, options=GREEDY)
    assert session.answer(req) == pipe.answer(req)
    # the edit sits after the image in turn 1's question: the cache keeps what precedes it (the image
    # included), so the image is not re-encoded
    first_prompt = pipe.tokenizer(pipe.prompt(ChatRequest(QUESTIONS[0], visuals=visuals[0])))["input_ids"]
    image_end = len(first_prompt) - first_prompt[::-1].index(pipe.img_context_token_id)
    assert image_end <= session.last.reused_tokens < len(first_prompt) and session.last.encoded_images == 0
    # same ids, other pixels: the cache must not be reused past the image's first token
    other = ChatRequest("and now?", visuals=visuals[1], history=edited, options=GREEDY)
    assert session.answer(other) == pipe.answer(other)
    ids = pipe.tokenizer(pipe.prompt(other))["input_ids"]
    assert session.last.reused_tokens == ids.index(pipe.img_context_token_id) and session.last.encoded_images == 1
    # a new conversation without images
    plain = ChatRequest("hello", options=GREEDY)
    assert session.answer(plain) == pipe.answer(plain)


@continues_from_cache
def test_stream_from_the_cache_joins_to_the_answer(pipe, visuals):
    session = pipe.session()
    history, _ = _turns(pipe, session, visuals[0], QUESTIONS[:2])
    req = ChatRequest(QUESTIONS[2], visuals=visuals[0], history=history, options=GREEDY)
    stream = session.stream(req)
    text = "".join(stream)
    assert stream.response == pipe.answer(req) and text == stream.response.text
    assert session.last.reused_tokens > 0 and not session.last.from_scratch
    nxt = ChatRequest(QUESTIONS[3], visuals=visuals[0], history=stream.response.history, options=GREEDY)
    assert session.answer(nxt) == pipe.answer(nxt) and session.last.reused_tokens > 0


def test_bounded_memory_and_beam_search_go_from_scratch(pipe, visuals):
    small = pipe.session(max_cached_tokens=30)
    _, stats = _turns(pipe, small, visuals[0], QUESTIONS[:2])
    assert all(s.from_scratch and s.reused_tokens == 0 for s in stats) and small.cached_tokens == 0
    session = pipe.session(max_cached_images=1)
    _turns(pipe, session, visuals[0], QUESTIONS[:1], GenerationOptions(max_new_tokens=4, num_beams=2))
    assert session.last.from_scratch and session.cached_tokens == 0
    with pytest.raises(RequestError, match="max_cached_tokens=0"):
        pipe.session(max_cached_tokens=0)


def test_placeholder_ids_without_images_go_from_scratch(pipe):
    session = pipe.session()
    req = ChatRequest("what is <IMG_CONTEXT> here?", options=GREEDY)
    assert pipe.img_context_token_id in pipe.tokenizer(pipe.prompt(req))["input_ids"]
    assert session.answer(req) == pipe.answer(req)
    assert session.last.from_scratch and session.cached_tokens == 0
