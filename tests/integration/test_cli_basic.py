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
    assert report and all(isinstance(v, dict) for v in report.values())


def test_usage_errors_print_usage_and_return_2(capsys):
    assert main(["info", "--bogus"]) == 2
    assert "No such option" in capsys.readouterr().err
    assert main(["nonexistent-command"]) == 2
