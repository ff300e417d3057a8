"""Every chat mode end to end on a tiny random InternVL-Chat (V1-2 layout) with a real SentencePiece tokenizer.

The model is untrained, so answers are arbitrary tokens; each test compares one code path with an
independent one (prompt string -> tokenizer -> model.generate, one-by-one vs batched, streamed vs not).
"""

from __future__ import annotations

import io
import json
import sys

import numpy as np
import pytest
import torch

from internvl.core.errors import DataFormatError, InternVLError
from internvl.data.conversation import build_query
from internvl.data.synthetic import build_chat_tokenizer, synthetic_image
from internvl.inference import chat as api
from internvl.models.internvl_chat import InternVLChatModel, build_internvl_chat, tiny_chat_config

pytestmark = pytest.mark.integration
GEN = {"max_new_tokens": 8, "do_sample": False}
SYSTEM = "Answer the questions."


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    path = tmp_path_factory.mktemp("tok")
    build_chat_tokenizer(path)
    # Loaded as load_chat_model does (slow SentencePiece, like the card's use_fast=False): on transformers
    # 4.x the fast and slow Llama tokenizers split text after special tokens differently.
    return api.load_tokenizer(path)


@pytest.fixture(scope="module")
def model(tokenizer):
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    cfg = tiny_chat_config(len(tokenizer), system_message=SYSTEM, eos_token_id=im_end, ps_version="v1")
    m = build_internvl_chat(cfg, seed=0)
    api.bind_tokenizer(m, tokenizer)
    return m


@pytest.fixture(scope="module")
def pixels(model):
    pv, n = api.load_images(model, [synthetic_image(i) for i in range(3)])
    assert n == [1, 1, 1] and pv.shape == (3, 3, 56, 56)
    return pv


def _reference_answer(model, tokenizer, query: str, pixel_values=None) -> str:
    """Independent path: tokenise the prompt string, generate, decode, cut at <|im_end|>."""
    enc = tokenizer(query, return_tensors="pt")
    out = model.generate(
        pixel_values=pixel_values,
        input_ids=enc.input_ids,
        attention_mask=enc.attention_mask,
        eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
        **GEN,
    )
    return tokenizer.batch_decode(out, skip_special_tokens=True)[0].split("<|im_end|>")[0].strip()


def test_pure_text(model, tokenizer):
    answer = api.chat(model, tokenizer, None, "hello, who are you?", GEN)
    query, _ = build_query("Hermes-2", "hello, who are you?", system_message=SYSTEM)
    assert "<IMG_CONTEXT>" not in query
    assert answer == _reference_answer(model, tokenizer, query)
    assert isinstance(answer, str) and answer


def test_single_image_uses_the_image(model, tokenizer, pixels):
    answer = api.chat(model, tokenizer, pixels[:1], "what is in the image?", GEN)
    query, _ = build_query(
        "Hermes-2", "what is in the image?", num_patches_list=[1], num_image_token=4, system_message=SYSTEM
    )
    assert answer == _reference_answer(model, tokenizer, query, pixels[:1])
    enc = tokenizer(query, return_tensors="pt")
    with torch.no_grad():
        a = model(pixel_values=pixels[:1], input_ids=enc.input_ids).logits
        b = model(pixel_values=pixels[1:2], input_ids=enc.input_ids).logits
    assert not torch.allclose(a[0, -1], b[0, -1])  # the visual tokens reach the LLM


def test_multi_round_history(model, tokenizer, pixels):
    gen = dict(GEN)
    a1, history = api.chat(model, tokenizer, pixels[:1], "describe the image", gen, return_history=True)
    assert gen == GEN  # the caller's dict is not mutated (the reference writes eos_token_id into it)
    assert history == [("<image>\ndescribe the image", a1)]
    a2, history2 = api.chat(model, tokenizer, pixels[:1], "what is red?", GEN, history=history, return_history=True)
    assert len(history) == 1 and len(history2) == 2  # returned as a new list
    query, _ = build_query(
        "Hermes-2", "what is red?", history=history, num_patches_list=[1], num_image_token=4, system_message=SYSTEM
    )
    assert f"<|im_start|>assistant\n{a1}<|im_end|><|im_start|>user\nwhat is red?" in query
    assert a2 == _reference_answer(model, tokenizer, query, pixels[:1])


