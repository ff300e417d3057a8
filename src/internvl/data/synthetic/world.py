"""Write the built-in world to disk in the file formats the project reads for real data.

`write_world(root, seed)` draws disjoint train/val/test scenes (pairwise distinct keys, so no caption
repeats within or across splits), saves each image once as ``images/<id>.jpg`` and writes::

    flickr/world_{split}_karpathy.txt       Flickr30K Karpathy txt (read_flickr_captions)
    coco/world_karpathy_{split}.json        LAVIS/BLIP list (read_coco_captions)
    coco/world_karpathy_{split}_gt.json     COCO caption dict (read_caption_references)
    registry.yaml                           dataset registry: world_{flickr,coco}_format_{split}
    sft/world_sft_{split}.json              InternVL SFT meta JSON (chat spec 7.1): one source per question type
    sft/world_sft_{split}_{type}.jsonl      its JSONL, one single-turn record per question (chat spec 7.2)
    qa/world_{split}.jsonl                  one question per line with its type, for per-type accuracy
    bench/mme/Your_Results/<task>.txt       MME (img TAB question TAB gt; images in bench/mme/images/<task>/,
                                            a layout the MME reader accepts)
    bench/mmbench/world_mmbench_{split}.tsv MMBench TSV (index, question, hint, A-D, answer, category, image b64)
    tokenizer/                              the world tokenizer (`build_world_tokenizer`)
    world.json                              settings, counts and file list

Scenes hold 2-3 objects by default (``min_objects``). Image ids are integers (train 1xxxxxx, val 2xxxxxx,
test 3xxxxxx), so both caption readers give the
same ids. Everything is a function of ``seed`` and the split sizes.
"""

from __future__ import annotations

import base64
import csv
import json
import os
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from internvl.core.errors import ConfigError
from internvl.data.synthetic.scenes import (
    COLOURS,
    IMAGE_SIZE,
    MAX_OBJECTS,
    NUMBERS,
    POSITIONS,
    QA,
    QUESTION_TYPES,
    SHAPES,
    Scene,
    scene_stream,
)

SPLITS = ("train", "val", "test")
_ID_BASE = {"train": 1_000_000, "val": 2_000_000, "test": 3_000_000}
CAPTIONS_PER_IMAGE = 3
# repeat_time of each question type's source in the training mixture (val/test: 1). The types that need an
# object's shape are drawn most: with a uniform mixture a from-scratch LLM never learned them in a CPU budget
# (README, calibration, third round: mixes w1-w4). Relation is drawn least: even perfect visual tokens leave
# it at chance for 6,400 steps (o11), so its samples go to the types the demo's steps can teach (fourth round).
SFT_TYPE_REPEAT = {"colour": 4.0, "shape": 4.0, "exists": 3.0, "position": 2.0, "count": 0.5, "relation": 0.25}
QUESTION_FIRST_SHARE = 1.0  # of the SFT records (and QA prompts) with <image> after the question (see _write_sft)
MME_TASKS = ("existence", "count", "color", "position")
MC_ANSWERS = {
    "colour": tuple(COLOURS),
    "shape": SHAPES,
    "count": NUMBERS[1:5],
    "position": POSITIONS,
    "relation": ("left", "right", "above", "below"),
}
EXTRA_TEXT = (
    "summarize:",
    "English caption:",
    "Answer the question using a single word or phrase.",
    "Answer with the option's letter from the given choices directly.",
    "system\nAnswer the questions.",
    "user\n",
    "assistant\n",
    "Yes",
    "No",
    "A",
    "B",
    "C",
    "D",
)


@dataclass(frozen=True)
class WorldItem:
    """One image of the world: its scene, file, captions and questions (all from one seeded draw)."""

    split: str
    image_id: int
    scene: Scene
    captions: tuple[str, ...]
    questions: tuple[QA, ...]

    @property
    def file_name(self) -> str:
        return f"{self.image_id}.jpg"


