"""The CLI as users meet it (issue 16): user errors exit 2 with one line naming the file or option and no
traceback, Ctrl-C exits 130 saying what was kept, batch jobs keep their good results, and inputs are
checked before the model loads."""

from __future__ import annotations

import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import pytest
import torch

import internvl
from internvl.cli.main import main
from internvl.data.synthetic import build_tokenizer, synthetic_image
from internvl.data.tokenization import InternVLTextTokenizer
from internvl.models.internvl_cg import build_internvl, internvl_cg_tiny
from tests.integration.test_eval_cli import world  # noqa: F401 (the tiny datasets + model fixture)

pytestmark = pytest.mark.integration

SRC = str(Path(internvl.__file__).resolve().parents[1])


def _sigint_as_a_terminal_delivers_it() -> None:
    """Child pre-exec: SIGINT back to its default. A job started in the background (``cmd &``, some CI
    runners) inherits SIGINT as ignored, and Python then never installs its KeyboardInterrupt handler, so
    the interrupt these tests send would be dropped and the command would finish with status 0."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("cg_tiny")
    build_tokenizer(root)
    vocab = len(InternVLTextTokenizer.from_pretrained(root).tokenizer)
    build_internvl(internvl_cg_tiny(vocab_size=vocab), seed=0).save_pretrained(root)
    return root


def _images(folder: Path, n: int, size: int = 40) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        synthetic_image(i, size=size).convert("RGB").save(folder / f"img{i:03d}.jpg", quality=90)
    return folder


def _truncated_jpeg(path: Path) -> Path:
    buf = path.with_suffix(".full.jpg")
    synthetic_image(99, size=64).convert("RGB").save(buf, quality=95)
    data = buf.read_bytes()
    buf.unlink()
    path.write_bytes(data[: len(data) // 2])  # an interrupted copy: valid header, half the scan data
    return path


def _png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG claiming width x height (a decompression bomb's header) with no pixel data: a few bytes."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")
    )
    return path


def _one_line_error(err: str, *needles: str) -> str:
    """Assert ``err`` is exactly one ``error: ...`` line containing every needle; no traceback."""
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert "Traceback" not in err, err
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1, err
    for n in needles:
        assert n in errors[0], (n, errors[0])
    return errors[0]


# --- 1. Ctrl-C ---------------------------------------------------------------------------------------------


def test_sigint_during_caption_exits_130_keeps_the_finished_captions_and_a_rerun_resumes(model_dir, tmp_path, capsys):
    images = _images(tmp_path / "imgs", 60)
    out = tmp_path / "caps.json"
    partial = tmp_path / "caps.json.partial.jsonl"
    argv = [
        "caption",
        str(model_dir),
        str(images),
        "--output",
        str(out),
        "--batch-size",
        "1",
        "--device",
        "cpu",
        "--min-new-tokens",
        "30",
        "--max-new-tokens",
        "30",
        "--num-beams",
        "2",
    ]
    env = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "internvl.cli.main", *argv],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_sigint_as_a_terminal_delivers_it,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if partial.exists() and partial.read_text().count("\n") >= 3:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "finished before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    note = [line for line in err.splitlines() if line.startswith("interrupted: ")]
    assert len(note) == 1 and str(partial) in note[0] and "run the same command again" in note[0], err
    assert not out.exists()
    kept = [json.loads(line) for line in partial.read_text().splitlines()]
    assert 3 <= len(kept) < 60

    capsys.readouterr()
    assert main(argv) == 0
    stdout = capsys.readouterr().out
    assert f"resuming: {len(kept)} of 60 captions already in" in stdout
    records = json.loads(out.read_text())
    assert [r["image"] for r in records] == sorted(p.name for p in images.iterdir())
    assert records[: len(kept)] == kept  # reused, not regenerated


def test_ctrl_c_to_the_process_group_of_eval_caption_with_workers_exits_130_and_resumes(model_dir, tmp_path, capsys):
    """A terminal's Ctrl-C reaches the DataLoader workers too (the whole process group)."""
    images = _images(tmp_path / "data" / "images", 120)
    lines = ["image,caption"] + [f"{p.name},a picture number {i}" for i, p in enumerate(sorted(images.iterdir()))]
    (tmp_path / "data" / "test.txt").write_text("\n".join(lines) + "\n")
    registry = tmp_path / "data" / "registry.yaml"
    registry.write_text(
        "datasets:\n  - name: many\n    root: images\n    annotation: test.txt\n    format: flickr_format\n"
    )
    out = tmp_path / "res"
    argv = [
        "eval",
        "caption",
        "--model",
        str(model_dir),
        "--registry",
        str(registry),
        "--dataset",
        "many",
        "--output",
        str(out),
        "--no-score",
        "--num-workers",
        "2",
        "--device",
        "cpu",
        "--num-beams",
        "2",
    ]
    env = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "internvl.cli.main", *argv],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        preexec_fn=_sigint_as_a_terminal_delivers_it,
    )
    partial = out / "many_captions.partial.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if partial.exists() and partial.read_text().count("\n") >= 3:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "finished before it could be interrupted"
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "Traceback" not in err, err
    notes = [line for line in err.splitlines() if line.startswith("interrupted: ")]
    assert len(notes) == 1 and notes[0].startswith(f"interrupted: the captions finished so far are in {out}"), err
    kept = partial.read_text().count("\n")
    assert 3 <= kept < 120
    capsys.readouterr()
    assert main([*argv[:-6], "--num-workers", "0", "--device", "cpu", "--num-beams", "2"]) == 0
    assert f"{kept} captions reused" in capsys.readouterr().out.replace("\n", " ")
    assert len(json.loads((out / "many_captions.json").read_text())) == 120


