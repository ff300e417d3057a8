"""`internvl info` and `internvl demo` run in-process through main(argv)."""

from __future__ import annotations

import json

from internvl.cli.main import main
from internvl.models.intern_vit import PRESETS, build_intern_vit


def test_info_json(tmp_path, capsys):
    build_intern_vit(PRESETS["intern_vit_tiny"]).save_pretrained(tmp_path, max_shard_size=30_000)
    assert main(["info", str(tmp_path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["model_type"] == "intern_vit_6b"
    assert out["parameters"] == sum(p.numel() for p in build_intern_vit(PRESETS["intern_vit_tiny"]).parameters())
    assert out["image_size"] == 56 and out["weight_files"] > 1


def test_info_on_missing_dir_is_a_clear_error(tmp_path, capsys):
    assert main(["info", str(tmp_path / "nope")]) == 2
    assert "no config.json" in capsys.readouterr().err


def test_help_lists_commands(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "info" in out and "demo" in out


def test_demo_runs_and_writes_report(tmp_path):
    assert main(["demo", "--output", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "demo_report.json").read_text())
    from internvl.cli.demo import STEPS
    from internvl.models.registry import create_model

    assert list(report) == [title for title, _ in STEPS]
    vision, cg, chat = report.values()
    tiny = create_model("intern_vit_tiny")
    grid = tiny.config.image_size // tiny.config.patch_size
    assert vision["parameters"] == sum(p.numel() for p in tiny.parameters())
    assert vision["last_hidden_state"] == [4, grid * grid + 1, tiny.config.hidden_size]
    sims = cg["similarity"]
    assert len(sims) == 3 and all(len(row) == 3 and all(-1.0 <= v <= 1.0 for v in row) for row in sims)
    assert len(cg["classification"]) == 3 and set(cg["classification"]) <= {"dog", "cat", "square"}
    assert len(cg["captions"]) == 3 and all(isinstance(c, str) for c in cg["captions"])
    assert len(chat["batch"]) == 2
    assert "".join(chat["streamed pieces"]) == chat["one image"]  # the same question, streamed and not


def test_usage_errors_print_usage_and_return_2(capsys):
    assert main(["info", "--bogus"]) == 2
    assert "No such option" in capsys.readouterr().err
    assert main(["nonexistent-command"]) == 2
