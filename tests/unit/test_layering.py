"""The package's dependency direction, checked on the source: core <- models | data <- inference <-
evaluation <- training | serving <- cli. Lower layers never import higher ones or their siblings:

* training never imports serving or cli; serving never imports evaluation, training or cli;
* evaluation.metrics stays pure (imports nothing else from internvl);
* configs/ (package data) holds no Python.

`find_problems` is run on the real tree and, to show each rule can fail, on small synthetic trees.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "internvl"
RANK = {
    "core": 0,
    "layers": 0,
    "models": 1,
    "data": 1,
    "inference": 2,
    "evaluation": 3,
    "training": 4,
    "serving": 4,
    "cli": 5,
}
FORBIDDEN = {
    ("models", "data"),
    ("data", "models"),
    ("serving", "evaluation"),
    ("serving", "training"),
    ("training", "serving"),
    ("training", "cli"),
    ("serving", "cli"),
    ("evaluation", "training"),
    ("evaluation", "serving"),
    ("inference", "serving"),
    ("inference", "training"),
}


def _internvl_imports(path: Path) -> list[tuple[str, int]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names if a.name.startswith("internvl")]
        elif (
            isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("internvl") and node.level == 0
        ):
            found.append((node.module, node.lineno))
    return found


def find_problems(root: Path) -> list[str]:
    """Every import (lazy ones included) that breaks a rule of the module docstring, as ``file:line`` lines."""
    problems = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        if rel.parts[0] == "configs":
            problems.append(f"{rel}: configs/ holds package data (YAML/JSON) only, not Python")
            continue
        if len(rel.parts) < 2:
            continue
        layer = rel.parts[0]
        for module, line in _internvl_imports(path):
            parts = module.split(".")
            if len(parts) < 2 or parts[1] not in RANK:
                continue
            target = parts[1]
            if layer == "evaluation" and rel.parts[1] == "metrics" and target != "evaluation":
                problems.append(f"{rel}:{line} evaluation.metrics must stay pure but imports {module}")
            elif layer == "evaluation" and rel.parts[1] == "metrics" and len(parts) > 2 and parts[2] != "metrics":
                problems.append(f"{rel}:{line} evaluation.metrics must stay pure but imports {module}")
            elif (
                layer in RANK
                and target != layer
                and (RANK[target] > RANK[layer] or (layer, target) in FORBIDDEN or RANK[target] == RANK[layer])
            ):
                problems.append(f"{rel}:{line} {layer} must not import {module}")
    return problems


def test_layers_only_import_downwards():
    problems = find_problems(SRC)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize(
    ("file", "source", "expected"),
    [
        (
            "training/recipe.py",
            "from internvl.serving.app import create_app",
            "training must not import internvl.serving.app",
        ),
        ("training/recipe.py", "def f():\n    import internvl.cli.main", "training must not import internvl.cli.main"),
        (
            "serving/app.py",
            "from internvl.evaluation.retrieval import x",
            "serving must not import internvl.evaluation.retrieval",
        ),
        ("serving/app.py", "from internvl.training.state import x", "serving must not import internvl.training.state"),
        ("evaluation/run.py", "from internvl.training import x", "evaluation must not import internvl.training"),
        ("inference/pipeline.py", "from internvl.serving import x", "inference must not import internvl.serving"),
        ("models/m.py", "from internvl.data.sft import x", "models must not import internvl.data.sft"),
        ("data/d.py", "from internvl.models.registry import x", "data must not import internvl.models.registry"),
        ("core/c.py", "from internvl.inference.loading import x", "core must not import internvl.inference.loading"),
        ("evaluation/metrics/m.py", "from internvl.core.io import x", "evaluation.metrics must stay pure"),
        ("evaluation/metrics/m.py", "from internvl.evaluation.runtime import x", "evaluation.metrics must stay pure"),
        ("configs/sft/recipe.py", "x = 1", "configs/ holds package data"),
    ],
)
def test_each_rule_reports_a_violation(tmp_path, file, source, expected):
    path = tmp_path / file
    path.parent.mkdir(parents=True)
    path.write_text(source + "\n")
    problems = find_problems(tmp_path)
    assert len(problems) == 1 and expected in problems[0], problems


def test_allowed_imports_are_not_reported(tmp_path):
    allowed = {
        "training/recipe.py": "from internvl.evaluation.retrieval import x\nfrom internvl.inference.pipeline import y",
        "serving/app.py": (
            "from internvl.inference.pipeline import ChatPipeline\nfrom internvl.data.conversation import z"
        ),
        "cli/serve.py": "from internvl.serving.app import create_app\nfrom internvl.training import t",
        "evaluation/metrics/vqa.py": "from internvl.evaluation.metrics.choice import c",
    }
    for file, source in allowed.items():
        (tmp_path / file).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / file).write_text(source + "\n")
    assert find_problems(tmp_path) == []


def test_import_internvl_is_light():
    code = "import sys, internvl; print(','.join(m for m in ('torch', 'transformers', 'fastapi') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == ""


def test_configs_hold_data_only():
    """``src/internvl/configs`` is package data (YAML/JSON/Markdown), never code."""
    files = [p for p in (SRC / "configs").rglob("*") if p.is_file()]
    assert files and all(p.suffix in {".yaml", ".json", ".md"} for p in files), files