def test_ctrl_c_inside_any_command_is_130_with_a_default_note(model_dir, monkeypatch, capsys):
    import rich.console

    def pressed_ctrl_c(*args, **kwargs):  # the user hits Ctrl-C while the table is printed
        raise KeyboardInterrupt

    monkeypatch.setattr(rich.console.Console, "print", pressed_ctrl_c)
    assert main(["info", str(model_dir)]) == 130
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1] == "interrupted: nothing was saved" and "Traceback" not in err


# --- 2. --output: one rule, checked before the work ---------------------------------------------------------


def test_output_folder_gets_the_documented_file_and_a_trailing_slash_is_a_folder(model_dir, world, tmp_path):  # noqa: F811
    images = _images(tmp_path / "imgs", 2)
    folder = tmp_path / "existing"
    folder.mkdir()
    assert (
        main(
            [
                "caption",
                str(model_dir),
                str(images),
                "-o",
                str(folder),
                "--device",
                "cpu",
                "--max-new-tokens",
                "8",
                "--num-beams",
                "1",
            ]
        )
        == 0
    )
    assert [r["image"] for r in json.loads((folder / "captions.json").read_text())] == ["img000.jpg", "img001.jpg"]
    assert (
        main(
            [
                "classify",
                str(model_dir),
                str(images / "img000.jpg"),
                "--classes",
                "dog,cat",
                "-o",
                str(folder),
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    assert json.loads((folder / "predictions.json").read_text())[0]["image"].endswith("img000.jpg")

    newres = tmp_path / "newres"
    assert (
        main(
            [
                "eval",
                "retrieval",
                "--model",
                str(world / "model"),
                "--data-root",
                str(world / "data"),
                "--num-workers",
                "0",
                "--output",
                str(newres) + "/",
            ]
        )
        == 0
    )
    assert newres.is_dir()
    assert json.loads((newres / "flickr30k_en_retrieval.json").read_text())["dataset"] == "flickr30k_en_test"
    assert (
        main(
            [
                "eval",
                "retrieval",
                "--model",
                str(world / "model"),
                "--data-root",
                str(world / "data"),
                "--num-workers",
                "0",
                "--output",
                str(folder),
            ]
        )
        == 0
    )
    assert (folder / "flickr30k_en_retrieval.json").is_file()


def test_eval_caption_output_that_is_a_file_is_refused_before_work(world, tmp_path, capsys):  # noqa: F811
    f = tmp_path / "results.json"
    f.write_text("{}")
    assert (
        main(
            [
                "eval",
                "caption",
                "--model",
                str(world / "model"),
                "--dataset",
                "coco",
                "--data-root",
                str(world / "data"),
                "--output",
                str(f),
            ]
        )
        == 2
    )
    _one_line_error(capsys.readouterr().err, "--output", str(f), "folder")
    assert f.read_text() == "{}"


# --- 3. one bad image in a batch job -----------------------------------------------------------------------


def test_caption_skips_a_truncated_jpeg_writes_the_good_captions_and_exits_2(model_dir, tmp_path, capsys):
    images = _images(tmp_path / "imgs", 3)
    _truncated_jpeg(images / "img001b.jpg")
    out = tmp_path / "caps.json"
    argv = [
        "caption",
        str(model_dir),
        str(images),
        "-o",
        str(out),
        "--device",
        "cpu",
        "--max-new-tokens",
        "8",
        "--num-beams",
        "1",
        "--batch-size",
        "2",
    ]
    assert main(argv) == 2
    captured = capsys.readouterr()
    _one_line_error(captured.err, "1 of 4 images", "img001b.jpg", str(out))
    records = json.loads(out.read_text())
    good = [r for r in records if r["caption"] is not None]
    assert [r["image"] for r in good] == ["img000.jpg", "img001.jpg", "img002.jpg"]
    assert all(isinstance(r["caption"], str) for r in good)
    (bad,) = [r for r in records if r["caption"] is None]
    assert bad["image"] == "img001b.jpg" and "img001b.jpg" in bad["error"]
    assert "wrote" in captured.out and "3 captions" in captured.out


def test_caption_strict_rejects_a_truncated_jpeg_before_any_work(model_dir, tmp_path, capsys):
    images = _images(tmp_path / "imgs", 2)
    _truncated_jpeg(images / "broken.jpg")
    out = tmp_path / "caps.json"
    assert main(["caption", str(model_dir), str(images), "-o", str(out), "--strict", "--device", "cpu"]) == 2
    _one_line_error(capsys.readouterr().err, "broken.jpg")
    assert not out.exists() and not out.with_name("caps.json.partial.jsonl").exists()


# --- 4. huge, corrupt and non-image files --------------------------------------------------------------------


@pytest.mark.parametrize("side", [20000, 12000])
def test_huge_images_are_refused_from_the_header_in_classify_embed_and_chat(model_dir, tmp_path, capsys, side):
    big = _png_header_only(tmp_path / f"big{side}.png", side, side)
    assert big.stat().st_size < 200
    for argv in (
        ["classify", str(model_dir), str(big), "--classes", "a,b"],
        ["embed", str(model_dir), "--image", str(big), "-o", str(tmp_path / "e.npy")],
        ["chat", str(tmp_path), "--image", str(big), "hi"],
    ):
        assert main(argv) == 2, argv
        _one_line_error(capsys.readouterr().err, str(big), f"{side}x{side}", "--max-image-pixels")


def test_max_image_pixels_raises_the_limit(model_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("INTERNVL_MAX_IMAGE_PIXELS", raising=False)
    big = _png_header_only(tmp_path / "big.png", 12000, 12000)
    small = _images(tmp_path / "imgs", 1, size=64) / "img000.jpg"
    assert main(["--max-image-pixels", "1000", "classify", str(model_dir), str(small), "--classes", "a"]) == 2
    _one_line_error(capsys.readouterr().err, "64x64", "limit of 1,000")
    # Raised: the header passes and the (empty) pixel data is what fails, while decoding, still cleanly.
    assert (
        main(
            [
                "--max-image-pixels",
                "200000000",
                "classify",
                str(model_dir),
                str(big),
                "--classes",
                "a",
                "--device",
                "cpu",
            ]
        )
        == 2
    )
    line = _one_line_error(capsys.readouterr().err, str(big))
    assert "over the limit" not in line


def test_non_image_and_missing_files_are_reported_before_the_model_loads(tmp_path, capsys):
    text = tmp_path / "notes.jpg"
    text.write_text("not an image")
    # tmp_path has no checkpoint at all: an image error proves the images were checked first.
    assert main(["classify", str(tmp_path), str(text), "--classes", "a"]) == 2
    _one_line_error(capsys.readouterr().err, str(text), "cannot read image")
    assert main(["embed", str(tmp_path), "--image", str(tmp_path / "nope.png"), "-o", str(tmp_path / "e.npy")]) == 2
    _one_line_error(capsys.readouterr().err, "nope.png", "not found")


@pytest.mark.parametrize("verb", ["retrieval", "caption"])
@pytest.mark.parametrize("damage", ["truncated", "bomb"])
def test_a_bad_image_in_an_eval_dataset_with_workers_is_one_line(world, tmp_path, capsys, damage, verb):  # noqa: F811
    data = tmp_path / "data"
    folder = "flickr30k" if verb == "retrieval" else "coco"
    shutil.copytree(world / "data" / folder, data / folder)
    victim = data / "flickr30k" / "Images" / "1003.jpg"
    if verb == "caption":
        victim = data / "coco" / "val2014" / "COCO_val2014_000000391897.jpg"
    if damage == "truncated":
        victim.write_bytes(victim.read_bytes()[:100])
    else:
        _png_header_only(victim, 20000, 20000)
    common = ["--model", str(world / "model"), "--data-root", str(data), "--num-workers", "2", "--batch-size", "2"]
    if verb == "retrieval":
        argv = ["eval", "retrieval", *common, "--output", str(tmp_path / "r.json")]
    else:
        argv = ["eval", "caption", *common, "-d", "coco", "-o", str(tmp_path / "c"), "--no-score"]
        argv += ["--num-beams", "1", "--min-new-tokens", "1", "--max-new-tokens", "2"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    line = _one_line_error(err, victim.name)  # on a line of its own, not glued to the progress bar
    assert "DataLoader worker" not in line and err.count(victim.name) == 1


# --- 5. truncated or garbage weights -----------------------------------------------------------------------


def test_truncated_and_garbage_weights_are_named_by_info_and_by_loading(model_dir, tmp_path, capsys):
    broken = tmp_path / "broken"
    shutil.copytree(model_dir, broken)
    weights = broken / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: int(len(data) * 0.6)])  # an interrupted download
    img = _images(tmp_path / "imgs", 1) / "img000.jpg"
    assert main(["info", str(broken)]) == 2
    _one_line_error(capsys.readouterr().err, str(weights), "incomplete file")
    assert main(["classify", str(broken), str(img), "--classes", "a", "--device", "cpu"]) == 2
    _one_line_error(capsys.readouterr().err, str(weights), "incomplete file")
    weights.write_bytes(os.urandom(4096))
    assert main(["info", str(broken)]) == 2
    _one_line_error(capsys.readouterr().err, str(weights), "not a valid safetensors file")


def test_truncated_chat_weights_are_named_by_info_and_chat(demo_checkpoints, tmp_path, capsys):
    broken = tmp_path / "chat"
    shutil.copytree(demo_checkpoints["chat"], broken)
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1000])  # the last kilobyte never arrived
    assert main(["info", str(broken)]) == 2
    _one_line_error(capsys.readouterr().err, str(weights), "incomplete file")
    assert main(["chat", str(broken), "--device", "cpu", "hi"]) == 2
    _one_line_error(capsys.readouterr().err, str(weights), "incomplete file")


# --- 6. options checked before the model loads -------------------------------------------------------------


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--max-new-tokens", "0"], "--max-new-tokens"),
        (["--sample", "--temperature", "0"], "--temperature"),
        (["--top-p", "2"], "--top-p"),
        (["--greedy", "--top-p", "0"], "--top-p"),
    ],
)
def test_chat_generation_options_are_checked_before_the_model_loads(tmp_path, capsys, args, needle):
    # tmp_path is an empty folder: loading it would fail with a checkpoint error, so an option error
    # proves the options were checked first.
    assert main(["chat", str(tmp_path), *args, "hi"]) == 2
    _one_line_error(capsys.readouterr().err, needle)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_chat_device_map_cuda_without_a_gpu(tmp_path, capsys):
    assert main(["chat", str(tmp_path), "--device-map", "cuda", "hi"]) == 2
    _one_line_error(capsys.readouterr().err, "cuda", "CUDA is not available")
    assert main(["chat", str(tmp_path), "--device", "cuda:0", "hi"]) == 2
    _one_line_error(capsys.readouterr().err, "cuda:0")