def test_two_images_separate_vs_combined(model, tokenizer, pixels):
    q_sep = "Image-1: <image>\nImage-2: <image>\ndescribe the two images"
    sep_answer = api.chat(model, tokenizer, pixels[:2], q_sep, GEN, num_patches_list=[1, 1])
    query, _ = build_query("Hermes-2", q_sep, num_patches_list=[1, 1], num_image_token=4, system_message=SYSTEM)
    assert query.count("<img>") == 2 and query.count("<IMG_CONTEXT>") == 8
    assert sep_answer == _reference_answer(model, tokenizer, query, pixels[:2])

    comb_answer = api.chat(model, tokenizer, pixels[:2], "describe the two images", GEN)  # one <image>, 2 tiles
    query, _ = build_query(
        "Hermes-2", "describe the two images", num_patches_list=[2], num_image_token=4, system_message=SYSTEM
    )
    assert query.count("<img>") == 1 and query.count("<IMG_CONTEXT>") == 8
    assert comb_answer == _reference_answer(model, tokenizer, query, pixels[:2])


def test_batch_of_three_equals_one_by_one(model, tokenizer, pixels):
    questions = ["what is in the image?", "describe", "two cats sit on a red sofa. what is in the image?"]
    padding_side = tokenizer.padding_side
    batched = api.batch_chat(model, tokenizer, pixels, questions, GEN, num_patches_list=[1, 1, 1])
    assert tokenizer.padding_side == padding_side  # not left permanently changed
    single = [api.chat(model, tokenizer, pixels[i : i + 1], q, GEN) for i, q in enumerate(questions)]
    assert batched == single
    with pytest.raises(DataFormatError, match="without pixel_values"):
        api.batch_chat(model, tokenizer, None, ["hello"], GEN, num_patches_list=[1])
    texts = api.batch_chat(model, tokenizer, None, ["hello", "what is the image about today?"], GEN)
    assert texts == [api.chat(model, tokenizer, None, q, GEN) for q in ["hello", "what is the image about today?"]]


def test_batch_chat_honours_system_message(model, tokenizer, pixels):
    other = api.batch_chat(model, tokenizer, None, ["hello"], GEN, system_message="You are a cat.")
    assert other == [api.chat(model, tokenizer, None, "hello", GEN, system_message="You are a cat.")]


def test_streaming_pieces_join_to_answer(model, tokenizer, pixels):
    pieces = list(api.stream_chat(model, tokenizer, pixels[:1], "what is in the image?", GEN))
    assert "".join(pieces) == api.chat(model, tokenizer, pixels[:1], "what is in the image?", GEN)
    stream = api.stream_chat(model, tokenizer, None, "hello", {"max_new_tokens": 200, "do_sample": False})
    assert next(stream, None) is not None
    stream.close()  # stopping early cancels generation and joins the worker without hanging
    assert next(stream, None) is None
    import threading

    assert not [t for t in threading.enumerate() if t.name == "internvl-generate"]


def test_cut_at_stop_rechunks_exactly():
    chunks = ["  Hel", "lo wor", "ld <|im", "_end|> tail"]
    assert list(api.cut_at_stop(chunks, "<|im_end|>")) == ["Hel", "lo wor", "ld"]  # "<|im" held back, then cut
    assert "".join(api.cut_at_stop(["a <", "|im", " b"], "<|im_end|>")) == "a <|im b"


def test_streaming_error_is_raised_in_caller(model, tokenizer, pixels):
    with pytest.raises(DataFormatError):
        list(api.stream_chat(model, tokenizer, pixels[:2], "Image-1: <image>\nhi", GEN, num_patches_list=[1, 1]))


