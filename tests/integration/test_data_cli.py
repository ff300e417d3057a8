"""`internvl data check` on deliberately broken data (one test per failure kind) and `data convert-boxes`."""

from __future__ import annotations

import io
import json

import pytest

from internvl.cli.main import main
from internvl.data.synthetic import CHAT_SPECIAL_TOKENS, build_tokenizer, synthetic_image

Q = {"from": "human", "value": "what is in the image?"}
A = {"from": "gpt", "value": "a dog runs"}
GOOD = {"image": "a.png", "conversations": [Q, A]}


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory):
    return build_tokenizer(
        tmp_path_factory.mktemp("tok"),
        special_tokens=CHAT_SPECIAL_TOKENS,
        chat_template_tokens=("<|im_start|>", "<|im_end|>"),
        add_bos_token=False,
    )


@pytest.fixture
def world(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    synthetic_image(0, 64).save(images / "a.png")
    buf = io.BytesIO()
    synthetic_image(1, 64).save(buf, format="PNG")
    (images / "truncated.png").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    (images / "garbage.png").write_bytes(b"this is not an image")
    return tmp_path


def _run(world, tok_dir, records, *extra, name="mix"):
    ann = world / f"{name}.jsonl"
    ann.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    meta = world / "meta.json"
    meta.write_text(json.dumps({name: {"root": "images", "annotation": f"{name}.jsonl", "repeat_time": 2}}))
    report = world / "report.json"
    code = main(
        [
            "data",
            "check",
            str(meta),
            "--tokenizer",
            str(tok_dir),
            "--num-image-token",
            "4",
            "--image-size",
            "28",
            "--report",
            str(report),
            *extra,
        ]
    )
    return code, json.loads(report.read_text()), ann


BROKEN = {
    "bad_json": ('{"image": "a.png", "conversations": [', "invalid JSON at column"),
    "bad_record": ({"image": "a.png", "conversations": "hi"}, "'conversations' must be a non-empty list"),
    "image": ({"image": "missing.png", "conversations": [Q, A]}, "image file not found"),
    "image_unreadable": ({"image": "garbage.png", "conversations": [Q, A]}, "cannot read image"),
    "image_truncated": ({"image": "truncated.png", "conversations": [Q, A]}, "truncated"),
    "placeholder_mismatch": (
        {"image": ["a.png", "a.png"], "conversations": [{"from": "human", "value": "<image> only one"}, A]},
        "1 <image> placeholder(s) in the human turns but 2 image(s)",
    ),
    "placeholder_in_answer": ({"conversations": [Q, {"from": "gpt", "value": "look: <image>"}]}, "contains <image>"),
    "empty_answer": ({"conversations": [Q, {"from": "gpt", "value": " "}]}, "turn 1: the gpt answer is empty"),
    "unknown_role": ({"conversations": [Q, {"from": "bot", "value": "x"}]}, "turn 1: unknown role 'bot'"),
    "alternation": ({"conversations": [Q, A, A]}, "turn 2: expected a human turn, got gpt"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_check_reports_each_failure_kind_with_its_location(world, tok_dir, case, capsys):
    bad, message = BROKEN[case]
    code, report, ann = _run(world, tok_dir, [GOOD, "", bad])
    assert code == 2 and not report["ok"]
    [problem] = report["problems"]
    assert problem["kind"] == case.split("_")[0] if case.startswith("image") else problem["kind"] == case
    assert problem["source"] == f"{ann}:3" and problem["dataset"] == "mix"  # the blank line 2 keeps numbering
    assert message in problem["message"] and problem["message"].startswith(f"{ann}:3")
    [summary] = report["datasets"]
    assert summary["records"] == 2 and summary["samples"] == 4  # repeat_time 2: each line checked once
    assert summary["problems"] == {problem["kind"]: 1}
    err = capsys.readouterr().err
    assert f"{ann}:3" in err and message.split(" (")[0] in err


def test_check_over_length_rejects_image_cuts_and_warns_on_text_cuts(world, tok_dir, capsys):
    late_image = {"image": "a.png", "conversations": [{"from": "human", "value": "two cats sit " * 10 + "<image>"}, A]}
    long_text = {"conversations": [Q, {"from": "gpt", "value": "a dog runs on the green grass " * 10}]}
    code, report, ann = _run(world, tok_dir, [late_image, long_text, GOOD], "--max-length", "200")
    assert code == 2
    [problem] = report["problems"]
    assert problem["kind"] == "over_length" and problem["source"] == f"{ann}:1"
    assert "cut the image block" in problem["message"]
    [warning] = report["warnings"]
    assert warning["kind"] == "truncated" and warning["source"] == f"{ann}:2"
    assert report["datasets"][0]["truncated"] == 1


def test_check_clean_mixture_exits_0_with_the_table(world, tok_dir, capsys):
    text_only = {"conversations": [Q, A, {"from": "human", "value": "and?"}, {"from": "gpt", "value": "two cats"}]}
    code, report, _ = _run(world, tok_dir, [GOOD, text_only, GOOD])
    assert code == 0 and report["ok"] and report["problems"] == []
    [summary] = report["datasets"]
    assert summary["records"] == 3 and summary["images"] == 2 and summary["tokens"] > 0
    out = capsys.readouterr().out
    assert "mix" in out and "est. tokens" in out
    # --headers-only still finds missing files but not truncated ones
    code, report, _ = _run(world, tok_dir, [{"image": "truncated.png", "conversations": [Q, A]}], "--headers-only")
    assert code == 0


def test_check_usage_errors_exit_2(world, tok_dir, capsys):
    (world / "meta.json").write_text("{}")
    assert main(["data", "check", str(world / "meta.json"), "--tokenizer", str(tok_dir)]) == 2
    assert "non-empty object" in capsys.readouterr().err
    assert main(["data", "check", str(world / "meta.json")]) == 2  # no tokenizer


def test_convert_boxes(tmp_path, capsys):
    records = [
        {
            "id": 0,
            "conversations": [
                {
                    "from": "human",
                    "value": "Please provide the bounding box coordinate of the region this sentence "
                    "describes: man in red.",
                },
                {"from": "gpt", "value": "[0.12, 0.3, 0.556, 1.0]"},
            ],
        },
        {
            "id": 1,
            "conversations": [  # already converted: left alone, byte for byte
                {"from": "human", "value": "<ref>the dog</ref>"},
                {"from": "gpt", "value": "<box>[[120, 300, 556, 1000], [1, 2, 3, 4]]</box>"},
            ],
        },
        {
            "id": 2,
            "conversations": [  # not boxes: integers, out of range, x1 > x2
                {"from": "human", "value": "sizes [1, 0, 0, 1] and [0.5, 0.2, 1.5, 0.9] and [0.5, 0.2, 0.4, 0.9]"},
                {"from": "gpt", "value": "region [0.1, 0.2, 0.3, 0.4] then [.5, .5, .75, .75], 中文"},
            ],
        },
    ]
    src = tmp_path / "refcoco.jsonl"
    lines = [json.dumps(r, ensure_ascii=False) for r in records]
    lines[1] = lines[1].replace(", ", ",  ")  # odd spacing shows the unchanged line is copied verbatim
    src.write_text("\n".join(lines) + "\n")
    dst, report = tmp_path / "out" / "refcoco_box.jsonl", tmp_path / "report.json"
    assert main(["data", "convert-boxes", str(src), "-o", str(dst), "--report", str(report)]) == 0
    out_lines = dst.read_text().split("\n")
    got = [json.loads(line) for line in out_lines if line]
    assert got[0]["conversations"][1]["value"] == "<box>[[120, 300, 556, 1000]]</box>"
    assert got[0]["conversations"][0] == records[0]["conversations"][0]
    assert out_lines[1] == lines[1]
    assert got[2]["conversations"][0]["value"] == records[2]["conversations"][0]["value"]
    assert (
        got[2]["conversations"][1]["value"]
        == "region <box>[[100, 200, 300, 400]]</box> then <box>[[500, 500, 750, 750]]</box>, 中文"
    )
    rep = json.loads(report.read_text())
    assert (rep["records"], rep["records_changed"], rep["boxes_converted"], rep["boxes_already_converted"]) == (
        3,
        2,
        3,
        2,
    )
    assert rep["changed_lines"] == [1, 3]
    assert "3 boxes converted" in capsys.readouterr().out
    # converting the output again changes nothing
    again = tmp_path / "again.jsonl"
    assert main(["data", "convert-boxes", str(dst), "-o", str(again), "--report", str(report)]) == 0
    assert again.read_text() == dst.read_text() and json.loads(report.read_text())["boxes_converted"] == 0


def test_convert_boxes_errors(tmp_path, capsys):
    src = tmp_path / "a.jsonl"
    src.write_text(json.dumps({"conversations": []}) + "\n{oops\n")
    assert main(["data", "convert-boxes", str(src), "-o", str(tmp_path / "b.jsonl")]) == 2
    assert f"{src}:2: invalid JSON" in capsys.readouterr().err
    assert main(["data", "convert-boxes", str(src), "-o", str(src)]) == 2
    assert "must be a new file" in capsys.readouterr().err


def test_check_reads_template_and_tiling_from_a_model_dir(world, tok_dir, capsys):
    import shutil

    from internvl.models.internvl_chat import tiny_chat_config

    model = world / "model"
    shutil.copytree(tok_dir, model)
    cfg = tiny_chat_config(vocab_size=512, image_size=28, template="internvl2_5").to_dict()
    (model / "config.json").write_text(json.dumps(cfg))
    (world / "a.jsonl").write_text(json.dumps(GOOD) + "\n")
    (world / "meta.json").write_text(json.dumps({"mix": {"root": "images", "annotation": "a.jsonl"}}))
    report = world / "r.json"
    assert main(["data", "check", str(world / "meta.json"), "--model", str(model), "--report", str(report)]) == 0
    assert "template internvl2_5" in capsys.readouterr().out
    with_model = json.loads(report.read_text())["datasets"][0]["tokens"]
    # 28 px tiles with pixel shuffle 0.5 -> 1 visual token per tile; 256 per tile by default
    assert (
        main(
            [
                "data",
                "check",
                str(world / "meta.json"),
                "--tokenizer",
                str(tok_dir),
                "--template",
                "internvl2_5",
                "--image-size",
                "28",
                "--report",
                str(report),
            ]
        )
        == 0
    )
    assert json.loads(report.read_text())["datasets"][0]["tokens"] == with_model + 255
    assert main(["data", "check", str(world / "meta.json"), "--model", str(world / "images")]) == 2
    assert "no config.json" in capsys.readouterr().err