def test_an_empty_chat_question_is_an_error_before_loading(tmp_path, capsys):
    assert main(["chat", str(tmp_path), "  "]) == 2
    _one_line_error(capsys.readouterr().err, "QUESTION is empty")


@pytest.mark.parametrize("verb", ["info", "classify", "chat"])
def test_a_file_or_broken_config_as_the_model_is_one_line(tmp_path, capsys, verb):
    img = _images(tmp_path / "imgs", 1) / "img000.jpg"
    extra = {"info": [], "classify": [str(img), "--classes", "a"], "chat": ["hi"]}[verb]
    assert main([verb, str(img), *extra]) == 2  # an image where the checkpoint folder goes
    _one_line_error(capsys.readouterr().err, str(img), "is a file")
    for name, body, needle in [("latin1", b"\xff\xfe{}", "not UTF-8"), ("list", b"[1]", "expected a JSON object")]:
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_bytes(body)
        assert main([verb, str(tmp_path / name), *extra]) == 2
        _one_line_error(capsys.readouterr().err, str(tmp_path / name / "config.json"), needle)


@pytest.mark.parametrize(
    "argv",
    [
        ["classify", "{m}", "{img}", "--classes", "a"],
        ["embed", "{m}", "--text", "a", "-o", "{tmp}/e.npy"],
        ["caption", "{m}", "{tmp}/imgs", "-o", "{tmp}/c.json"],
        ["chat", "{m}", "hi"],
        ["eval", "retrieval", "-m", "{m}", "-o", "{tmp}/r.json"],
        ["eval", "caption", "-m", "{m}", "-d", "coco", "-o", "{tmp}/c"],
        ["serve", "{m}"],
    ],
)
def test_an_unknown_dtype_is_one_line_before_anything_loads(tmp_path, capsys, argv):
    img = _images(tmp_path / "imgs", 1) / "img000.jpg"
    fill = {"m": str(tmp_path / "no-model"), "img": str(img), "tmp": str(tmp_path)}
    assert main([a.format(**fill) for a in argv] + ["--dtype", "fp8"]) == 2  # the model folder does not exist
    _one_line_error(capsys.readouterr().err, "--dtype fp8", "bf16")


