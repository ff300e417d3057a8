"""The package's dependency direction, checked on the source: core <- models | data <- inference <-
evaluation <- training | serving <- cli. Lower layers never import higher ones or their siblings."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "internvl"
RANK = {"core": 0, "layers": 0, "models": 1, "data": 1, "inference": 2, "evaluation": 3, "training": 4,
        "serving": 4, "cli": 5}
FORBIDDEN = {("models", "data"), ("data", "models"), ("serving", "evaluation"), ("serving", "training"),
             ("training", "serving")}


def _internvl_imports(path: Path) -> list[tuple[str, int]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names if a.name.startswith("internvl")]
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("internvl") and node.level == 0:
            found.append((node.module, node.lineno))
    return found


def test_layers_only_import_downwards():
    problems = []
    for path in SRC.rglob("*.py"):
        rel = path.relative_to(SRC)
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
            elif target != layer and (RANK[target] > RANK[layer] or (layer, target) in FORBIDDEN
                                      or (RANK[target] == RANK[layer] and target != layer)):
                problems.append(f"{rel}:{line} {layer} must not import {module}")
    assert not problems, "\n".join(problems)


def test_import_internvl_is_light():
    code = "import sys, internvl; print(','.join(m for m in ('torch', 'transformers', 'fastapi') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == ""


def test_configs_hold_data_only():
    """``src/internvl/configs`` is package data (YAML/JSON/Markdown), never code."""
    files = [p for p in (SRC / "configs").rglob("*") if p.is_file()]
    assert files and all(p.suffix in {".yaml", ".json", ".md"} for p in files), files
