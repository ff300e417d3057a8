"""The built-in world: deterministic, disjoint splits, answers that match the pixels, files the real readers parse."""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from internvl.cli.main import main
from internvl.data.datasets import (
    find_missing_images,
    load_registry,
    read_caption_references,
    read_coco_captions,
    read_flickr_captions,
)
from internvl.data.synthetic import QUESTION_TYPES, build_world_tokenizer, random_scene, synthetic_scene
from internvl.data.synthetic.scenes import BACKGROUND, CELL, COLOURS, NUMBERS, POSITIONS
from internvl.data.synthetic.world import (
    MME_TASKS,
    QUESTION_FIRST_SHARE,
    SFT_TYPE_REPEAT,
    build_world,
    mme_question_rows,
    world_corpus,
    write_world,
)

SIZES = {"train": 40, "val": 6, "test": 12}


@pytest.fixture(scope="module")
def world_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("world")
    write_world(root, seed=5, sizes=SIZES)
    return root


def _digest(root: Path) -> dict[str, str]:
    """sha256 of every file, with the root's own path blanked (the SFT meta JSON holds absolute paths)."""
    here = str(root.resolve()).encode()
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes().replace(here, b"")).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_same_seed_same_files_other_seed_other_world(tmp_path, world_dir):
    write_world(tmp_path / "again", seed=5, sizes=SIZES)
    assert _digest(tmp_path / "again") == _digest(world_dir)
    a, b = build_world(5, SIZES), build_world(6, SIZES)
    assert [i.scene.key for i in a["test"]] != [i.scene.key for i in b["test"]]


def test_splits_disjoint_and_test_captions_unique():
    world = build_world(1, {"train": 300, "val": 50, "test": 200}, min_objects=1)
    keys = {s: {i.scene.key for i in items} for s, items in world.items()}
    assert len(keys["train"]) == 300 and len(keys["test"]) == 200
    assert not (keys["train"] & keys["test"]) and not (keys["train"] & keys["val"]) and not (keys["val"] & keys["test"])
    test_caps = [c for i in world["test"] for c in i.captions]
    per_image = [set(i.captions) for i in world["test"]]
    # No caption is shared between two test images (a caption names exactly one image).
    assert sum(len(s) for s in per_image) == len(set(test_caps))
    assert not set(test_caps) & {c for i in world["train"] for c in i.captions}
    # The test split does not change when the train split grows (it is drawn first).
    bigger = build_world(1, {"train": 600, "val": 50, "test": 200}, min_objects=1)
    assert [i.scene.key for i in bigger["test"]] == [i.scene.key for i in world["test"]]


def test_min_objects_drops_one_object_scenes():
    from internvl.core.errors import ConfigError

    world = build_world(0, {"train": 50, "val": 0, "test": 50})
    assert min(len(i.scene.objects) for s in world.values() for i in s) == 2
    assert 1 in {
        len(i.scene.objects) for i in build_world(0, {"train": 50, "val": 0, "test": 50}, min_objects=1)["test"]
    }
    with pytest.raises(ConfigError, match="min_objects"):
        build_world(0, min_objects=4)