def test_cli_dtype_names_are_the_ones_resolve_dtype_accepts():
    from internvl.cli._common import DTYPE_NAMES
    from internvl.core.devices import DTYPES

    assert set(DTYPE_NAMES) == {*DTYPES, "auto"}


def test_chat_video_that_is_not_a_video_is_named(tmp_path, capsys):
    text = tmp_path / "clip.mp4"
    text.write_text("not a video")
    assert main(["chat", str(tmp_path), "--video", str(text), "hi"]) == 2
    _one_line_error(capsys.readouterr().err, str(text))


def test_a_wrong_path_is_reported_in_well_under_a_second(tmp_path):
    env = {**os.environ, "PYTHONPATH": SRC}
    start = time.perf_counter()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "internvl.cli.main",
            "classify",
            str(tmp_path / "nope"),
            str(tmp_path / "a.jpg"),
            "--classes",
            "a",
        ],
        env=env,
        capture_output=True,
        text=True,
    )
    elapsed = time.perf_counter() - start
    assert proc.returncode == 2
    _one_line_error(proc.stderr, str(tmp_path / "nope"))
    assert elapsed < 2.0, f"{elapsed:.2f}s (python start-up included)"


def test_a_hub_id_as_the_model_says_how_to_download_it(capsys):
    assert main(["info", "OpenGVLab/InternVL-14B-224px"]) == 2
    _one_line_error(
        capsys.readouterr().err,
        "hub id",
        "huggingface-cli download OpenGVLab/InternVL-14B-224px",
        "section Getting the official checkpoints",
    )
    for argv in (
        ["classify", "OpenGVLab/InternVL-14B-224px", "x.jpg", "--classes", "a"],
        ["chat", "OpenGVLab/InternVL-Chat-V1-2", "hi"],
        ["eval", "retrieval", "-m", "OpenGVLab/InternVL-14B-224px", "-o", "r.json"],
    ):
        assert main(argv) == 2
        _one_line_error(capsys.readouterr().err, "hub id", "Getting the official checkpoints")


