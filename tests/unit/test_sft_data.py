"""Meta JSON, JSONL records, the SFT dataset, the collator and length grouping on a tiny synthetic world."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from internvl.core.errors import DataFormatError
from internvl.data.collate import collate_sft
from internvl.data.datasets.chat_records import ChatRecordError, parse_record
from internvl.data.datasets.sft_meta import SFTSource, read_sft_meta
from internvl.data.image_processing import ChatImageSettings
from internvl.data.length_grouping import LengthGroupedSampler, length_grouped_indices
from internvl.data.sft import IGNORE_INDEX, SFTDataConfig, SFTDataset, SFTSampleError
from internvl.data.synthetic import CHAT_SPECIAL_TOKENS, build_tokenizer, synthetic_image
from internvl.data.text_encoders import load_text_encoder

ROLE_TOKENS = ("<|im_start|>", "<|im_end|>")
Q = {"from": "human", "value": "what is in the image?"}
A = {"from": "gpt", "value": "a dog runs"}


@pytest.fixture(scope="module")
def encoder(tmp_path_factory):
    d = build_tokenizer(
        tmp_path_factory.mktemp("tok"),
        special_tokens=CHAT_SPECIAL_TOKENS,
        chat_template_tokens=ROLE_TOKENS,
        add_bos_token=False,
    )
    return load_text_encoder(d)


@pytest.fixture
def world(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    synthetic_image(0, 64).save(images / "a.png")
    synthetic_image(1, 64).resize((96, 32)).save(images / "wide.png")
    return tmp_path


def _write(path, records):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    return path


def _meta(world, datasets):
    meta = world / "meta.json"
    meta.write_text(json.dumps(datasets))
    return read_sft_meta(meta)


def test_meta_paths_repeat_time_and_validation(world):
    _write(world / "a.jsonl", [{"conversations": [Q, A]}] * 10)
    sources = _meta(
        world,
        {
            "d": {
                "root": "images/",
                "annotation": "a.jsonl",
                "repeat_time": 0.35,
                "length": 10,
                "max_dynamic_patch": 4,
                "data_augment": True,
            }
        },
    )
    s = sources[0]
    assert s.annotation == world / "a.jsonl" and s.image_path("x.png") == str(world / "images" / "x.png")
    assert s.max_dynamic_patch == 4 and s.data_augment
    assert s.sample_lines(10) == [0, 1, 2]  # a prefix, as the reference
    assert SFTSource("d", "r", s.annotation, repeat_time=2).sample_lines(3) == [0, 1, 2, 0, 1, 2]
    assert SFTSource("d", "r", s.annotation, repeat_time=1.5).sample_lines(4) == [0, 1, 2, 3, 0, 1]
    assert SFTSource("d", "s3://bucket/", s.annotation).image_path("x.png") == "s3://bucket/x.png"
    bad = [
        ({"d": {"root": "", "annotation": "a.json"}}, "must be a .jsonl"),
        ({"d": {"root": "", "annotation": "a.jsonl", "repeat_time": 0}}, "repeat_time must be a number > 0"),
        ({"d": {"root": "", "annotation": "a.jsonl", "weight": 2}}, r"unknown key\(s\) \['weight'\]"),
        ({"d": {"annotation": "a.jsonl"}}, "'root' must be a string"),
        ({"d": {"root": "", "annotation": "a.jsonl", "data_augment": "no"}}, "'data_augment' must be true or false"),
        ({}, "non-empty object"),
    ]
    for meta, message in bad:
        with pytest.raises(DataFormatError, match=message):
            _meta(world, meta)
    (world / "broken.json").write_text('{"d": {\n "root": }')
    with pytest.raises(DataFormatError, match=r"broken.json:2: invalid JSON"):
        read_sft_meta(world / "broken.json")


def test_record_parsing_errors_name_the_line():
    assert parse_record(json.dumps({"image": ["a", "b"], "conversations": [Q, A]}), "f:3").images == ("a", "b")
    for line, kind, message in [
        ("{not json", "bad_json", "f:3: invalid JSON"),
        (json.dumps({"conversations": []}), "bad_record", "non-empty list"),
        (json.dumps({"image": 3, "conversations": [Q, A]}), "bad_record", "'image' must be a path"),
        (json.dumps({"conversations": [Q, {"from": "gpt"}]}), "bad_record", r"conversations\[1\]"),
        (json.dumps({"width": -1, "conversations": [Q, A]}), "bad_record", "'width' must be a positive integer"),
    ]:
        with pytest.raises(ChatRecordError, match=message) as err:
            parse_record(line, "f:3")
        assert err.value.kind == kind


def _config(**kw):
    settings = ChatImageSettings(image_size=28, dynamic_image_size=True, use_thumbnail=True, max_dynamic_patch=4)
    return SFTDataConfig(template="Hermes-2", num_image_token=4, max_length=256, image=settings, **kw)


def test_dataset_record_kinds_and_collator(world, encoder):
    records = [
        {"id": 0, "image": "a.png", "conversations": [Q, A]},  # placeholder inserted
        {
            "id": 1,
            "image": ["a.png", "wide.png"],
            "conversations": [{"from": "human", "value": "Image-1: <image>\nImage-2: <image>\nsame?"}, A],
        },
        {"id": 2, "conversations": [Q, A]},  # pure text
    ]
    _write(world / "a.jsonl", records)
    ds = SFTDataset(_meta(world, {"d": {"root": "images", "annotation": "a.jsonl"}}), encoder, _config())
    img, ctx = encoder.token_id("<img>"), encoder.token_id("<IMG_CONTEXT>")
    single, multi, text = ds[0], ds[1], ds[2]
    # a 64px square with a budget of 4 tiles: (1,1) and (2,2) tie and the image is large -> 2x2 + thumbnail
    assert single["pixel_values"].shape == (5, 3, 28, 28) and single["image_flags"].tolist() == [1] * 5
    assert int((single["input_ids"] == ctx).sum()) == 4 * 5
    # two images share the budget: 4 // 2 = 2 each; wide (3:1) -> 2x1 + thumbnail, square -> 1 (no thumbnail)
    assert multi["image_flags"].tolist() == [1, 1, 1, 1] and int((multi["input_ids"] == img).sum()) == 2
    assert int((multi["input_ids"] == ctx).sum()) == 4 * 4
    assert text["image_flags"].tolist() == [0] and text["pixel_values"].shape == (1, 3, 28, 28)
    assert int((text["input_ids"] == img).sum()) == 0
    assert single["position_ids"].tolist() == list(range(len(single["input_ids"])))

    batch = collate_sft([single, text, multi], pad_token_id=encoder.pad_token_id)
    n = max(len(s["input_ids"]) for s in (single, text, multi))
    assert batch["input_ids"].shape == (3, n) and batch["pixel_values"].shape == (10, 3, 28, 28)
    assert batch["image_flags"].tolist() == [1] * 5 + [0] + [1] * 4
    assert torch.equal(batch["pixel_values"][5], text["pixel_values"][0])
    pad = n - len(text["input_ids"])
    assert batch["labels"][1, -pad:].tolist() == [IGNORE_INDEX] * pad
    assert batch["attention_mask"][1].tolist() == [1] * (n - pad) + [0] * pad
    assert batch["input_ids"][1, -pad:].tolist() == [encoder.pad_token_id] * pad
    assert batch["position_ids"][1, -pad:].tolist() == [0] * pad
    assert int(batch["num_skipped"]) == 0


def test_errors_name_dataset_and_line_and_skip_is_counted(world, encoder):
    _write(
        world / "b.jsonl",
        [
            {"image": "a.png", "conversations": [Q, A]},
            "",
            "{bad",
            {"image": "missing.png", "conversations": [Q, A]},
            {"conversations": [Q, {"from": "gpt", "value": ""}]},
        ],
    )
    sources = _meta(world, {"mix": {"root": "images", "annotation": "b.jsonl"}})
    ds = SFTDataset(sources, encoder, _config())
    assert len(ds) == 4  # the blank line 2 is not a sample, line numbers stay the file's
    with pytest.raises(SFTSampleError, match=r"dataset 'mix': .*b.jsonl:3: invalid JSON") as err:
        ds[1]
    assert err.value.kind == "bad_json"
    with pytest.raises(SFTSampleError, match=r"b.jsonl:4: image file not found") as err:
        ds[2]
    assert err.value.kind == "image"
    with pytest.raises(SFTSampleError, match=r"b.jsonl:5: turn 1: the gpt answer is empty"):
        ds[3]
    skipping = SFTDataset(sources, encoder, _config(on_error="skip"))
    batch = collate_sft([skipping[i] for i in range(4)], pad_token_id=0)
    assert batch["input_ids"].shape[0] == 1 and int(batch["num_skipped"]) == 3
    with pytest.raises(DataFormatError, match="all 2 samples"):
        collate_sft([None, None], pad_token_id=0)


def test_data_augment_is_seeded_per_sample(world, encoder):
    _write(world / "c.jsonl", [{"image": "a.png", "conversations": [Q, A]}] * 2)
    meta = {"d": {"root": "images", "annotation": "c.jsonl", "data_augment": True}}
    ds = SFTDataset(_meta(world, meta), encoder, _config(seed=3))
    again = SFTDataset(_meta(world, meta), encoder, _config(seed=3))
    plain = SFTDataset(_meta(world, {"d": {"root": "images", "annotation": "c.jsonl"}}), encoder, _config())
    assert torch.equal(ds[0]["pixel_values"], again[0]["pixel_values"])
    assert not torch.equal(ds[0]["pixel_values"], plain[0]["pixel_values"])  # JPEG re-encoding changed pixels


def test_video_record_becomes_frame_lines(world, encoder):
    av = pytest.importorskip("av")
    path = world / "images" / "clip.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=8)
        stream.width = stream.height = 32
        stream.pix_fmt = "yuv420p"
        for i in range(8):
            frame = av.VideoFrame.from_ndarray(np.full((32, 32, 3), i * 30, dtype=np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    _write(world / "v.jsonl", [{"video": "clip.mp4", "conversations": [Q, A]}])
    ds = SFTDataset(
        _meta(world, {"v": {"root": "images", "annotation": "v.jsonl"}}), encoder, _config(num_video_frames=3)
    )
    out = ds[0]
    assert out["image_flags"].tolist() == [1, 1, 1]
    assert int((out["input_ids"] == encoder.token_id("<img>")).sum()) == 3
    assert "Frame-3" in encoder.sp.decode([i for i in out["input_ids"].tolist() if i < encoder.sp.get_piece_size()])


def test_length_grouping_balances_megabatches():
    lengths = [5, 100, 7, 90, 3, 80, 1, 70]
    order = length_grouped_indices(lengths, batch_size=2, world_size=2, generator=torch.Generator().manual_seed(0))
    assert sorted(order) == list(range(8))
    for mega in (order[:4], order[4:]):  # one global batch = 2 per rank x 2 ranks
        chunks = [mega[:2], mega[2:]]
        totals = [sum(lengths[i] for i in c) for c in chunks]
        ranked = sorted(mega, key=lambda i: -lengths[i])
        assert ranked[0] in chunks[0] and ranked[1] in chunks[1]  # the two longest are split between ranks
        assert max(totals) - min(totals) <= max(lengths[i] for i in mega)
    sampler = LengthGroupedSampler(lengths, batch_size=2, world_size=2, seed=1)
    first = list(sampler)
    assert list(sampler) == first
    sampler.set_epoch(1)
    assert sorted(sampler) == list(range(8)) and list(sampler) != first