def test_answers_and_captions_follow_the_drawn_objects():
    rng = np.random.default_rng(0)
    types_seen = set()
    for _ in range(200):
        scene = random_scene(rng)
        pixels = np.asarray(scene.render())
        for o in scene.objects:  # every shape covers its cell centre, in its own colour
            y, x = o.row * CELL + CELL // 2, o.col * CELL + CELL // 2
            assert tuple(pixels[y, x]) == COLOURS[o.colour]
        occupied = {o.cell for o in scene.objects}
        for cell in set(range(9)) - occupied:
            assert tuple(pixels[(cell // 3) * CELL + CELL // 2, (cell % 3) * CELL + CELL // 2]) == BACKGROUND
        for qa in scene.questions(rng):
            types_seen.add(qa.type)
            if qa.type == "count":
                assert qa.answer == NUMBERS[len(scene.objects)]
            elif qa.type == "colour":
                shape = qa.question.split()[-1].rstrip("?")
                assert qa.answer == next(o.colour for o in scene.objects if o.shape == shape)
            elif qa.type == "position":
                colour, shape = qa.question.rstrip("?").split()[-2:]
                assert qa.answer == next(o.position for o in scene.objects if (o.colour, o.shape) == (colour, shape))
            elif qa.type == "exists":
                colour, shape = qa.question.split("?")[0].split()[-2:]
                assert (qa.answer == "yes") == any((o.colour, o.shape) == (colour, shape) for o in scene.objects)
        caption = scene.captions(rng)[0]
        for o in scene.objects:
            assert f"{o.size} {o.colour} {o.shape}" in caption and o.position in caption
    assert types_seen == set(QUESTION_TYPES)
    image, captions, questions = synthetic_scene(3)
    assert image.size == (48, 48) and len(captions) == 3 and questions


def test_caption_files_parse_through_the_readers(world_dir):
    world = build_world(5, SIZES)
    for split, items in world.items():
        flickr = read_flickr_captions(world_dir / f"flickr/world_{split}_karpathy.txt", world_dir / "images")
        coco = read_coco_captions(world_dir / f"coco/world_karpathy_{split}.json", world_dir)
        refs = read_caption_references(world_dir / f"coco/world_karpathy_{split}_gt.json")
        expected = {i.image_id: i.captions for i in items}
        for recs in (flickr, coco):
            assert {r.image_id: r.captions for r in recs} == expected
            assert find_missing_images(recs)[0] == 0
        assert {k: tuple(v) for k, v in refs.items()} == expected
    registry = load_registry([world_dir / "registry.yaml"])
    for name in ("world_flickr_format_test", "world_coco_format_test", "world_coco_format_train"):
        recs = registry.get(name).read()
        assert find_missing_images(recs)[0] == 0 and len(recs) == SIZES[name.rsplit("_", 1)[1]]
    with Image.open(registry.get("world_flickr_format_test").read()[0].image_path) as im:
        assert im.size == (48, 48)


def test_sft_meta_and_jsonl(world_dir):
    for split in ("train", "test"):
        meta = json.loads((world_dir / f"sft/world_sft_{split}.json").read_text())
        assert list(meta) == [f"world_{split}_{t}" for t in QUESTION_TYPES]  # one source per question type
        qa = [json.loads(x) for x in (world_dir / f"qa/world_{split}.jsonl").read_text().splitlines()]
        records = {}
        for name, entry in meta.items():
            kind = name.rsplit("_", 1)[1]
            lines = Path(entry["annotation"]).read_text().splitlines()
            assert entry["annotation"].endswith(f"_{kind}.jsonl") and entry["length"] == len(lines)
            assert entry["repeat_time"] == (SFT_TYPE_REPEAT[kind] if split == "train" else 1)
            for line in lines:
                rec = json.loads(line)
                records[rec["id"]] = (kind, rec)
                assert Path(entry["root"], rec["image"]).is_file()
        assert len(records) == len(qa) and len({r["image"] for _, r in records.values()}) == SIZES[split]
        first, seen = 0, Counter()
        for row in qa:  # one single-turn record per question (id <image id>_<k>), in the source of its type
            kind, rec = records[f"{row['image_id']}_{seen[row['image_id']]}"]
            seen[row["image_id"]] += 1
            assert kind == row["type"] and rec["image"] == row["image"]
            assert [t["from"] for t in rec["conversations"]] == ["human", "gpt"]
            human, answer = (t["value"] for t in rec["conversations"])
            assert human in (f"<image>\n{row['question']}", f"{row['question']}\n<image>") and answer == row["answer"]
            assert row["prompt"] == human  # the demo asks the layout SFT trained
            first += human.endswith("<image>")
        assert abs(first / len(qa) - QUESTION_FIRST_SHARE) < 0.05
    qa = [json.loads(x) for x in (world_dir / "qa/world_test.jsonl").read_text().splitlines()]
    assert {q["type"] for q in qa} <= set(QUESTION_TYPES) and {"colour", "count", "exists"} <= {q["type"] for q in qa}


def test_mme_and_mmbench_files(world_dir):
    for task in MME_TASKS:
        rows = mme_question_rows(world_dir / f"bench/mme/Your_Results/{task}.txt")
        assert len(rows) == 2 * SIZES["test"]
        for k in range(0, len(rows), 2):
            (img_a, q_a, gt_a), (img_b, q_b, gt_b) = rows[k], rows[k + 1]
            assert img_a == img_b and (gt_a, gt_b) == ("Yes", "No") and q_a != q_b
            assert q_a.endswith("Please answer yes or no.") and q_b.endswith("Please answer yes or no.")
            assert (world_dir / "bench/mme/images" / task / img_a).is_file()
    with open(world_dir / "bench/mmbench/world_mmbench_test.tsv", newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    assert rows and [int(r["index"]) for r in rows] == list(range(len(rows)))
    world = {i.image_id: i for i in build_world(5, SIZES)["test"]}
    for r in rows:
        options = [r[c] for c in "ABCD"]
        assert len(set(options)) == 4 and r["answer"] in "ABCD"
        with Image.open(io.BytesIO(base64.b64decode(r["image"]))) as im:
            assert im.size == (48, 48)
        truth = [
            q
            for i in world.values()
            for q in i.questions
            if q.type == r["category"] and q.question.startswith(r["question"])
        ]
        assert r[r["answer"]] in {q.answer for q in truth}
    assert {r["category"] for r in rows} >= {"colour", "shape", "count"}


def test_world_tokenizer_loads_with_the_special_tokens(world_dir):
    from transformers import AutoTokenizer

    from internvl.data.tokenization import InternVLTextTokenizer
    from internvl.inference.chat import load_tokenizer

    tok = AutoTokenizer.from_pretrained(world_dir / "tokenizer")
    assert (tok.unk_token_id, tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (0, 1, 2, 0)
    for t in ("<|im_start|>", "<|im_end|>", "<img>", "</img>", "<IMG_CONTEXT>"):
        assert tok(t, add_special_tokens=False)["input_ids"] == [tok.convert_tokens_to_ids(t)]
    for word in list(COLOURS) + ["circle", "triangle", "diamond", "square"] + [p.split()[-1] for p in POSITIONS]:
        assert len(tok(" " + word, add_special_tokens=False)["input_ids"]) == 1, word
    # A reply starts a line ("assistant\n" + answer), where the byte-level BPE sees the word without a space:
    # every one-word answer must still be one token there, or a one-word answer takes several guesses.
    answers = {q["answer"] for q in map(json.loads, (world_dir / "qa/world_train.jsonl").read_text().splitlines())}
    for answer in answers:
        ids = tok(f"assistant\n{answer}<|im_end|>", add_special_tokens=False)["input_ids"]
        assert len(ids) == 2 + len(answer.split()) + 1, (answer, tok.convert_ids_to_tokens(ids))
    text = "a big red circle at the top left"
    assert tok.decode(tok(text)["input_ids"]) == text
    cg = InternVLTextTokenizer.from_pretrained(world_dir / "tokenizer", max_length=32)
    ids = cg([text])[0].tolist()
    assert ids[0] == 1 and ids[ids.index(2) + 1 :] == [0] * (31 - ids.index(2)) and 0 not in ids[: ids.index(2)]
    chat_tok = load_tokenizer(world_dir / "tokenizer")
    assert chat_tok.convert_tokens_to_ids("<IMG_CONTEXT>") != chat_tok.unk_token_id


def test_tokenizer_builder_on_a_corpus(tmp_path):
    world = build_world(0, {"train": 30, "val": 0, "test": 0})
    path = build_world_tokenizer(tmp_path / "tok", world_corpus(world), vocab_size=300)
    assert (path / "tokenizer.json").is_file() and (path / "tokenizer_config.json").is_file()


def test_cli_data_synth(tmp_path, capsys):
    out = tmp_path / "w"
    assert (
        main(
            [
                "data",
                "synth",
                "--out",
                str(out),
                "--seed",
                "2",
                "--train",
                "10",
                "--val",
                "2",
                "--test",
                "4",
                "--min-objects",
                "1",
            ]
        )
        == 0
    )
    summary = json.loads((out / "world.json").read_text())
    assert summary["sizes"] == {"train": 10, "val": 2, "test": 4} and summary["seed"] == 2
    assert summary["min_objects"] == 1
    assert len(read_flickr_captions(out / "flickr/world_test_karpathy.txt", out / "images")) == 4
    (tmp_path / "file").write_text("x")
    assert main(["data", "synth", "--out", str(tmp_path / "file")]) == 2
    assert "--out" in (err := capsys.readouterr().err) and "is a file" in err
    assert main(["data", "synth", "--out", str(tmp_path / "n"), "--test", "-1"]) == 2
