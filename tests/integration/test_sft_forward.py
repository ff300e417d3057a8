"""SFT batches from the dataset + collator drive a real (tiny) InternVL-Chat training forward.

The visual-token count of every batch matches the tiles (the model raises otherwise), dummy tiles of
pure-text samples are discarded, padding does not change the loss, and a few optimizer steps on one
batch lower it.
"""

from __future__ import annotations

import json
import warnings

import pytest
import torch

from internvl.data.collate import collate_sft
from internvl.data.datasets.sft_meta import read_sft_meta
from internvl.data.image_processing import ChatImageSettings
from internvl.data.sft import SFTDataConfig, SFTDataset
from internvl.data.synthetic import CHAT_SPECIAL_TOKENS, build_tokenizer, synthetic_image
from internvl.data.text_encoders import load_text_encoder
from internvl.models.internvl_chat import InternVLChatModel, tiny_chat_config

pytestmark = pytest.mark.integration


@pytest.fixture
def setup(tmp_path):
    tok = build_tokenizer(
        tmp_path / "tok",
        special_tokens=CHAT_SPECIAL_TOKENS,
        chat_template_tokens=("<|im_start|>", "<|im_end|>"),
        add_bos_token=False,
    )
    encoder = load_text_encoder(tok)
    (tmp_path / "images").mkdir()
    for i in range(3):
        synthetic_image(i, 64).resize((64 + 32 * i, 64)).save(tmp_path / "images" / f"{i}.png")
    q = {"from": "human", "value": "what is in the image?"}
    records = [
        {"image": "0.png", "conversations": [q, {"from": "gpt", "value": "a red square"}]},
        {
            "image": ["1.png", "2.png"],
            "conversations": [
                {"from": "human", "value": "<image>\n<image>\nsame?"},
                {"from": "gpt", "value": "two cats sit"},
            ],
        },
        {"conversations": [q, {"from": "gpt", "value": "a dog runs on the green grass"}]},
    ]
    (tmp_path / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (tmp_path / "meta.json").write_text(json.dumps({"mix": {"root": "images", "annotation": "a.jsonl"}}))
    settings = ChatImageSettings(image_size=28, dynamic_image_size=True, use_thumbnail=True, max_dynamic_patch=4)
    ds = SFTDataset(
        read_sft_meta(tmp_path / "meta.json"),
        encoder,
        SFTDataConfig(template="Hermes-2", num_image_token=1, max_length=512, image=settings),
    )
    torch.manual_seed(0)
    vocab = max(v[0] for v in encoder.split_tokens.values()) + 1
    model = InternVLChatModel(tiny_chat_config(vocab_size=vocab, image_size=28, pad_token_id=encoder.pad_token_id))
    model.img_context_token_id = encoder.token_id("<IMG_CONTEXT>")
    assert model.num_image_token == 1
    return ds, encoder, model


def _loss(model, batch):
    keys = ("pixel_values", "input_ids", "attention_mask", "position_ids", "image_flags", "labels")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # ps_version v1 notice
        return model(**{k: batch[k] for k in keys}).loss


def test_batches_train_the_tiny_model(setup):
    ds, encoder, model = setup
    loader = torch.utils.data.DataLoader(
        ds, batch_size=3, num_workers=2, collate_fn=lambda b: collate_sft(b, encoder.pad_token_id)
    )
    batch = next(iter(loader))  # worker processes: the dataset and its encoder pickle/fork fine
    assert batch["image_flags"].tolist().count(0) == 1
    n_ctx = int((batch["input_ids"] == model.img_context_token_id).sum())
    assert n_ctx == int(batch["image_flags"].sum()) * model.num_image_token
    # the same samples one by one (no padding) give the same loss as the padded batch, token-weighted
    losses, counts = [], []
    with torch.no_grad():
        for i in range(len(ds)):
            one = collate_sft([ds[i]], encoder.pad_token_id)
            losses.append(_loss(model, one))
            counts.append(int((one["labels"][:, 1:] != -100).sum()))
        joint = _loss(model, batch)
    expected = sum(loss * c for loss, c in zip(losses, counts, strict=True)) / sum(counts)
    torch.testing.assert_close(joint, expected, rtol=1e-4, atol=1e-5)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    first = None
    for _ in range(8):
        loss = _loss(model, batch)
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.8 * first, (first, loss.item())
