"""Dynamic text padding: batches cut to their longest text, length-sorted, give the reference's padded-to-80 numbers."""

from __future__ import annotations

import pytest
import torch

from internvl.data.synthetic import build_tokenizer
from internvl.data.tokenization import MAX_LENGTH, InternVLTextTokenizer
from internvl.inference.embedding import embed_texts, zero_shot_classifier
from internvl.models import registry

# Very different lengths, one with '<unk>' (id 0 inside the text) and one truncated past 80 ids.
TEXTS = [
    "a dog.",
    "two cats sit on a red sofa next to a window while the sun sets over the quiet street",
    "",
    "a man <unk> rides a bike",
    " ".join(["the quick brown fox jumps over the lazy dog"] * 12),
    "people on a beach",
    "一只狗在草地上奔跑",
]


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    return InternVLTextTokenizer.from_pretrained(build_tokenizer(tmp_path_factory.mktemp("tok")))


@pytest.fixture(scope="module")
def model():
    return registry.create_model("internvl_cg_tiny", seed=3).eval()


def test_longest_padding_is_the_max_length_layout_cut(tok):
    full = tok(TEXTS)
    cut = tok(TEXTS, padding="longest")
    longest = max(len(tok.encode(t)) for t in TEXTS)
    assert full.shape == (len(TEXTS), MAX_LENGTH) and cut.shape == (len(TEXTS), longest) and longest == MAX_LENGTH
    short = tok(TEXTS[:3], padding="longest")
    assert short.shape[1] == max(len(tok.encode(t)) for t in TEXTS[:3]) < MAX_LENGTH
    torch.testing.assert_close(short, full[:3, : short.shape[1]], rtol=0, atol=0)
    assert (full[:3, short.shape[1] :] == 0).all()
    with pytest.raises(ValueError, match="padding='left'"):
        tok(TEXTS, padding="left")


@pytest.mark.parametrize("batch_size", [1, 3, 64])
def test_dynamic_padding_gives_the_padded_to_80_embeddings_in_input_order(model, tok, batch_size):
    texts = TEXTS * 3
    ref = embed_texts(model, tok, texts, batch_size, padding="max_length", normalize=False)
    fast = embed_texts(model, tok, texts, batch_size, normalize=False)
    torch.testing.assert_close(fast, ref, rtol=0, atol=1e-5)
    # rows follow the input, not the length order: each row is its own text's embedding
    single = torch.cat([model.encode_text(tok([t])) for t in TEXTS]).detach()
    torch.testing.assert_close(fast[: len(TEXTS)], single, rtol=0, atol=1e-5)
    assert not torch.allclose(fast[0], fast[1], atol=1e-3)


def test_progress_and_empty_input(model, tok):
    seen = []
    embed_texts(model, tok, TEXTS, 3, progress=seen.append)
    assert seen == [3, 3, 1]
    assert embed_texts(model, tok, [], 4).shape == (0, model.config.clip_embed_dim)


def test_classifier_unchanged_by_dynamic_padding(model, tok, monkeypatch):
    classes = ["dog", "cat", "a very long class name with many words in it"]
    templates = ["a photo of a {}.", "a blurry photo of the {} in the dark."]
    fast = zero_shot_classifier(model, tok, classes, templates, batch_size=4)
    import internvl.inference.embedding as embedding

    padded = embedding.embed_texts
    monkeypatch.setattr(embedding, "embed_texts", lambda *a, **k: padded(*a, **k, padding="max_length"))
    ref = zero_shot_classifier(model, tok, classes, templates, batch_size=4)
    torch.testing.assert_close(fast, ref, rtol=0, atol=1e-5)