def test_video(model, tokenizer, tmp_path):
    import av

    path = tmp_path / "clip.mp4"
    colours = [(i * 16, 255 - i * 16, 128) for i in range(16)]
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=8)
        stream.width = stream.height = 64
        stream.pix_fmt = "yuv420p"
        for colour in colours:
            arr = np.full((64, 64, 3), colour, dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(arr, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)

    from internvl.data.video import get_index, load_video, read_frames, video_info

    n, fps = video_info(path)
    assert (n, fps) == (16, 8.0)
    idx = get_index(None, fps, n - 1, num_segments=4)
    assert idx.tolist() == [1, 5, 9, 12]  # 15/4 = 3.75 per segment; np.round(7.5) = 8 (half to even)
    frames = read_frames(path, idx)
    for k, frame in zip(idx, frames, strict=True):
        assert np.abs(np.asarray(frame, dtype=float)[32, 32] - colours[k]).max() < 12  # lossy codec

    answer = api.video_chat(model, tokenizer, path, "what happens?", GEN, num_segments=4)
    pv, patches = load_video(path, num_segments=4, settings=api.image_settings(model))
    assert patches == [1, 1, 1, 1]
    question = "Frame1: <image>\nFrame2: <image>\nFrame3: <image>\nFrame4: <image>\nwhat happens?"
    assert answer == api.chat(model, tokenizer, pv, question, GEN, num_patches_list=patches)


def test_image_token_count_mismatch_is_an_error(model, tokenizer, pixels):
    query, _ = build_query("Hermes-2", "hi", num_patches_list=[1], num_image_token=4, system_message=SYSTEM)
    enc = tokenizer(query, return_tensors="pt")
    with pytest.raises(DataFormatError, match=r"has 4 <IMG_CONTEXT> tokens but the images give 8 visual tokens"):
        model.generate(pixel_values=pixels[:2], input_ids=enc.input_ids, max_new_tokens=2)
    with pytest.raises(DataFormatError, match=r"3 tiles but num_patches_list=\[1, 1\] sums to 2"):
        api.chat(model, tokenizer, pixels, "Image-1: <image>\nImage-2: <image>", GEN, num_patches_list=[1, 1])


def test_peft_lora_forward_and_backward(model, tokenizer, pixels):
    import copy

    from peft import LoraConfig, get_peft_model

    query, _ = build_query("Hermes-2", "hi", num_patches_list=[1], num_image_token=4, system_message=SYSTEM)
    enc = tokenizer(query + "a dog<|im_end|>", return_tensors="pt")
    labels = enc.input_ids.clone()
    labels[:, :-3] = -100
    peft_model = get_peft_model(
        copy.deepcopy(model), LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "attn.qkv"])
    )
    peft_model.train()
    out = peft_model(pixel_values=pixels[:1], input_ids=enc.input_ids, attention_mask=enc.attention_mask, labels=labels)
    out.loss.backward()
    lora_grads = [p.grad for n, p in peft_model.named_parameters() if "lora_B" in n]
    assert lora_grads and all(g is not None for g in lora_grads)
    # inputs_embeds path (what PEFT's causal-LM wrapper and prompt tuning use)
    with torch.no_grad():
        embeds = model.embed(enc.input_ids, pixels[:1])
        direct = model(pixel_values=pixels[:1], input_ids=enc.input_ids).logits
        via_embeds = model(inputs_embeds=embeds).logits
    torch.testing.assert_close(direct, via_embeds)


def test_save_load_round_trip_with_generation_config(model, tokenizer, pixels, tmp_path):
    api.save_chat_model(model, tokenizer, tmp_path / "ckpt")
    gen_cfg = json.loads((tmp_path / "ckpt" / "generation_config.json").read_text())
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert gen_cfg["eos_token_id"][0] == im_end and tokenizer.eos_token_id in gen_cfg["eos_token_id"]
    cfg = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    assert cfg["model_type"] == "internvl_chat" and cfg["ps_version"] == "v1" and cfg["system_message"] == SYSTEM

    reloaded, tok = api.load_chat_model(tmp_path / "ckpt")
    assert isinstance(reloaded, InternVLChatModel)
    assert reloaded.generation_config.eos_token_id == gen_cfg["eos_token_id"]
    expected, got = model.state_dict(), reloaded.state_dict()
    assert list(got) == list(expected)
    for k, a in expected.items():
        assert torch.equal(a, got[k]), k
    q = "what is in the image?"
    assert api.chat(reloaded, tok, pixels[:1], q, GEN) == api.chat(model, tokenizer, pixels[:1], q, GEN)
    # card-style methods on the loaded model (ChatModel lives in inference, so models never import it)
    assert isinstance(reloaded, api.ChatModel)
    assert reloaded.chat(tok, pixels[:1], q, GEN) == api.chat(model, tokenizer, pixels[:1], q, GEN)
    assert reloaded.batch_chat(tok, pixels[:2], [q, "hi"], GEN, num_patches_list=[1, 1]) == api.batch_chat(
        model, tokenizer, pixels[:2], [q, "hi"], GEN, num_patches_list=[1, 1]
    )
    # Plain transformers generation (no chat() override) stops at the end-of-turn token thanks to the saved config.
    query, _ = build_query("Hermes-2", q, num_patches_list=[1], num_image_token=4, system_message=SYSTEM)
    enc = tok(query, return_tensors="pt")
    out = reloaded.generate(pixel_values=pixels[:1], input_ids=enc.input_ids, max_new_tokens=40, do_sample=False)
    ids = out[0].tolist()
    assert im_end not in ids[:-1]  # nothing generated after an end-of-turn token


