"""`train`, `data`, `eval bench` and `serve` check their paths and option values before the model stack
loads (issue 16): each mistake exits 2 with one ``error: ...`` line naming the file or option, no
traceback, and torch is not even imported when the mistake is a path."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import internvl
from internvl.cli.main import main
from tests.integration.test_eval_cli import world  # noqa: F401 (tiny C/G model + Flickr/COCO-format data)

pytestmark = pytest.mark.integration

SRC = str(Path(internvl.__file__).resolve().parents[1])


def _one_line_error(err: str, *needles: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert "Traceback" not in err, err
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and len(lines) == 1, err
    for n in needles:
        assert n in errors[0], (n, errors[0])
    return errors[0]


@pytest.fixture
def place(tmp_path):
    """A file, an empty folder, a folder with a config.json and a meta JSON, as a user's mistakes need them."""
    (tmp_path / "afile.txt").write_text("not a folder\n")
    (tmp_path / "empty").mkdir()
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "config.json").write_text("{}")
    (tmp_path / "meta.json").write_text("{}")
    (tmp_path / "ann.jsonl").write_text(json.dumps({"conversations": [{"from": "human", "value": "hi"}]}) + "\n")
    return tmp_path


def _cases(p: Path) -> list[tuple[list[str], tuple[str, ...]]]:
    meta = f"data.meta_path={p / 'meta.json'}"
    return [
        # train retrieval
        (["train", "retrieval", "tiny_synthetic", "--set", f"model.path={p / 'nope'}"], ("model.path=", "config.json")),
        (
            ["train", "retrieval", "tiny_synthetic", "--set", "model.path=OpenGVLab/InternVL-14B-224px", "--dry-run"],
            ("model.path=OpenGVLab/InternVL-14B-224px", "hub id"),
        ),
        (
            ["train", "retrieval", "tiny_synthetic", "--set", f"model.path={p / 'ckpt'}"]
            + ["--set", f"data.registry=[{p / 'missing.yaml'}]"],
            ("data.registry[0]=", "missing.yaml", "no such file"),
        ),
        (
            ["train", "retrieval", "tiny_synthetic", "--set", f"model.path={p / 'ckpt'}"]
            + ["--set", f"log.output_dir={p / 'afile.txt'}"],
            ("log.output_dir=", "afile.txt", "is a file"),
        ),
        # train sft
        (["train", "sft", "tiny_synthetic", "--set", meta, "--set", f"model.path={p / 'empty'}"], ("model.path=",)),
        (
            ["train", "sft", "tiny_synthetic", "--set", f"data.meta_path={p / 'nope.json'}"]
            + ["--set", f"model.path={p / 'ckpt'}"],
            ("data.meta_path=", "nope.json", "no such file"),
        ),
        (
            ["train", "sft", "tiny_synthetic", "--set", meta, "--set", "model.path="]
            + ["--set", f"model.vision_path={p / 'ckpt'}", "--set", f"model.llm_path={p / 'nope'}"],
            ("model.llm_path=", "nope"),
        ),
        (
            ["train", "sft", "tiny_synthetic", "--set", meta, "--set", "model.path="]
            + ["--set", f"model.vision_path={p / 'ckpt'}", "--set", f"model.llm_path={p / 'ckpt'}"]
            + ["--set", f"model.mlp_path={p / 'mlp.pth'}"],
            ("model.mlp_path=", "mlp.pth"),
        ),
        # data check / convert-boxes / synth
        (["data", "check", str(p / "nope.json"), "--model", str(p / "ckpt")], ("nope.json", "not found")),
        (["data", "check", str(p / "meta.json"), "--model", str(p / "nope")], ("--model", "nope")),
        (["data", "check", str(p / "meta.json"), "--model", str(p / "empty")], ("--model", "config.json")),
        (["data", "check", str(p / "meta.json"), "--tokenizer", str(p / "afile.txt")], ("--tokenizer", "afile.txt")),
        (
            [
                "data",
                "check",
                str(p / "meta.json"),
                "--model",
                str(p / "ckpt"),
                "--report",
                f"{p / 'afile.txt'}/r.json",
            ],
            ("--report", "afile.txt is a file"),
        ),
        (
            ["data", "check", str(p / "meta.json"), "--model", str(p / "ckpt"), "--template", "hermes-2"],
            ("--template 'hermes-2'", "did you mean 'Hermes-2'"),
        ),
        (["data", "convert-boxes", str(p / "nope.jsonl"), "-o", str(p / "o.jsonl")], ("nope.jsonl",)),
        (["data", "convert-boxes", str(p / "ann.jsonl"), "-o", f"{p / 'afile.txt'}/"], ("--output", "afile.txt")),
        (["data", "synth", "--out", str(p / "afile.txt")], ("--out", "afile.txt", "is a file")),
        # eval bench
        (
            ["eval", "bench", "-b", "mme", "--model", str(p / "nope"), "--data", str(p), "--output", str(p / "o")],
            ("--model", "nope"),
        ),
        (
            ["eval", "bench", "-b", "mme", "--model", str(p / "ckpt"), "--data", str(p / "nod"), "--output", str(p)],
            ("--data", "nod", "no such folder"),
        ),
        (
            ["eval", "bench", "-b", "mme", "--model", str(p / "ckpt"), "--data", str(p), "-o", str(p / "afile.txt")],
            ("--output", "afile.txt", "is a file"),
        ),
        # serve
        (["serve", str(p / "nope")], ("MODEL_DIR", "nope", "no such folder")),
        (["serve", str(p / "afile.txt")], ("MODEL_DIR", "afile.txt", "is a file")),
        (["serve", str(p / "empty")], ("MODEL_DIR", "config.json")),
        (["serve", "OpenGVLab/InternVL-Chat-V1-2"], ("OpenGVLab/InternVL-Chat-V1-2", "hub id")),
    ]