def build_world(
    seed: int = 0, sizes: dict[str, int] | None = None, *, min_objects: int = 2
) -> dict[str, list[WorldItem]]:
    """The world's items per split, without touching the disk (test first, so test sizes never shift it).

    ``min_objects`` 2 (default) leaves out the one-object scenes: their nearest neighbours differ by
    position alone, and random contrastive batches almost never hold such a pair, so a from-scratch
    InternVL-C learns them slowly (held-out R@1 0.82 with them, 0.96 without, at 120 s; README,
    calibration). ``min_objects=1`` keeps them, for a harder world.
    """
    if not 1 <= min_objects <= MAX_OBJECTS:
        raise ConfigError(f"min_objects={min_objects}; expected 1..{MAX_OBJECTS}")
    sizes = {"train": 5000, "val": 200, "test": 500, **(sizes or {})}
    for split, n in sizes.items():
        if split not in SPLITS or not isinstance(n, int) or n < 0:
            raise ConfigError(f"world split sizes: {split}={n!r}; expected non-negative ints for {SPLITS}")
    stream = scene_stream(seed, min_objects)
    rng = np.random.default_rng([seed, 1])
    out: dict[str, list[WorldItem]] = {}
    for split in ("test", "val", "train"):
        items = []
        for i in range(sizes[split]):
            scene = next(stream)
            items.append(
                WorldItem(
                    split,
                    _ID_BASE[split] + i,
                    scene,
                    tuple(scene.captions(rng, CAPTIONS_PER_IMAGE)),
                    tuple(scene.questions(rng)),
                )
            )
        out[split] = items
    return {s: out[s] for s in SPLITS}


def world_corpus(world: dict[str, list[WorldItem]]) -> list[str]:
    """Every text the world's models read or write (tokenizer training corpus)."""
    texts = list(EXTRA_TEXT)
    answers: set[str] = set()
    for item in world["train"]:
        texts += item.captions
        texts += [f"{q.question} {q.answer}" for q in item.questions]
        answers.update(q.answer for q in item.questions)
    texts += [" ".join(v) for v in MC_ANSWERS.values()]
    # Each answer also as a text of its own: a reply starts a line ("assistant\n" + answer), where the byte-level
    # BPE sees the word without its leading space; without these, "green" was 'g' 'reen' and "three" three pieces.
    texts += sorted(answers | {a for v in MC_ANSWERS.values() for a in v})
    return texts


def write_world(
    root: str | os.PathLike,
    seed: int = 0,
    sizes: dict[str, int] | None = None,
    *,
    tokenizer: bool = True,
    min_objects: int = 2,
) -> dict:
    """Draw the world and write every file listed in the module docstring; returns the ``world.json`` summary."""
    root = Path(root)
    world = build_world(seed, sizes, min_objects=min_objects)
    rng = np.random.default_rng([seed, 2])
    (root / "images").mkdir(parents=True, exist_ok=True)
    for items in world.values():
        for item in items:
            _save_jpeg(
                item.scene.render(np.random.default_rng([seed, 3, item.image_id])), root / "images" / item.file_name
            )
    files: list[str] = []
    for split, items in world.items():
        files += _write_captions(root, split, items)
        files += _write_sft(root, split, items, rng)
        files += _write_mmbench(root, split, items, rng)
    files += _write_mme(root, world["test"], rng)
    files.append(_write_registry(root))
    if tokenizer:
        build_world_tokenizer_for(root, world)
        files.append("tokenizer/")
    summary = {
        "seed": seed,
        "min_objects": min_objects,
        "sizes": {s: len(v) for s, v in world.items()},
        "captions_per_image": CAPTIONS_PER_IMAGE,
        "image_size": IMAGE_SIZE,
        "files": sorted(files),
    }
    (root / "world.json").write_text(json.dumps(summary, indent=2))
    return summary


def build_world_tokenizer_for(root: Path, world: dict[str, list[WorldItem]]) -> Path:
    from internvl.data.synthetic.tokenizer import build_world_tokenizer

    return build_world_tokenizer(root / "tokenizer", world_corpus(world))


def _save_jpeg(image, path: Path) -> None:
    # No chroma subsampling: colour is what the questions ask about, and 4:2:0 smears it at 16-px cells.
    image.save(path, format="JPEG", quality=95, subsampling=0)


def _write_captions(root: Path, split: str, items: list[WorldItem]) -> list[str]:
    (root / "flickr").mkdir(exist_ok=True)
    (root / "coco").mkdir(exist_ok=True)
    flickr = root / "flickr" / f"world_{split}_karpathy.txt"
    with open(flickr, "w", encoding="utf-8") as f:
        f.write("image,caption\n")
        for item in items:
            f.writelines(f"{item.file_name},{c}\n" for c in item.captions)
    if split == "train":  # LAVIS train layout: one entry per caption, with an image_id
        lavis = [
            {"image": f"images/{it.file_name}", "caption": c, "image_id": f"world_{it.image_id}"}
            for it in items
            for c in it.captions
        ]
    else:
        lavis = [{"image": f"images/{it.file_name}", "caption": list(it.captions)} for it in items]
    (root / "coco" / f"world_karpathy_{split}.json").write_text(json.dumps(lavis))
    gt = {
        "images": [{"id": it.image_id, "file_name": f"images/{it.file_name}"} for it in items],
        "annotations": [
            {"image_id": it.image_id, "id": k, "caption": c}
            for k, (it, c) in enumerate((it, c) for it in items for c in it.captions)
        ],
    }
    (root / "coco" / f"world_karpathy_{split}_gt.json").write_text(json.dumps(gt))
    return [
        str(p.relative_to(root))
        for p in (
            flickr,
            root / "coco" / f"world_karpathy_{split}.json",
            root / "coco" / f"world_karpathy_{split}_gt.json",
        )
    ]