@pytest.fixture(scope="module")
def saved(model, tokenizer, tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "model"
    api.save_chat_model(model, tokenizer, path)
    synthetic_image(5).save(path.parent / "img.png")
    return path


def test_cli_one_shot(saved, model, tokenizer, capsys):
    from internvl.cli.main import main

    image = saved.parent / "img.png"
    rc = main(["chat", str(saved), "--image", str(image), "--max-new-tokens", "8", "what is in the image?"])
    out = capsys.readouterr().out
    assert rc == 0
    pv, _ = api.load_images(model, [str(image)])
    assert out.strip() == api.chat(model, tokenizer, pv, "what is in the image?", GEN)


def test_cli_interactive_keeps_history(saved, model, tokenizer, capsys, monkeypatch):
    from internvl.cli.main import main

    image = saved.parent / "img.png"
    monkeypatch.setattr(sys, "stdin", io.StringIO("what is in the image?\nand the colour?\n/exit\nignored\n"))
    rc = main(["chat", str(saved), "--image", str(image), "--max-new-tokens", "8"])
    out = capsys.readouterr().out
    assert rc == 0
    pv, _ = api.load_images(model, [str(image)])
    a1, history = api.chat(model, tokenizer, pv, "what is in the image?", GEN, return_history=True)
    a2 = api.chat(model, tokenizer, pv, "and the colour?", GEN, history=history)
    assert f"assistant> {a1}\n" in out and f"assistant> {a2}\n" in out
    assert out.count("assistant> ") == 2  # /exit stopped the session

    monkeypatch.setattr(sys, "stdin", io.StringIO("hello\n"))  # EOF ends the session too
    assert main(["chat", str(saved), "--max-new-tokens", "4"]) == 0
    assert capsys.readouterr().out.count("assistant> ") == 1


def test_cli_rejects_image_and_video_together(saved, capsys):
    from internvl.cli.main import main

    rc = main(["chat", str(saved), "--image", "a.png", "--video", "b.mp4", "hi"])
    assert rc == 2 and "either --image or --video" in capsys.readouterr().err


def test_8bit_on_cpu_is_a_clear_error(saved):
    with pytest.raises(InternVLError, match="load_in_8bit needs a CUDA GPU|bitsandbytes"):
        InternVLChatModel.from_pretrained(saved, load_in_8bit=True)


# -- audit additions: card compatibility, PEFT CAUSAL_LM, streaming cancellation ---------------------
def test_plain_model_class_gets_card_methods_via_as_chat_model(saved, model, tokenizer, pixels):
    plain = InternVLChatModel.from_pretrained(saved)
    assert not isinstance(plain, api.ChatModel)
    with pytest.raises(InternVLError, match="as_chat_model"):
        plain.chat(tokenizer, pixels[:1], "hi", GEN)
    converted = api.as_chat_model(plain)
    assert converted is plain and isinstance(plain, api.ChatModel)
    assert plain.chat(tokenizer, pixels[:1], "hi", GEN) == api.chat(model, tokenizer, pixels[:1], "hi", GEN)


def test_card_streaming_recipe_with_thread_and_conv_template(saved, model, tokenizer, pixels):
    """The card's own streaming code: TextIteratorStreamer in generation_config, model.chat in a Thread,
    ``new_text == model.conv_template.sep`` as the break test."""
    from threading import Thread

    from transformers import TextIteratorStreamer

    card_model, tok = api.load_chat_model(saved)
    streamer = TextIteratorStreamer(tok, skip_prompt=True, skip_special_tokens=True, timeout=60)
    generation_config = dict(max_new_tokens=8, do_sample=False, streamer=streamer)
    thread = Thread(
        target=card_model.chat,
        kwargs=dict(
            tokenizer=tok,
            pixel_values=pixels[:1],
            question="what is in the image?",
            history=None,
            return_history=False,
            generation_config=generation_config,
        ),
    )
    thread.start()
    generated = ""
    for new_text in streamer:
        if new_text == card_model.conv_template.sep:
            break
        generated += new_text
    thread.join()
    assert card_model.conv_template.sep == "<|im_end|>" and card_model.conv_template.system_message == SYSTEM
    # The recipe's chunks are transformers' own streamer's chunking of the ids the non-streamed path
    # generates (its chunking of byte-fallback tokens changes between releases; stream_chat's pieces
    # are the ones guaranteed to join to the answer).
    query, _ = build_query(
        "Hermes-2", "what is in the image?", num_patches_list=[1], num_image_token=4, system_message=SYSTEM
    )
    enc = tokenizer(query, return_tensors="pt")
    ids = model.generate(
        pixel_values=pixels[:1],
        input_ids=enc.input_ids,
        attention_mask=enc.attention_mask,
        eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
        **GEN,
    )
    replay = TextIteratorStreamer(tok, skip_prompt=True, skip_special_tokens=True)
    replay.put(enc.input_ids)
    for token in ids[0]:
        replay.put(token[None])
    replay.end()
    expected = ""
    for new_text in replay:
        if new_text == card_model.conv_template.sep:
            break
        expected += new_text
    assert generated == expected and expected


def test_setting_model_system_message_applies_to_chat_and_batch_chat(model, tokenizer):
    expected = api.chat(model, tokenizer, None, "hello", GEN, system_message="You are a cat.")
    old = model.system_message
    try:
        model.system_message = "You are a cat."  # what the reference demo worker does
        assert api.chat(model, tokenizer, None, "hello", GEN) == expected
        assert api.batch_chat(model, tokenizer, None, ["hello"], GEN) == [expected]
    finally:
        model.system_message = old


def test_generation_config_object_equals_dict(model, tokenizer, pixels):
    from transformers import GenerationConfig

    as_object = api.chat(model, tokenizer, pixels[:1], "describe", GenerationConfig(max_new_tokens=8, do_sample=False))
    assert as_object == api.chat(model, tokenizer, pixels[:1], "describe", GEN)


def test_batch_with_multi_tile_sample_equals_one_by_one(model, tokenizer, pixels):
    questions = ["compare these two views", "what is it?"]
    batched = api.batch_chat(model, tokenizer, pixels, questions, GEN, num_patches_list=[2, 1])
    single = [
        api.chat(model, tokenizer, pixels[:2], questions[0], GEN),  # one <image>, 2 tiles
        api.chat(model, tokenizer, pixels[2:], questions[1], GEN),
    ]
    assert batched == single


class _CountSteps:
    """A user stopping criterion that never stops and counts decoding steps."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, input_ids, scores, **kwargs):
        self.calls += 1
        return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)


def test_stopping_a_stream_early_cancels_generation_and_joins_the_thread(model, tokenizer):
    import threading

    counter = _CountSteps()
    # min_new_tokens = max_new_tokens: without cancellation the worker would decode all 400 steps.
    gen = {"max_new_tokens": 400, "min_new_tokens": 400, "do_sample": False, "stopping_criteria": [counter]}
    stream = api.stream_chat(model, tokenizer, None, "hello", gen)
    assert next(stream)
    stream.close()
    assert counter.calls < 400
    assert not [t for t in threading.enumerate() if t.name == "internvl-generate"]
    with pytest.raises(ValueError, match="own streamer"):
        list(api.stream_chat(model, tokenizer, None, "hello", {**GEN, "streamer": object()}))


def test_peft_causal_lm_task_type_forward_and_generate(model, tokenizer, pixels):
    import copy

    from peft import LoraConfig, get_peft_model

    peft_model = get_peft_model(
        copy.deepcopy(model), LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    )
    query, _ = build_query("Hermes-2", "hi", num_patches_list=[1], num_image_token=4, system_message=SYSTEM)
    enc = tokenizer(query, return_tensors="pt")
    out = peft_model(
        pixel_values=pixels[:1], input_ids=enc.input_ids, attention_mask=enc.attention_mask, labels=enc.input_ids
    )
    with torch.no_grad():
        base_loss = model(
            pixel_values=pixels[:1], input_ids=enc.input_ids, attention_mask=enc.attention_mask, labels=enc.input_ids
        ).loss
    torch.testing.assert_close(out.loss.detach(), base_loss)  # LoRA B starts at zero: the base model's loss
    ids = peft_model.generate(
        pixel_values=pixels[:1],
        input_ids=enc.input_ids,
        attention_mask=enc.attention_mask,
        max_new_tokens=4,
        do_sample=False,
    )
    # LoRA B starts at zero, so the adapted model decodes exactly like the base model
    base = model.generate(
        pixel_values=pixels[:1],
        input_ids=enc.input_ids,
        attention_mask=enc.attention_mask,
        max_new_tokens=4,
        do_sample=False,
    )
    assert ids.tolist() == base.tolist()


def test_load_images_card_path(model):
    from internvl.data.image_processing import card_preprocess_image

    pal = synthetic_image(2, size=70).convert("P", palette=1, colors=16)
    pv, patches = api.load_images(model, [pal], card=True)
    assert patches == [1]
    torch.testing.assert_close(pv, card_preprocess_image(pal, api.image_settings(model)), rtol=0, atol=0)


def test_cli_8bit_on_cpu_is_a_clear_error(saved, capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    from internvl.cli.main import main

    rc = main(["chat", str(saved), "--8bit", "hi"])
    assert rc == 2 and "load_in_8bit needs a CUDA GPU" in capsys.readouterr().err


def test_training_forward_drops_dummy_tiles_and_rejects_count_mismatch(model, tokenizer, pixels):
    """A collated micro-batch with a pure-text sample (its white dummy tile has image_flags 0), as the
    reference's SFT collator builds it; a placeholder/feature mismatch is an error, never a warning."""
    with_image, _ = build_query("Hermes-2", "hi", num_patches_list=[1], num_image_token=4, system_message=SYSTEM)
    text_only, _ = build_query("Hermes-2", "hello there", system_message=SYSTEM)
    ids = [tokenizer(q + "ok<|im_end|>").input_ids for q in (with_image, text_only)]
    width = max(map(len, ids))
    input_ids = torch.zeros(2, width, dtype=torch.long)
    attention_mask = torch.zeros(2, width, dtype=torch.long)
    for row, e in enumerate(ids):  # right padding, as the collator
        input_ids[row, : len(e)] = torch.tensor(e)
        attention_mask[row, : len(e)] = 1
    labels = input_ids.masked_fill(attention_mask == 0, -100)
    dummy = api.load_images(model, [synthetic_image(9).convert("L").convert("RGB")])[0]
    with torch.no_grad():
        flagged = model(
            pixel_values=torch.cat([pixels[:1], dummy]),
            image_flags=torch.tensor([[1], [0]]),
            input_ids=input_ids,
            attention_mask=attention_mask,
            labels=labels,
        )
        plain = model(pixel_values=pixels[:1], input_ids=input_ids, attention_mask=attention_mask, labels=labels)
    torch.testing.assert_close(flagged.logits, plain.logits)
    torch.testing.assert_close(flagged.loss, plain.loss)
    with pytest.raises(DataFormatError, match="image token count mismatch"):
        model(pixel_values=pixels[:2], input_ids=input_ids, attention_mask=attention_mask, labels=labels)


def test_tokenizer_splits_after_special_tokens_like_the_reference(tmp_path):
    """transformers 4.37's slow Llama tokenizer (the reference) defaults to legacy=True: text right after a
    special token gets SentencePiece's "▁" prefix. 5.x defaults to the other split unless told."""
    build_chat_tokenizer(tmp_path)
    tok = api.load_tokenizer(tmp_path)
    pieces = tok.convert_ids_to_tokens(tok("<|im_start|>system").input_ids)
    assert pieces[0] == "<|im_start|>" and pieces[1].startswith("▁")
    cfg = json.loads((tmp_path / "tokenizer_config.json").read_text())
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({**cfg, "legacy": False}))  # an explicit value wins
    tok = api.load_tokenizer(tmp_path)
    assert not tok.convert_ids_to_tokens(tok("<|im_start|>system").input_ids)[1].startswith("▁")
    # save_chat_model keeps the setting (transformers 5.x drops `legacy` from a saved tokenizer_config.json)
    model = build_internvl_chat(tiny_chat_config(len(tok)), seed=0)
    api.save_chat_model(model, tok, tmp_path / "saved")
    _, reloaded = api.load_chat_model(tmp_path / "saved")
    assert reloaded("<|im_start|>system hi").input_ids == tok("<|im_start|>system hi").input_ids
