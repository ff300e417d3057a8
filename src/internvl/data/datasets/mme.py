"""MME as the reference's ``eval/mme/eval.py`` reads it.

Layout under the benchmark folder (``--data DIR`` -> ``DIR/mme``)::

    Your_Results/<task>.txt                 one question per line: image<TAB>question<TAB>Yes|No
    MME_Benchmark_release_version/<task>/   the images (or <task>/images/, or images/<task>/)

``Your_Results`` is the question template of MME's ``eval_tool`` (also in the reference repository at
``internvl_chat/eval/mme/Your_Results``). The two questions of an image are consecutive lines, which is
what MME's acc+ relies on. Tasks are read in sorted file-name order.
"""

from __future__ import annotations

from pathlib import Path

from internvl.core.errors import DataFormatError
from internvl.data.datasets.bench_items import BenchItem, missing_image

QUESTIONS_DIR = "Your_Results"
IMAGE_DIRS = ("MME_Benchmark_release_version/{task}", "MME_Benchmark_release_version/{task}/images", "images/{task}")


def read_mme(folder: str | Path) -> list[BenchItem]:
    """Every question of every ``Your_Results/<task>.txt``; ids are ``<task>/<line number>``."""
    folder = Path(folder)
    qdir = folder / QUESTIONS_DIR
    files = sorted(qdir.glob("*.txt")) if qdir.is_dir() else []
    if not files:
        raise DataFormatError(
            f"MME: no question files {qdir}/<task>.txt. Copy MME's eval_tool/Your_Results (or the reference's "
            f"internvl_chat/eval/mme/Your_Results) there and the images to {folder}/MME_Benchmark_release_version/"
        )
    items: list[BenchItem] = []
    for path in files:
        task = path.stem
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError as e:
            raise DataFormatError(f"{path}: not UTF-8 text ({e})") from None
        for lineno, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            source = f"{path}:{lineno}"
            item = BenchItem(id=f"{task}/{lineno}", meta={"task": task}, source=source)
            fields = line.strip().split("\t")
            if len(fields) != 3:
                item.problem = f"{source}: expected 3 tab-separated fields (image, question, Yes/No), got {len(fields)}"
            else:
                image, item.question, item.answer = fields
                item.meta["image"] = image
                if item.answer.lower() not in ("yes", "no"):
                    item.problem = f"{source}: ground truth {item.answer!r}; expected Yes or No"
                item.image = _find_image(folder, task, image)
                missing_image(item)
            items.append(item)
    return items


def _find_image(folder: Path, task: str, name: str) -> Path:
    candidates = [folder / d.format(task=task) / name for d in IMAGE_DIRS]
    return next((c for c in candidates if c.is_file()), candidates[0])


__all__ = ["read_mme"]
