"""Hand-made benchmark folders in the official file formats (tiny generated images), for the reader and
harness tests. Layout = the reference's ``internvl_chat/data`` folder (what ``--data`` points at)."""

from __future__ import annotations

import base64
import csv
import io
import json
from pathlib import Path

from PIL import Image

SUFFIX = "Answer the question using a single word or phrase."


def png(color: tuple[int, int, int], size: int = 16) -> Image.Image:
    img = Image.new("RGB", (size, size), color)
    img.putpixel((0, 0), (255 - color[0], 255 - color[1], 255 - color[2]))
    return img


def _color(i: int) -> tuple[int, int, int]:
    return ((37 * i) % 256, (91 * i + 40) % 256, (53 * i + 90) % 256)


def write_mme(root: Path) -> None:
    """existence: 2 images x 2 questions; count: 1 image whose file is missing + 1 with a bad line."""
    res, img = root / "mme" / "Your_Results", root / "mme" / "MME_Benchmark_release_version"
    res.mkdir(parents=True)
    (img / "existence").mkdir(parents=True)
    (img / "count" / "images").mkdir(parents=True)
    for i, name in enumerate(["e1.jpg", "e2.jpg"]):
        png(_color(i)).save(img / "existence" / name, format="JPEG")
    png(_color(5)).save(img / "count" / "images" / "c2.png")
    (res / "existence.txt").write_text(
        "e1.jpg\tIs there a red square in the image? Please answer yes or no.\tYes\n"
        "e1.jpg\tIs there a blue circle in the image? Please answer yes or no.\tNo\n"
        "e2.jpg\tIs there a dog in this image? Please answer yes or no.\tYes\n"
        "e2.jpg\tIs there a cat in this image? Please answer yes or no.\tNo\n",
        encoding="utf-8",
    )
    (res / "count.txt").write_text(
        "c1.jpg\tAre there two squares? Please answer yes or no.\tYes\n"
        "c1.jpg\tAre there three squares? Please answer yes or no.\tNo\n"
        "c2.png\tIs there one circle? Please answer yes or no.\tYes\n"
        "c2.png only two fields\tNo\n",
        encoding="utf-8",
    )


def _b64(img: Image.Image) -> str:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


MMBENCH_HEADER = [
    "index",
    "question",
    "hint",
    "A",
    "B",
    "C",
    "D",
    "answer",
    "category",
    "source",
    "l2-category",
    "comment",
    "split",
    "image",
]


def mmbench_rows() -> list[list[str]]:
    """Question 0 (4 options) with one rotation, question 1 (2 options, a hint) with one rotation, question 2
    (numeric options with an empty cell) and a row that refers to question 0's image by index."""
    img0, img1 = _b64(png(_color(1))), _b64(png(_color(2)))
    return [
        [
            "0",
            "What color is the square?",
            "",
            "red",
            "green",
            "blue",
            "yellow",
            "A",
            "color",
            "syn",
            "attr",
            "",
            "dev",
            img0,
        ],
        [
            "1000000",
            "What color is the square?",
            "",
            "green",
            "blue",
            "yellow",
            "red",
            "D",
            "color",
            "syn",
            "attr",
            "",
            "dev",
            img0,
        ],
        [
            "1",
            "Which shape is shown?",
            "Look at the left.",
            "circle",
            "square",
            "",
            "",
            "B",
            "shape",
            "syn",
            "obj",
            "",
            "dev",
            img1,
        ],
        [
            "1000001",
            "Which shape is shown?",
            "Look at the left.",
            "square",
            "circle",
            "",
            "",
            "A",
            "shape",
            "syn",
            "obj",
            "",
            "dev",
            img1,
        ],
        ["2", "How many squares?", "nan", "1", "2", "3", "", "C", "count", "syn", "obj", "", "dev", "0"],
    ]


def write_mmbench(root: Path, name: str = "mmbench_dev_20230712.tsv", rows: list[list[str]] | None = None) -> Path:
    path = root / "mmbench" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f, delimiter="\t", lineterminator="\n")
        w.writerow(MMBENCH_HEADER)
        w.writerows(rows if rows is not None else mmbench_rows())
    return path


