"""Records of ``sft/dataset_cases.json`` through our meta JSON + JSONL dataset vs the reference dataset.

Consistent reference samples: identical input_ids, labels, attention_mask, position_ids, image_flags and
tile counts. Records the reference failed on (it resampled until ``StopIteration``): image tokens cut
by ``max_length`` are an ``over_length`` error naming the dataset and file:line; a leading gpt turn gets
its placeholder in the first human turn, so the record trains (for a template that drops the leading
turn, exactly like the same record without it). The length estimates for grouping follow from the
reference's, without its per-character-length cache.
"""

from __future__ import annotations

import json

import pytest

from internvl.data.datasets.sft_meta import read_sft_meta
from internvl.data.image_processing import ChatImageSettings
from internvl.data.sft import IGNORE_INDEX, SFTDataConfig, SFTDataset, SFTSampleError
from internvl.data.text_encoders import SentencePieceEncoder
from tests.conftest import parity_root

pytestmark = pytest.mark.parity
KEYS = ("input_ids", "labels", "attention_mask", "position_ids", "image_flags")


@pytest.fixture(scope="module")
def fixture():
    root = parity_root() / "sft"
    if not root.is_dir():
        pytest.fail(f"sft fixtures not found at {root} (set INTERNVL_PARITY_FIXTURES)")
    cases = json.loads((root / "cases.json").read_text())
    encoders = {
        name: SentencePieceEncoder.from_pretrained(root / prof["dir"], **prof["from_pretrained_overrides"])
        for name, prof in cases["tokenizer_profiles"].items()
    }
    return root, json.loads((root / "dataset_cases.json").read_text()), encoders


def _dataset(tmp_path, root, records, kw, encoder, max_length, name="fixture_ds"):
    ann = tmp_path / f"{name}.jsonl"
    ann.write_text("".join(json.dumps(r) + "\n" for r in records))
    meta = tmp_path / "meta.json"
    meta.write_text(
        json.dumps(
            {
                name: {
                    "root": str(root / "dataset_images"),
                    "annotation": str(ann),
                    "data_augment": kw["is_train"],
                    "repeat_time": 1,
                    "length": len(records),
                }
            }
        )
    )
    settings = ChatImageSettings(
        image_size=kw["image_size"],
        dynamic_image_size=kw["dynamic_image_size"],
        use_thumbnail=kw["use_thumbnail"],
        min_dynamic_patch=kw["min_dynamic_patch"],
        max_dynamic_patch=kw["max_dynamic_patch"],
        pad2square=kw["pad2square"],
    )
    config = SFTDataConfig(
        template=kw["template_name"], num_image_token=kw["num_image_token"], max_length=max_length, image=settings
    )
    return SFTDataset(read_sft_meta(meta), encoder, config)


def test_dataset_cases(fixture, tmp_path):
    root, data, encoders = fixture
    by_key = {
        (c["template"], json.dumps(c["record"]["conversations"]), json.dumps(c["record"].get("image"))): c
        for c in data["cases"]
        if c["error"] is None
    }
    identical = better = 0
    for n, case in enumerate(data["cases"]):
        sub = tmp_path / str(n)
        sub.mkdir()
        ds = _dataset(
            sub,
            root,
            [case["record"]],
            case["dataset_kwargs"],
            encoders[case["tokenizer_profile"]],
            case["model_max_length"],
        )
        if case["error"] is None:
            out = ds[0]
            for key in KEYS:
                assert out[key].tolist() == case[key], f"{case['name']}: {key}"
            assert out["pixel_values"].shape[0] == case["num_tiles"] == len(case["image_flags"])
            size = case["dataset_kwargs"]["image_size"]
            assert tuple(out["pixel_values"].shape[1:]) == (3, size, size)
            identical += 1
            continue
        turns = case["record"]["conversations"]
        if turns[0]["from"] == "gpt":
            out = ds[0]
            assert out["input_ids"].tolist().count(encoders[case["tokenizer_profile"]].token_id("<img>")) == 1
            assert (out["labels"] != IGNORE_INDEX).any()
            from internvl.data.conversation import get_conv_template

            if not get_conv_template(case["template"]).keep_leading_assistant:
                twin = by_key.get((case["template"], json.dumps(turns[1:]), json.dumps(case["record"].get("image"))))
                if twin is not None:
                    assert out["input_ids"].tolist() == twin["input_ids"], case["name"]
                    assert out["labels"].tolist() == twin["labels"], case["name"]
            better += 1
        else:  # the reference's "image tokens are truncated" resampling
            with pytest.raises(
                SFTSampleError, match=r"dataset 'fixture_ds': .*fixture_ds\.jsonl:1: .*image block"
            ) as err:
                ds[0]
            assert err.value.kind == "over_length"
            better += 1
    assert identical >= 8 and better >= 4, (identical, better)


def test_length_estimates(fixture, tmp_path):
    """Ours: the ``length`` field, else text tokens + visual tokens for records with images, per record."""
    root, data, encoders = fixture
    records = data["group_by_length"]["records"]
    for template, spec in data["group_by_length"]["by_template"].items():
        kw = {
            "template_name": template,
            "num_image_token": spec["num_image_token"],
            "image_size": 28,
            "is_train": False,
            "pad2square": False,
            "dynamic_image_size": True,
            "use_thumbnail": spec["use_thumbnail"],
            "min_dynamic_patch": 1,
            "max_dynamic_patch": spec["max_dynamic_patch"],
        }
        sub = tmp_path / template
        sub.mkdir()
        ds = _dataset(sub, root, records, kw, encoders[spec["tokenizer_profile"]], 512)
        addend = spec["num_image_token"] * (spec["max_dynamic_patch"] + int(spec["use_thumbnail"]))
        seen: set[int] = set()
        enc = encoders[spec["tokenizer_profile"]]
        for rec, ref, ours in zip(records, spec["lengths"], ds.lengths, strict=True):
            joined = "\n".join(t["value"] for t in rec["conversations"])
            own = len(enc.encode(joined)) + (addend if rec.get("image") else 0)
            if "length" in rec:
                assert ours == rec["length"] == ref
            elif len(joined) in seen:  # the reference's cache hit: an earlier record's count + the image tokens
                assert ours == own
            else:  # the reference's first record of this character length: its tokens without image tokens
                assert ours == own and own - (addend if rec.get("image") else 0) == ref
            seen.add(len(joined))
