"""Quiet by default (issue 16): normal runs on the demo's checkpoints print no library warnings, and
`internvl -v` really shows debug logs. Run as a user would, in a child process, so Python warnings and
logging reach stderr exactly as on a terminal."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import internvl

pytestmark = pytest.mark.integration

SRC = str(Path(internvl.__file__).resolve().parents[1])
WARNING = re.compile(r"warn", re.IGNORECASE)


def _run(script: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1"}
    env.pop("PYTHONWARNINGS", None)
    return subprocess.run([sys.executable, "-c", script], env=env, cwd=cwd, capture_output=True, text=True, timeout=300)


def test_normal_runs_print_no_warnings_and_v_shows_debug_logs(demo_checkpoints, tmp_path):
    d = demo_checkpoints
    runs = [
        ["embed", str(d["cg"]), "--image", str(d["image"]), "--text", "a red circle", "-o", "e.safetensors"],
        ["classify", str(d["cg"]), str(d["image"]), "--classes", "circle,square", "-o", "p.json"],
        ["caption", str(d["cg"]), str(d["images"]), "-o", "c.json", "--max-new-tokens", "3", "--num-beams", "1"]
        + ["--min-new-tokens", "1"],
        ["chat", str(d["chat"]), "--image", str(d["image"]), "How many objects?", "--max-new-tokens", "4"],
    ]
    script = (
        "import sys\nfrom internvl.cli.main import main\n"
        f"codes = [main(argv) for argv in {runs!r}]\n"
        "print('codes', codes)\n"
    )
    proc = _run(script, tmp_path)
    assert "codes [0, 0, 0, 0]" in proc.stdout, proc.stderr
    assert not [line for line in proc.stderr.splitlines() if WARNING.search(line)], proc.stderr
    assert "Traceback" not in proc.stderr

    from PIL import Image

    Image.open(d["image"]).save(tmp_path / "x.png")  # PIL's per-chunk debug logs stay out of -v
    verbose_run = [*runs[0][:3], str(tmp_path / "x.png"), *runs[0][4:]]
    verbose = _run(f"from internvl.cli.main import main\nmain(['-v', *{verbose_run!r}])\n", tmp_path)
    assert verbose.returncode == 0, verbose.stderr
    debug = [line for line in verbose.stderr.splitlines() if line.startswith("DEBUG internvl.")]
    assert any("no tokenizer.model" in line for line in debug), verbose.stderr  # the world tokenizer note
    assert "STREAM b'IHDR'" not in verbose.stderr