# --- 7. conventions ----------------------------------------------------------------------------------------


def test_version(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"internvl {internvl.__version__}"


def test_mode_is_case_insensitive_and_a_bad_mode_is_a_usage_error(model_dir, tmp_path, capsys):
    img = _images(tmp_path / "imgs", 1) / "img000.jpg"
    outs = {}
    for spelling in ("InternVL-G", "internvl-g", "G"):
        out = tmp_path / f"{spelling}.npy"
        assert (
            main(["embed", str(model_dir), "--image", str(img), "-o", str(out), "--mode", spelling, "--device", "cpu"])
            == 0
        )
        outs[spelling] = out.read_bytes()
    assert len(set(outs.values())) == 1
    c = tmp_path / "c.npy"
    assert main(["embed", str(model_dir), "--image", str(img), "-o", str(c), "--mode", "c", "--device", "cpu"]) == 0
    assert c.read_bytes() != outs["G"]
    capsys.readouterr()
    assert main(["classify", str(tmp_path / "no-model"), str(img), "--classes", "a", "--mode", "InternVL-X"]) == 2
    err = capsys.readouterr().err
    assert "--mode" in err and "InternVL-C, InternVL-G" in err and "Traceback" not in err


# --- 8. the README's first steps, verbatim ------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.training  # the demo trains
def test_readme_first_steps_run_verbatim_after_the_demo(tmp_path, monkeypatch, capsys):
    import shlex

    repo = Path(__file__).resolve().parents[2]
    text = (repo / "README.md").read_text(encoding="utf-8")
    block = text.split("<!-- first-steps -->", 1)[1].split("```bash\n", 1)[1].split("```", 1)[0]
    commands = [line for line in block.splitlines() if line.strip() and not line.startswith("source ")]
    assert len(commands) >= 5
    shutil.copytree(repo / "examples", tmp_path / "examples")
    monkeypatch.chdir(tmp_path)
    # what `make demo` runs, into ./demo_output (a small budget: the checkpoint layout is the same)
    assert (
        main(
            [
                "demo",
                "--budget",
                "40",
                "--train-images",
                "600",
                "--test-images",
                "60",
                "--eval-questions",
                "60",
                "--mme-limit",
                "4",
                "--stage1-steps",
                "20",
                "--stage2-steps",
                "4",
            ]
        )
        == 0
    )
    for line in commands:
        argv = shlex.split(line)
        assert argv[0] == "internvl"
        assert main(argv[1:]) == 0, line
    err = capsys.readouterr().err
    assert "Traceback" not in err and "error:" not in err
    preds = json.loads((tmp_path / "results" / "predictions.json").read_text())
    assert [Path(r["image"]).name for r in preds] == ["first.jpg", "second.jpg"]
    assert len(json.loads((tmp_path / "results" / "captions.json").read_text())) == 3
    assert (tmp_path / "results" / "embeddings.safetensors").is_file()


def test_eval_caption_takes_a_prompt_and_checks_token_bounds_first(world, tmp_path, capsys):  # noqa: F811
    base = [
        "eval",
        "caption",
        "--model",
        str(world / "model"),
        "--dataset",
        "coco",
        "--data-root",
        str(world / "data"),
        "--output",
        str(tmp_path / "res"),
        "--num-workers",
        "0",
        "--no-score",
        "--limit",
        "2",
        "--num-beams",
        "1",
    ]
    assert main([*base, "--min-new-tokens", "9", "--max-new-tokens", "8"]) == 2
    _one_line_error(capsys.readouterr().err, "--min-new-tokens 9", "--max-new-tokens 8")
    assert not (tmp_path / "res").exists()
    assert main([*base, "--min-new-tokens", "2", "--max-new-tokens", "6", "--prompt", "Chinese caption:"]) == 0
    (settings,) = (tmp_path / "res").glob("*_captions.partial.settings.json")
    assert json.loads(settings.read_text())["settings"]["prompt"] == "Chinese caption:"


def test_embed_into_an_existing_folder(model_dir, tmp_path):
    img = _images(tmp_path / "imgs", 1) / "img000.jpg"
    folder = tmp_path / "out"
    folder.mkdir()
    assert (
        main(["embed", str(model_dir), "--image", str(img), "--text", "a dog", "-o", str(folder), "--device", "cpu"])
        == 0
    )
    from safetensors.torch import load_file

    assert set(load_file(str(folder / "embeddings.safetensors"))) == {"image_embeds", "text_embeds"}


def test_a_non_utf8_classes_file_is_named(tmp_path, capsys):
    classes = tmp_path / "classes.txt"
    classes.write_bytes("chien\nchat\nb\xe9b\xe9\n".encode("latin-1"))
    assert main(["classify", str(tmp_path), "x.jpg", "--classes-file", str(classes)]) == 2
    _one_line_error(capsys.readouterr().err, "--classes-file", str(classes), "UTF-8")


def test_classify_takes_images_as_image_options_too(model_dir, tmp_path, capsys):
    imgs = _images(tmp_path / "imgs", 2)
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    assert (
        main(
            [
                "classify",
                str(model_dir),
                str(imgs / "img000.jpg"),
                str(imgs / "img001.jpg"),
                "--classes",
                "dog,cat",
                "-o",
                str(a),
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "classify",
                str(model_dir),
                "--image",
                str(imgs / "img000.jpg"),
                "-i",
                str(imgs / "img001.jpg"),
                "--classes",
                "dog,cat",
                "-o",
                str(b),
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    assert json.loads(a.read_text()) == json.loads(b.read_text())
    assert main(["classify", str(model_dir), "--classes", "dog"]) == 2
    _one_line_error(capsys.readouterr().err, "no images")