def _write_registry(root: Path) -> str:
    import yaml

    datasets = []
    for split in SPLITS:
        datasets.append(
            {
                "name": f"world_flickr_format_{split}",
                "root": "images",
                "annotation": f"flickr/world_{split}_karpathy.txt",
                "format": "flickr_format",
            }
        )
        datasets.append(
            {
                "name": f"world_coco_format_{split}",
                "root": ".",
                "annotation": f"coco/world_karpathy_{split}.json",
                "format": "coco_format",
                "references": f"coco/world_karpathy_{split}_gt.json",
            }
        )
    path = root / "registry.yaml"
    path.write_text(
        "# The built-in world (internvl data synth); paths are relative to this file.\n"
        + yaml.safe_dump({"data_root": ".", "datasets": datasets}, sort_keys=False)
    )
    return path.name


def _write_sft(root: Path, split: str, items: list[WorldItem], rng: np.random.Generator) -> list[str]:
    """SFT JSONL per question type (one single-turn record per question) + their meta JSON + the QA list.

    One question per record, not all of an image's questions as one conversation: in a conversation later
    turns can copy earlier answers from the text ("Where is the red circle?" then "What colour is the
    circle?"), a shortcut around the image, and a 35-token record costs a third of a 110-token one
    (README, calibration). ``<image>`` goes after the question in a `QUESTION_FIRST_SHARE` of the records
    (the SFT format allows it anywhere; all of them by default): then each visual token can attend to the
    question and mark itself as the one asked about, which a from-scratch LLM learns much faster than
    matching the question against the image from the answer position (held-out accuracy in that layout
    0.56 vs 0.43 for a half-and-half mix at 180 s; README, calibration). The QA rows carry that user turn
    as ``prompt``, which the demo asks; the model card's image-first layout is scored beside it.

    One meta source per type is how the mixture is weighted: the training meta gives each source its
    `SFT_TYPE_REPEAT` as ``repeat_time``, as the reference's meta files weight their datasets.
    """
    (root / "sft").mkdir(exist_ok=True)
    (root / "qa").mkdir(exist_ok=True)
    qa_path = root / "qa" / f"world_{split}.jsonl"
    paths = {t: root / "sft" / f"world_sft_{split}_{t}.jsonl" for t in QUESTION_TYPES}
    counts = dict.fromkeys(QUESTION_TYPES, 0)
    with ExitStack() as stack:
        files = {t: stack.enter_context(open(path, "w", encoding="utf-8")) for t, path in paths.items()}
        g = stack.enter_context(open(qa_path, "w", encoding="utf-8"))
        for item in items:
            for k, q in enumerate(item.questions):
                first = rng.random() < QUESTION_FIRST_SHARE
                human = f"{q.question}\n<image>" if first else f"<image>\n{q.question}"
                record = {
                    "id": f"{item.image_id}_{k}",
                    "image": item.file_name,
                    "width": IMAGE_SIZE,
                    "height": IMAGE_SIZE,
                    "conversations": [{"from": "human", "value": human}, {"from": "gpt", "value": q.answer}],
                }
                files[q.type].write(json.dumps(record) + "\n")
                counts[q.type] += 1
                qa_row = {
                    "image_id": item.image_id,
                    "image": item.file_name,
                    "type": q.type,
                    "question": q.question,
                    "prompt": human,  # the user turn as trained, <image> placed: what the demo asks
                    "answer": q.answer,
                }
                g.write(json.dumps(qa_row) + "\n")
    meta = root / "sft" / f"world_sft_{split}.json"
    meta.write_text(
        json.dumps(
            {
                f"world_{split}_{t}": {
                    "root": str((root / "images").resolve()) + os.sep,
                    "annotation": str(paths[t].resolve()),
                    "data_augment": False,
                    "repeat_time": SFT_TYPE_REPEAT[t] if split == "train" else 1,
                    "length": counts[t],
                }
                for t in QUESTION_TYPES
            },
            indent=2,
        )
    )
    return [str(p.relative_to(root)) for p in (*paths.values(), meta, qa_path)]