def test_path_mistakes_are_one_line_errors_before_torch_is_imported(place):
    """All cases in one child process: each `main(argv)` must return 2 with torch still not imported."""
    cases = _cases(place)
    script = (
        "import json, sys\n"
        "from internvl.cli.main import main\n"
        "for argv in json.loads(sys.argv[1]):\n"
        "    rc = main(argv)\n"
        "    print(json.dumps([rc, 'torch' in sys.modules]), flush=True)\n"
        "    print('@@', file=sys.stderr, flush=True)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script, json.dumps([argv for argv, _ in cases])],
        env={"PYTHONPATH": SRC, "PATH": "/usr/bin:/bin"},
        cwd=place,
        capture_output=True,
        text=True,
        timeout=120,
    )
    results = [json.loads(line) for line in proc.stdout.splitlines()]
    errs = proc.stderr.split("@@\n")
    assert len(results) == len(cases), proc.stderr
    for (argv, needles), (rc, torch_loaded), err in zip(cases, results, errs, strict=False):
        assert rc == 2, (argv, err)
        _one_line_error(err, *needles)
        assert not torch_loaded, f"{argv}: torch was imported before the mistake was reported"
    assert not (place / "o.jsonl").exists()


def test_serve_option_values_are_checked_before_loading(place, capsys):
    ckpt = str(place / "ckpt")  # a config.json only: loading it would fail, so reaching the load is a bug
    assert main(["serve", ckpt, "--dtype", "fp8"]) == 2
    _one_line_error(capsys.readouterr().err, "--dtype fp8", "bf16")
    import torch

    if not torch.cuda.is_available():
        assert main(["serve", ckpt, "--device", "cuda"]) == 2
        _one_line_error(capsys.readouterr().err, "--device cuda", "CUDA")
    assert main(["serve", ckpt, "--device", "cpu:x"]) == 2
    _one_line_error(capsys.readouterr().err, "--device", "cpu:x")


def test_serve_mode_is_case_insensitive(tmp_path):
    """`serve --mode internvl-g` is `--mode InternVL-G` (one parser for every verb); the command's own
    argument parsing is run, without starting a server."""
    import typer

    from internvl.cli.main import build_app

    serve = typer.main.get_command(build_app()).commands["serve"]
    for spelling, expected in (("internvl-g", "InternVL-G"), ("G", "InternVL-G"), ("INTERNVL-C", "InternVL-C")):
        ctx = serve.make_context("serve", [str(tmp_path), "--mode", spelling])
        assert ctx.params["mode"] == expected
    assert serve.make_context("serve", [str(tmp_path)]).params["mode"] == "InternVL-C"


def test_convert_boxes_into_a_folder_keeps_the_input_name(place, capsys):
    out = place / "converted"
    out.mkdir()
    assert main(["data", "convert-boxes", str(place / "ann.jsonl"), "-o", str(out), "--report", f"{out}/"]) == 0
    assert (out / "ann.jsonl").read_text() == (place / "ann.jsonl").read_text()
    assert json.loads((out / "convert_report.json").read_text())["records"] == 1
    assert main(["data", "convert-boxes", str(place / "ann.jsonl"), "-o", str(place)]) == 2  # would overwrite it
    _one_line_error(capsys.readouterr().err, "ann.jsonl", "not the input")


def test_caption_verbs_share_one_batch_size_default():
    """`caption`, `eval caption` and the Python API take their batch size (and generation defaults) from
    one place, so they cannot drift apart again."""
    import inspect

    import typer

    from internvl.cli.main import build_app
    from internvl.core.caption_defaults import CAPTION_BATCH_SIZE, GENERATION
    from internvl.evaluation.captioning import caption_dataset, run_caption_eval

    app = typer.main.get_command(build_app())
    verbs = {"caption": app.commands["caption"], "eval caption": app.commands["eval"].commands["caption"]}
    for name, command in verbs.items():
        defaults = {p.name: p.default for p in command.params}
        assert defaults["batch_size"] == CAPTION_BATCH_SIZE == 8, name
        assert {k: defaults[k] for k in GENERATION} == GENERATION, name
    for fn in (run_caption_eval, caption_dataset):
        assert inspect.signature(fn).parameters["batch_size"].default == CAPTION_BATCH_SIZE


@pytest.mark.parametrize("verb", ["retrieval", "caption"])
def test_missing_dataset_images_are_one_line_naming_the_file(world, verb, tmp_path, capsys):  # noqa: F811
    """With the default DataLoader workers: one line naming the first missing file (and the count), before
    the model loads; nothing is written."""
    import shutil

    data = tmp_path / "data"
    shutil.copytree(world / "data", data)
    if verb == "retrieval":
        missing = [data / "flickr30k" / "Images" / f"{1000 + i}.jpg" for i in (1, 3, 4, 5)]
        args = ["--dataset", "flickr30k", "--output", str(tmp_path / "out" / "r.json")]
    else:
        missing = [data / "coco" / "val2014" / "COCO_val2014_000000391896.jpg"]
        args = ["--dataset", "coco", "--output", str(tmp_path / "out"), "--no-score"]
    for f in missing:
        f.unlink()
    rc = main(["eval", verb, "--model", str(world / "model"), "--data-root", str(data), *args])
    assert rc == 2
    line = _one_line_error(capsys.readouterr().err, str(missing[0]), f"{len(missing)} of ", "--data-root")
    if verb == "retrieval":
        assert str(missing[1]) in line and "and 1 more" in line
    assert not (tmp_path / "out").exists()