def write_pope(root: Path, per_category: int = 3) -> None:
    """``per_category`` questions each for adversarial and random; labels alternate yes / no."""
    pope = root / "pope"
    (pope / "coco").mkdir(parents=True)
    (pope / "val2014").mkdir()
    questions, labels = [], {"adversarial": [], "random": []}
    qid = 1
    for cat in ("adversarial", "random"):
        for k in range(per_category):
            image = f"COCO_val2014_{qid:012d}.jpg"
            png(_color(qid)).save(pope / "val2014" / image, format="JPEG")
            text = f"Is there a {['dog', 'cat', 'car'][k % 3]} in the image? {SUFFIX}"
            questions.append({"question_id": qid, "image": image, "text": text, "category": cat})
            labels[cat].append(
                {
                    "question_id": k + 1,
                    "image": image,
                    "text": text.split("?")[0] + "?",
                    "label": "yes" if k % 2 == 0 else "no",
                }
            )
            qid += 1
    (pope / "llava_pope_test.jsonl").write_text("".join(json.dumps(q) + "\n" for q in questions))
    for cat, rows in labels.items():
        (pope / "coco" / f"coco_pope_{cat}.json").write_text("".join(json.dumps(r) + "\n" for r in rows))


def write_textvqa(root: Path) -> None:
    tv = root / "textvqa"
    (tv / "train_images").mkdir(parents=True)
    lines, anns = [], []
    for i, (q, answers) in enumerate(
        [
            ("what brand is this?", ["nikon"] * 7 + ["canon"] * 3),
            ("what number is shown?", ["2"] * 4 + ["two"] * 4 + ["3"] * 2),
            ("what does the sign say?", ["stop"] * 10),
        ]
    ):
        png(_color(10 + i)).save(tv / "train_images" / f"t{i}.jpg", format="JPEG")
        lines.append(
            {
                "question_id": 100 + i,
                "image": f"data/textvqa/train_images/t{i}.jpg",
                "question": q,
                "answer": answers[0],
            }
        )
        anns.append({"question_id": 100 + i, "answers": [{"answer": a, "answer_id": j} for j, a in enumerate(answers)]})
    lines.append({"question_id": 104, "image": "data/textvqa/train_images/missing.jpg", "question": "what?"})
    anns.append({"question_id": 104, "answers": [{"answer": "x"}] * 10})
    (tv / "textvqa_val.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines) + "{not json\n")
    (tv / "textvqa_val_annotations.json").write_text(json.dumps({"annotations": anns}))


def write_all(root: Path) -> Path:
    write_mme(root)
    write_mmbench(root)
    write_pope(root)
    write_textvqa(root)
    return root


def write_scienceqa(root: Path) -> None:
    sq = root / "scienceqa"
    (sq / "images" / "test" / "1").mkdir(parents=True)
    (sq / "images" / "test" / "2").mkdir(parents=True)
    png(_color(20)).save(sq / "images" / "test" / "1" / "image.png")
    png(_color(21)).save(sq / "images" / "test" / "2" / "image.png")
    rows = [
        {
            "image": "data/scienceqa/images/test/1/image.png",
            "hint": "",
            "question": "Which is a mammal?",
            "choices": ["frog", "whale", "shark"],
            "answer": 1,
        },
        {
            "image": "data/scienceqa/images/test/2/image.png",
            "hint": "Look at the map.",
            "question": "Which ocean is highlighted?",
            "choices": ["Pacific", "Atlantic"],
            "answer": 0,
        },
        {
            "image": "data/scienceqa/images/test/3/image.png",
            "hint": "",
            "question": "Missing image?",
            "choices": ["a", "b"],
            "answer": 0,
        },
        {
            "image": "data/scienceqa/images/test/1/image.png",
            "hint": "",
            "question": "Bad answer index",
            "choices": ["a", "b"],
            "answer": 5,
        },
    ]
    (sq / "scienceqa_test_img.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def write_seed(root: Path) -> None:
    seed = root / "SEED"
    (seed / "SEED-Bench-image").mkdir(parents=True)
    rows = []
    for i in range(4):
        png(_color(30 + i)).save(seed / "SEED-Bench-image" / f"{i}.png")
        rows.append(
            {
                "question_id": str(i),
                "image": f"SEED-Bench-image/{i}.png",
                "text": f"Question {i}?\nA. x\nB. y\nC. z\nD. w\n"
                "Answer with the option's letter from the given choices directly.",
                "answer": "ABCD"[i],
                "question_type_id": [1, 2, 9, 10][i],
            }
        )
    (seed / "seed.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def write_mmvp(root: Path) -> None:
    mmvp = root / "MMVP"
    (mmvp / "MMVP Images").mkdir(parents=True)
    rows = [
        ("1", "Are the wings open or closed?", "(a) Open (b) Closed", "(a)"),
        ("2", "Are the wings open or closed?", "(a) Open (b) Closed", "(b)"),
        ("3", "Is the dog facing left or right?", "(a) Left (b) Right", "(b)"),
        ("4", "Is the dog facing left or right?", "(a) Left (b) Right", "(a)"),
    ]
    for r in rows:
        png(_color(40 + int(r[0]))).save(mmvp / "MMVP Images" / f"{r[0]}.jpg", format="JPEG")
    with open(mmvp / "Questions.csv", "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(["lndex", "Question", "Options", "Correct Answer"])
        w.writerows(rows)


def write_gqa_vizwiz(root: Path) -> None:
    gqa, viz = root / "gqa", root / "vizwiz"
    (gqa / "images").mkdir(parents=True)
    (viz / "val").mkdir(parents=True)
    (viz / "test").mkdir(parents=True)
    png(_color(50)).save(gqa / "images" / "g1.jpg", format="JPEG")
    rows = [
        {"question_id": "q1", "image": "data/gqa/images/g1.jpg", "question": "Is the sky blue?", "answer": "yes"},
        {
            "question_id": "q2",
            "image": "data/gqa/images/g1.jpg",
            "question": "Which side is the car on?",
            "answer": "left",
        },
    ]
    (gqa / "llava_gqa_testdev_balanced_qwen_format.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    png(_color(51)).save(viz / "val" / "v1.jpg", format="JPEG")
    png(_color(52)).save(viz / "test" / "t1.jpg", format="JPEG")
    (viz / "vizwiz_val.jsonl").write_text(
        json.dumps(
            {"question_id": "data/vizwiz/val/v1.jpg", "image": "data/vizwiz/val/v1.jpg", "question": "What is this?"}
        )
        + "\n"
    )
    (viz / "vizwiz_val_annotations.json").write_text(
        json.dumps(
            {
                "annotations": [
                    {
                        "question_id": "data/vizwiz/val/v1.jpg",
                        "answers": [{"answer": "unanswerable"}] * 6 + [{"answer": "soup"}] * 4,
                    }
                ]
            }
        )
    )
    (viz / "vizwiz_test.jsonl").write_text(
        json.dumps(
            {"question_id": "data/vizwiz/test/t1.jpg", "image": "data/vizwiz/test/t1.jpg", "question": "What is this?"}
        )
        + "\n"
    )


def write_mathvista(root: Path) -> None:
    """Six testmini problems in the HF parquet layout (the last one without image bytes)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    def img(i):
        buf = io.BytesIO()
        png(_color(60 + i)).save(buf, format="PNG")
        return {"bytes": buf.getvalue(), "path": f"{i}.png"}

    rows = [
        ("1", "multi_choice", "text", ["12", "15", "18"], None, "15"),
        ("2", "free_form", "integer", None, None, "3"),
        ("3", "free_form", "float", None, 1.0, "2.5"),
        ("4", "free_form", "integer", None, None, "7"),
        ("5", "multi_choice", "text", ["cat", "dog"], None, "dog"),
        ("6", "multi_choice", "text", ["a", "b"], None, "a"),
    ]
    table = pa.table(
        {
            "pid": [r[0] for r in rows],
            "question": [f"question {r[0]}" for r in rows],
            "query": [f"Hint: answer it.\nQuestion: question {r[0]}" for r in rows],
            "decoded_image": [img(i) if r[0] != "6" else {"bytes": None, "path": None} for i, r in enumerate(rows)],
            "choices": [r[3] for r in rows],
            "precision": [r[4] for r in rows],
            "answer": [r[5] for r in rows],
            "question_type": [r[1] for r in rows],
            "answer_type": [r[2] for r in rows],
            "metadata": [{"task": "math word problem"} for _ in rows],
        }
    )
    out = root / "MathVista" / "data"
    out.mkdir(parents=True)
    pq.write_table(table, out / "testmini-00000-of-00001-test.parquet")


def write_mmmu(root: Path) -> None:
    """Two subjects of the MMMU validation split in the HF parquet layout."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    def img(i):
        buf = io.BytesIO()
        png(_color(70 + i)).save(buf, format="PNG")
        return {"bytes": buf.getvalue(), "path": f"{i}.png"}

    subjects = {
        "Art_Theory": [
            (
                "validation_Art_Theory_1",
                "<image 1> Which style is this?",
                "['Baroque', 'Cubism']",
                "B",
                "multiple-choice",
            )
        ],
        "Math": [
            ("validation_Math_1", "What is 6*7? <image 1>", "[]", "42", "open"),
            ("validation_Math_2", "Name the shape.", "[]", "['square', 'quadrilateral']", "open"),
        ],
    }
    for k, (subject, rows) in enumerate(subjects.items()):
        table = pa.table(
            {
                "id": [r[0] for r in rows],
                "question": [r[1] for r in rows],
                "options": [r[2] for r in rows],
                "answer": [r[3] for r in rows],
                "question_type": [r[4] for r in rows],
                "image_1": [img(10 * k + i) for i in range(len(rows))],
            }
        )
        out = root / "MMMU" / subject
        out.mkdir(parents=True)
        pq.write_table(table, out / "validation-00000-of-00001.parquet")