def _mme_questions(item: WorldItem, task: str, rng: np.random.Generator) -> list[tuple[str, str]]:
    """Two questions of one MME task for one image: one whose answer is Yes, one whose answer is No."""
    scene, objs = item.scene, item.scene.objects
    suffix = " Please answer yes or no."
    if task == "existence":
        (c1, s1), (c0, s0) = scene.probe(rng, True), scene.probe(rng, False)
        return [
            (f"Is there a {c1} {s1} in the image?{suffix}", "Yes"),
            (f"Is there a {c0} {s0} in the image?{suffix}", "No"),
        ]
    if task == "count":
        wrong = [n for n in NUMBERS[1:4] if n != NUMBERS[len(objs)]]
        return [
            (f"Are there {NUMBERS[len(objs)]} objects in the image?{suffix}", "Yes"),
            (f"Are there {wrong[int(rng.integers(len(wrong)))]} objects in the image?{suffix}", "No"),
        ]
    o = objs[int(rng.integers(len(objs)))]
    if task == "color":
        other = [c for c in COLOURS if c != o.colour]
        where = "in the center" if o.position == "center" else f"at the {o.position}"
        return [
            (f"Is the object {where} {o.colour}?{suffix}", "Yes"),
            (f"Is the object {where} {other[int(rng.integers(len(other)))]}?{suffix}", "No"),
        ]
    if task == "position":
        empty = [p for k, p in enumerate(POSITIONS) if k not in {x.cell for x in objs}]
        name = f"{o.size} {o.colour} {o.shape}"
        return [
            (f"Is the {name} at the {o.position}?{suffix}", "Yes"),
            (f"Is the {name} at the {empty[int(rng.integers(len(empty)))]}?{suffix}", "No"),
        ]
    raise ConfigError(f"unknown MME task {task!r}; expected one of {MME_TASKS}")


def _write_mme(root: Path, items: list[WorldItem], rng: np.random.Generator) -> list[str]:
    """The MME layout for the test images: per task a results-template txt and the task's image folder."""
    import shutil

    base = root / "bench" / "mme"
    (base / "Your_Results").mkdir(parents=True, exist_ok=True)
    written = []
    for task in MME_TASKS:
        (base / "images" / task).mkdir(parents=True, exist_ok=True)
        path = base / "Your_Results" / f"{task}.txt"
        with open(path, "w", encoding="utf-8") as f:
            for item in items:
                shutil.copyfile(root / "images" / item.file_name, base / "images" / task / item.file_name)
                f.writelines(
                    f"{item.file_name}\t{question}\t{gt}\n" for question, gt in _mme_questions(item, task, rng)
                )
        written.append(str(path.relative_to(root)))
    return written


def _write_mmbench(root: Path, split: str, items: list[WorldItem], rng: np.random.Generator) -> list[str]:
    """An MMBench-style TSV: each non-yes/no question with four options (the answer and three others)."""
    if split == "train":
        return []
    (root / "bench" / "mmbench").mkdir(parents=True, exist_ok=True)
    path = root / "bench" / "mmbench" / f"world_mmbench_{split}.tsv"
    index = 0
    with open(path, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f, delimiter="\t", lineterminator="\n")
        w.writerow(["index", "question", "hint", "A", "B", "C", "D", "answer", "category", "l2-category", "image"])
        for item in items:
            image_b64 = base64.b64encode((root / "images" / item.file_name).read_bytes()).decode("ascii")
            for q in item.questions:
                if q.type not in MC_ANSWERS:
                    continue
                others = [a for a in MC_ANSWERS[q.type] if a != q.answer]
                options = [q.answer, *(others[int(k)] for k in rng.choice(len(others), size=3, replace=False))]
                options = [options[int(k)] for k in rng.permutation(4)]
                question = q.question.split(" Answer left, right")[0]
                w.writerow([index, question, "", *options, "ABCD"[options.index(q.answer)], q.type, "world", image_b64])
                index += 1
    return [str(path.relative_to(root))]


def mme_question_rows(path: str | os.PathLike) -> list[tuple[str, str, str]]:
    """(image, question, gt) rows of an MME ``Your_Results/<task>.txt`` file (tests and the demo read it)."""
    rows = []
    for lineno, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        parts = line.split("\t")
        if len(parts) != 3:
            raise ConfigError(f"{path}:{lineno}: expected 'image<TAB>question<TAB>gt'; got {len(parts)} fields")
        rows.append((parts[0], parts[1], parts[2]))
    return rows
