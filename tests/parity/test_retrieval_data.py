"""Stage-2 fine-tuning data against the reference ``FlickrDataset``/``COCODataset`` (retrieval_data/ fixtures).

Every case of the fixture files is checked: caption cleaning, the positive / negative / summarize and
captioning token ids and masks (padded and unpadded), the evaluation tokenizer, annotation parsing
(ids, captions, paths, errors) and ``image_ids``. The reference passes ids through float32; we keep
them exact, and the tests check both that ours are exact and that the fixture's values are the float32
rounding of ours (so the difference is exactly the documented one).
"""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from internvl.core.errors import DataFormatError
from internvl.data.datasets.records import pre_caption
from internvl.data.pairs import PairTokenizer, RetrievalPairs, read_caption_pairs
from internvl.data.tokenization import InternVLTextTokenizer
from tests.conftest import parity_root

pytestmark = pytest.mark.parity
FORMATS = {"flickr": "flickr_format", "coco": "coco_format"}


@pytest.fixture(scope="module")
def root():
    r = parity_root() / "retrieval_data"
    if not r.is_dir():
        pytest.fail(f"parity fixtures not found at {r} (set INTERNVL_PARITY_FIXTURES)")
    return r


def _json(root, name):
    return json.loads((root / name).read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def samples(root):
    return _json(root, "samples.json")


@pytest.fixture(scope="module")
def tokenizers(root, samples):
    padded = PairTokenizer.from_pretrained(root / "tokenizer", max_length=samples["max_seq_length"])
    unpadded = PairTokenizer(padded.text, padded.pad_token_id, samples["max_seq_length"], pad_to_max_length=False)
    return padded, unpadded


def test_caption_cleaning(root):
    doc = _json(root, "captions.json")
    cases = doc["process_single_caption"]
    assert cases
    for case in cases:
        assert pre_caption(case["raw"], doc["max_words"]) == case["clean"], case["raw"]


def test_special_ids(samples, tokenizers):
    tok = tokenizers[0]
    assert (tok.pad_token_id, tok.text.bos_token_id, tok.text.eos_token_id) == (
        samples["pad_token_id"],
        samples["bos_token_id"],
        samples["eos_token_id"],
    )


def test_sample_tokenisation(samples, tokenizers):
    padded, unpadded = tokenizers
    assert samples["samples"]
    n_unpadded = 0
    for s in samples["samples"]:
        for variant, tok in (("padded", padded), ("unpadded", unpadded)):
            if variant not in s:
                continue
            n_unpadded += variant == "unpadded"
            ours = {**tok.retrieval_fields(s["caption"], s["negative_caption"]), **tok.captioning_fields(s["caption"])}
            assert set(ours) == set(s[variant]), variant
            for key, expected in s[variant].items():
                assert ours[key] == expected, (variant, key, s["caption"][:40])
    assert n_unpadded > 0


def test_eval_tokenizer(root, samples):
    tok = InternVLTextTokenizer.from_pretrained(root / "tokenizer", max_length=samples["max_seq_length"])
    assert tok.pad_token_id == samples["eval_tokenizer_pad_token_id"]
    ids = tok([s["caption"] for s in samples["samples"]])
    assert ids.tolist() == [s["eval_tokenizer_input_ids"] for s in samples["samples"]]


def _stand_in_images(pairs, folder):
    for p in pairs:
        p.image_path.parent.mkdir(parents=True, exist_ok=True)
        if not p.image_path.exists():
            Image.new("RGB", (4, 4), (p.image_id % 256, 7, 9)).save(p.image_path)


@pytest.mark.parametrize("kind", list(FORMATS))
def test_annotation_parsing_and_image_ids(root, tokenizers, kind, tmp_path):
    doc = _json(root, "datasets.json")[kind]
    image_root = tmp_path / "images"
    pairs, skipped = read_caption_pairs(root / doc["annotation"], image_root, FORMATS[kind], empty="keep")
    assert skipped == []
    assert len(pairs) == len(doc["items"])
    _stand_in_images(pairs, image_root)
    data = RetrievalPairs(pairs, tokenizers[0], image_size=8)
    rounded = 0
    for item in doc["items"]:
        pair = pairs[item["index"]]
        assert pair.image_id == item["image_id_parsed"]
        assert pair.caption == item["caption"]
        assert pair.image_path.relative_to(image_root).as_posix() == item["image_path_suffix"]
        got = data[item["index"]]["image_ids"]
        assert got.dtype == torch.long and got.tolist() == [item["image_id_parsed"]]  # exact, not float32-rounded
        # The fixture holds the reference's float32 round trip of the same id:
        assert (
            torch.tensor([float(item["image_id_parsed"])], dtype=torch.float32).long().tolist()
            == item["image_ids_tensor"]
        )
        rounded += item["image_ids_tensor"] != [item["image_id_parsed"]]
    assert rounded > 0  # the fixture does exercise ids that float32 cannot hold


@pytest.mark.parametrize("kind", list(FORMATS))
def test_empty_captions_are_reported_by_default(root, kind, tmp_path):
    doc = _json(root, "datasets.json")[kind]
    empty = [i["index"] for i in doc["items"] if not i["caption"]]
    assert empty
    with pytest.raises(DataFormatError, match=r"field 'caption': empty after cleaning"):
        read_caption_pairs(root / doc["annotation"], tmp_path, FORMATS[kind])
    pairs, skipped = read_caption_pairs(root / doc["annotation"], tmp_path, FORMATS[kind], empty="skip")
    assert len(skipped) == len(empty) and len(pairs) == len(doc["items"]) - len(empty)
    assert all(":" in s for s in skipped)


def test_flickr_line_parsing(root, tmp_path):
    cases = _json(root, "datasets.json")["flickr_line_parsing"]
    assert cases
    for n, case in enumerate(cases):
        f = tmp_path / f"case{n}.txt"
        f.write_text("image,caption\n" + case["line"] + "\n", encoding="utf-8")
        if case["error"] is not None:
            with pytest.raises(DataFormatError, match=rf"{f.name}:2: field '(image|caption)'"):
                read_caption_pairs(f, "R", "flickr_format", empty="keep")
            continue
        pairs, _ = read_caption_pairs(f, "R", "flickr_format", empty="keep")
        assert [p.image_id for p in pairs] == case["image_ids"]
        assert [p.caption for p in pairs] == case["captions"]
        assert [p.image_path.as_posix() for p in pairs] == case["images"]


def test_negatives_are_other_images_and_seeded(root, tokenizers, tmp_path):
    doc = _json(root, "datasets.json")["flickr"]
    pairs, _ = read_caption_pairs(root / doc["annotation"], tmp_path, "flickr_format", empty="keep")
    a = RetrievalPairs(pairs, tokenizers[0], 8, seed=3)
    b = RetrievalPairs(pairs, tokenizers[0], 8, seed=3)
    picks = [a.negative_index(i) for i in range(len(pairs))]
    assert picks == [b.negative_index(i) for i in range(len(pairs))]
    assert all(pairs[j].image_id != pairs[i].image_id for i, j in enumerate(picks))
    a.set_epoch(1)
    assert [a.negative_index(i) for i in range(len(pairs))] != picks
    with pytest.raises(DataFormatError, match="at least two different images"):
        RetrievalPairs([p for p in pairs if p.image_id == pairs[0].image_id], tokenizers[0], 8)
