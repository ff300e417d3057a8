"""Caption dataset readers on small files in each real format, the registry file, and their errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from internvl.core.errors import ConfigError, DataFormatError, UnknownModelError
from internvl.data.datasets import (
    CaptionImageDataset,
    find_missing_images,
    infer_format,
    load_registry,
    pre_caption,
    read_caption_references,
    read_coco_captions,
    read_flickr_captions,
    read_registry_file,
)
from internvl.data.synthetic import synthetic_image
from internvl.data.transforms import build_transform

FLICKR_EN = (
    "image,caption\n"
    "1000092795.jpg,Two young guys with shaggy hair look at their hands while hanging out in the yard.\n"
    '1000092795.jpg,"Two young, White males are outside near many bushes."\n'
    "\n"
    "10002456.jpg,Several men in hard hats are operating a giant pulley system.\n"
    "1000092795.jpg,Two men in green shirts are standing in a yard.\n"
)
FLICKR_CN = (
    "image,caption\n"
    "1000092795.jpg,两个年轻人在院子里看着他们的手。\n"
    "1000092795.jpg,两个男人站在院子里，周围有很多灌木。\n"
    "10002456.jpg,几个戴着安全帽的男人正在操作一个巨大的滑轮系统.\n"
)


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_flickr_txt_groups_captions_per_image_in_file_order(tmp_path):
    ann = _write(tmp_path / "flickr30k_test_karpathy.txt", FLICKR_EN)
    recs = read_flickr_captions(ann, tmp_path / "Images")
    assert [r.image_id for r in recs] == [1000092795, 10002456]
    assert recs[0].image_path == tmp_path / "Images" / "1000092795.jpg"
    # The header is skipped, the blank line ignored, the comma inside the quoted caption kept verbatim.
    assert recs[0].captions == (
        "Two young guys with shaggy hair look at their hands while hanging out in the yard.",
        '"Two young, White males are outside near many bushes."',
        "Two men in green shirts are standing in a yard.",
    )
    assert recs[1].captions == ("Several men in hard hats are operating a giant pulley system.",)
    assert recs[0].source == f"{ann}:2"


def test_flickr_cn_txt_reads_utf8_chinese(tmp_path):
    ann = _write(tmp_path / "flickr30k_cn_test.txt", FLICKR_CN)
    recs = read_flickr_captions(ann, tmp_path / "Images")
    assert [len(r.captions) for r in recs] == [2, 1]
    assert recs[0].captions[1] == "两个男人站在院子里，周围有很多灌木。"
    # pre_caption only touches ASCII punctuation in Chinese text (full-width punctuation is kept).
    assert pre_caption(recs[1].captions[0]) == "几个戴着安全帽的男人正在操作一个巨大的滑轮系统"
    assert pre_caption(recs[0].captions[1]) == recs[0].captions[1]


def test_pre_caption_matches_the_reference_rules():
    assert (
        pre_caption('"Two young, White males" (outside)!  near: bushes.\n')
        == "two young, white males outside near bushes"
    )
    assert pre_caption(" ".join(["w"] * 60)) == " ".join(["w"] * 50)
    once = pre_caption("A  Dog ~ runs; fast*#")
    assert once == "a dog runs fast" and pre_caption(once) == once


@pytest.mark.parametrize(
    "line, field",
    [("1000092795.png,A caption.", "image"), (".jpg,A caption.", "image"), ("1000092795.jpg,   ", "caption")],
)
def test_flickr_bad_line_names_file_line_and_field(tmp_path, line, field):
    ann = _write(tmp_path / "bad.txt", "image,caption\n1.jpg,fine caption\n" + line + "\n")
    with pytest.raises(DataFormatError) as e:
        read_flickr_captions(ann, tmp_path)
    msg = str(e.value)
    assert f"{ann}:3" in msg and f"field '{field}'" in msg and "expected" in msg


def test_flickr_invalid_utf8_names_the_line(tmp_path):
    ann = tmp_path / "bad.txt"
    ann.write_bytes(b"image,caption\n1.jpg,ok\n2.jpg,\xff\xfe broken\n")
    with pytest.raises(DataFormatError, match=r"bad\.txt:3: not valid UTF-8"):
        read_flickr_captions(ann, tmp_path)


def test_missing_annotation_file_says_what_was_expected(tmp_path):
    with pytest.raises(DataFormatError, match=r"annotation file not found: .*nope\.txt.*flickr30k_test_karpathy\.txt"):
        read_flickr_captions(tmp_path / "nope.txt", tmp_path)
    with pytest.raises(DataFormatError, match=r"annotation file not found: .*nope\.json"):
        read_coco_captions(tmp_path / "nope.json", tmp_path)


def test_coco_karpathy_lavis_test_and_train_lists(tmp_path):
    test = [
        {
            "image": "val2014/COCO_val2014_000000391895.jpg",
            "caption": ["A man with a red helmet on a small moped.", "Man riding a motor bike."],
        },
        {
            "image": "val2014/COCO_val2014_000000060623.jpg",
            "caption": ["A young girl inhales with the intent of blowing out a candle."],
        },
    ]
    train = [
        {
            "caption": "A woman wearing a net on her head.",
            "image": "val2014/COCO_val2014_000000522418.jpg",
            "image_id": "coco_522418",
        },
        {
            "caption": "A bicycle replica with a clock.",
            "image": "val2014/COCO_val2014_000000184613.jpg",
            "image_id": "coco_184613",
        },
        {
            "caption": "A woman cutting a large white sheet cake.",
            "image": "val2014/COCO_val2014_000000522418.jpg",
            "image_id": "coco_522418",
        },
    ]
    root = tmp_path / "coco"
    recs = read_coco_captions(_write(root / "annotations/coco_karpathy_test.json", json.dumps(test)), root)
    assert [r.image_id for r in recs] == [391895, 60623]
    assert recs[0].image_path == root / "val2014/COCO_val2014_000000391895.jpg"
    assert len(recs[0].captions) == 2
    recs = read_coco_captions(_write(root / "annotations/coco_karpathy_train.json", json.dumps(train)), root)
    assert [(r.image_id, len(r.captions)) for r in recs] == [(522418, 2), (184613, 1)]
    assert recs[0].captions[1] == "A woman cutting a large white sheet cake."


def test_coco_caption_dict_gt_flickr_json_and_nocaps(tmp_path):
    gt = {
        "annotations": [
            {"image_id": 391895, "caption": "A man with a red helmet on a small moped.", "id": 1},
            {"image_id": 60623, "caption": "A young girl inhales.", "id": 2},
            {"image_id": 391895, "caption": "Man riding a motor bike.", "id": 3},
        ],
        "images": [{"id": 391895}, {"id": 60623}],
        "type": "captions",
    }
    refs = read_caption_references(_write(tmp_path / "coco_karpathy_test_gt.json", json.dumps(gt)))
    assert refs == {
        391895: ["A man with a red helmet on a small moped.", "Man riding a motor bike."],
        60623: ["A young girl inhales."],
    }

    flickr = {
        "images": [
            {"id": 1000092795, "file_name": "Images/1000092795.jpg"},
            {"id": 10002456, "image": "Images/10002456.jpg"},
        ],
        "annotations": [
            {"image_id": 10002456, "caption": "Several men.", "id": 0},
            {"image_id": 1000092795, "caption": '"Two young, White males."', "id": 1},
        ],
    }
    ann = _write(tmp_path / "flickr30k/flickr30k_test_karpathy.json", json.dumps(flickr))
    recs = read_coco_captions(ann, tmp_path / "flickr30k")
    assert [r.image_id for r in recs] == [1000092795, 10002456]
    assert recs[1].image_path == tmp_path / "flickr30k/Images/10002456.jpg"
    assert read_caption_references(ann)[1000092795] == ['"Two young, White males."']

    nocaps = {
        "licenses": [],
        "info": {},
        "images": [
            {"id": 0, "file_name": "0013ea2087020901.jpg", "open_images_id": "0013ea2087020901", "domain": "in-domain"},
            {"id": 1, "file_name": "0023ea2087020901.jpg", "domain": "near-domain"},
        ],
        "annotations": [{"image_id": 0, "id": i, "caption": f"caption {i}"} for i in range(10)]
        + [{"image_id": 1, "id": 10, "caption": "another"}],
    }
    recs = read_coco_captions(
        _write(tmp_path / "nocaps/nocaps_val_4500_captions.json", json.dumps(nocaps)), tmp_path / "nocaps/images"
    )
    assert [len(r.captions) for r in recs] == [10, 1]
    assert recs[0].image_path == tmp_path / "nocaps/images/0013ea2087020901.jpg"


@pytest.mark.parametrize(
    "doc, pattern",
    [
        ([{"image": "a.jpg"}], r"entry \[0\]: field 'caption' missing"),
        (
            [{"image": "a.jpg", "caption": "x"}, {"image": 3, "caption": "y"}],
            r"entry \[1\]: field 'image': expected str",
        ),
        ([{"image": "a.jpg", "caption": ["x", 5]}], r"entry \[0\]: field 'caption'\[1\]: expected a string"),
        (
            {"images": [{"id": 1, "file_name": "a.jpg"}], "annotations": [{"image_id": 2, "caption": "x"}]},
            r"annotations\[0\]: field 'image_id': 2 is not among 'images'",
        ),
        ({"images": [{"id": 1}], "annotations": []}, r"images\[0\]: field 'file_name' missing"),
        ({"annotations": []}, r"top level: field 'images' missing"),
        ("just a string", r"top level is a JSON str"),
    ],
)
def test_coco_bad_entries_name_file_entry_and_field(tmp_path, doc, pattern):
    ann = _write(tmp_path / "ann.json", json.dumps(doc))
    with pytest.raises(DataFormatError, match=pattern) as e:
        read_coco_captions(ann, tmp_path)
    assert str(ann) in str(e.value)


def test_invalid_json_reports_line_and_column(tmp_path):
    ann = _write(tmp_path / "ann.json", '[\n  {"image": "a.jpg",\n   "caption": "x",}\n]')
    with pytest.raises(DataFormatError, match=r"ann\.json:3:\d+: invalid JSON"):
        read_coco_captions(ann, tmp_path)


def test_missing_images_are_found_before_and_reported_at_load(tmp_path):
    ann = _write(tmp_path / "f.txt", FLICKR_EN)
    (tmp_path / "Images").mkdir()
    synthetic_image(0, 40).save(tmp_path / "Images" / "1000092795.jpg")
    recs = read_flickr_captions(ann, tmp_path / "Images")
    count, first = find_missing_images(recs)
    assert count == 1 and first[0].image_id == 10002456

    ds = CaptionImageDataset(recs, build_transform("retrieval", 28), name="toy")
    pixels, idx = ds[0]
    assert pixels.shape == (3, 28, 28) and pixels.dtype == torch.float32 and idx == 0
    with pytest.raises(DataFormatError) as e:
        ds[1]
    msg = str(e.value)
    assert "dataset 'toy'" in msg and "10002456.jpg" in msg and "image id 10002456" in msg and f"{ann}:5" in msg


def test_builtin_registry_has_the_guides_layout(tmp_path):
    reg = load_registry()
    spec = reg.get("flickr30k_en_test")
    assert spec.root == Path("data/flickr30k/Images") and spec.annotation == Path(
        "data/flickr30k/flickr30k_test_karpathy.txt"
    )
    assert spec.format == "flickr_format"
    assert reg.get("flickr30k_cn_test").language == "cn"
    coco = reg.get("coco_karpathy_test")
    assert coco.reference_file == Path("data/coco/annotations/coco_karpathy_test_gt.json")
    assert reg.get("nocaps_val").reference_file == Path("data/nocaps/nocaps_val_4500_captions.json")
    assert load_registry(data_root=tmp_path).get("nocaps_val").root == tmp_path / "nocaps/images"
    with pytest.raises(UnknownModelError, match="did you mean flickr30k_en_test"):
        reg.get("flickr30k_en_tset")
    with pytest.raises(DataFormatError, match="dataset 'nocaps_val': annotation file not found"):
        load_registry(data_root=tmp_path).get("nocaps_val").read()


def test_user_registry_file_adds_overrides_and_infers_format(tmp_path):
    _write(tmp_path / "mine/ann.txt", FLICKR_EN)
    reg_file = _write(
        tmp_path / "reg/datasets.yaml",
        "data_root: ../mine\n"
        "datasets:\n"
        "  - name: my_flickr_format_test\n"
        "    root: Images\n"
        "    annotation: ann.txt\n"
        "  - name: flickr30k_en_test\n"
        "    root: /abs/Images\n"
        "    annotation: ann.txt\n"
        "    format: flickr_format\n",
    )
    reg = load_registry([reg_file])
    mine = reg.get("my_flickr_format_test")
    assert mine.format == "flickr_format" and mine.root == tmp_path / "reg/../mine/Images"
    assert [r.image_id for r in mine.read()] == [1000092795, 10002456]
    assert reg.get("flickr30k_en_test").root == Path("/abs/Images")  # the user entry replaced the built-in
    assert "nocaps_val" in reg
    # --data-root takes precedence over the file's data_root.
    assert (
        load_registry([reg_file], data_root=tmp_path / "x").get("my_flickr_format_test").root == tmp_path / "x/Images"
    )
    # The mapping form, without data_root: paths are relative to the file's folder.
    json_file = _write(
        tmp_path / "r.json", json.dumps({"datasets": {"cc_coco_format": {"root": "img", "annotation": "a.json"}}})
    )
    (spec,) = read_registry_file(json_file)
    assert spec.format == "coco_format" and spec.root == tmp_path / "img"


def test_infer_format_follows_the_reference_substring_rule():
    assert infer_format("my_coco_format_flickr") == "coco_format"
    assert infer_format("flickr30k_en_train") == "flickr_format"
    assert infer_format("coco_karpathy_train") == "coco_format"
    assert infer_format("laion") is None


@pytest.mark.parametrize(
    "body, pattern",
    [
        (
            "datasets:\n  - name: x_coco\n    root: a\n    annotaton: b\n",
            r"dataset 'x_coco': unknown key\(s\) 'annotaton' \(did you mean 'annotation'\?\)",
        ),
        ("datasets:\n  - name: x_coco\n    root: a\n", r"dataset 'x_coco': required key 'annotation' missing"),
        ("datasets:\n  - name: laion\n    root: a\n    annotation: b\n", r"dataset 'laion': no 'format' given"),
        (
            "datasets:\n  - name: x\n    root: a\n    annotation: b\n    format: csv\n",
            r"format 'csv' is not supported; expected one of \['flickr_format', 'coco_format'\]",
        ),
        ("datasets:\n  - name: x_coco\n    root: [a]\n    annotation: b\n", r"'root' must be a string"),
        (
            "datasets:\n  - name: a_coco\n    root: a\n    annotation: b\n"
            "  - name: a_coco\n    root: a\n    annotation: b\n",
            r"datasets\[1\]: duplicate name 'a_coco'",
        ),
        ("datasets:\n  - root: a\n", r"datasets\[0\]: 'name' must be a non-empty string"),
        ("sets: []\n", r"expected a mapping with a 'datasets' key"),
        ("datasets:\n  - name: [unclosed\n", r"r\.yaml:\d+:\d+: invalid YAML"),
    ],
)
def test_registry_validation_errors_are_specific(tmp_path, body, pattern):
    f = _write(tmp_path / "r.yaml", body)
    with pytest.raises(ConfigError, match=pattern) as e:
        read_registry_file(f)
    assert str(f) in str(e.value)


def test_missing_registry_file(tmp_path):
    with pytest.raises(ConfigError, match="dataset registry file not found"):
        load_registry([tmp_path / "none.yaml"])
