"""What a benchmark is to the harness: where its files are, how its prompt is built, how it is scored.

A `Benchmark` reads its items with a `internvl.data.datasets` reader, turns each into the reference's
prompt (question formatting, option list, answer instruction), names its generation settings, and
scores the raw answers with the pure functions of `internvl.evaluation.metrics`. Items the model could
not be asked (``item.problem``) and answers that fail (``None``) are scored as wrong by every benchmark;
the harness lists them in the result.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

from internvl.data.datasets.bench_items import BenchItem

BASE_PROMPT = "Answer the question using a single word or phrase."
CHOICE_PROMPT = {"en": "Answer with the option's letter from the given choices directly.", "cn": "请直接回答选项字母。"}


class Benchmark:
    """Base class; subclasses set the class attributes and implement `read`, `prompt` and `score`.

    Attributes:
        name: registry name (``--benchmark``).
        title: what the card calls it; ``column`` is the card table's column (None: not in the card table).
        max_new_tokens, min_new_tokens: the reference script's generation lengths (min None: not passed).
        local_score: False for test splits only an online server scores (a submission file is written).
        score_scale: how the summary prints ``score`` ("percent" of a 0-1 value, or "points" as is).
    """

    name: ClassVar[str] = ""
    title: ClassVar[str] = ""
    column: ClassVar[str | None] = None
    max_new_tokens: ClassVar[int] = 10
    min_new_tokens: ClassVar[int | None] = 1
    local_score: ClassVar[bool] = True
    score_scale: ClassVar[str] = "percent"
    requires: ClassVar[tuple[str, ...]] = ()  # optional modules the submission writer needs
    about: ClassVar[str] = ""  # one line for `--benchmark list` and the README

    def files(self, data_dir: Path) -> list[Path]:
        """The annotation files whose contents the answer cache is tied to (hashed into its settings)."""
        raise NotImplementedError

    def read(self, data_dir: Path) -> list[BenchItem]:
        raise NotImplementedError

    def prompt(self, item: BenchItem) -> str:
        raise NotImplementedError

    def generation(self, num_beams: int) -> dict[str, Any]:
        """The reference's ``generation_config`` for this benchmark (greedy / beam, no sampling)."""
        gen: dict[str, Any] = {"num_beams": num_beams, "max_new_tokens": self.max_new_tokens, "do_sample": False}
        if self.min_new_tokens is not None:
            gen["min_new_tokens"] = self.min_new_tokens
        return gen

    def score(self, items: Sequence[BenchItem], answers: Mapping[str, str | None]) -> dict[str, Any]:
        """``{"metric", "score", "breakdown", "unparsed": [...], ...}`` from the raw answers (None: failed)."""
        raise NotImplementedError

    def submission(self, items: Sequence[BenchItem], answers: Mapping[str, str | None], out_dir: Path) -> Path | None:
        """Write the file an evaluation server expects (test splits); None when there is none."""
        return None


def options_text(options: Mapping[str, str]) -> str:
    """``"A. cat\\nB. dog"`` as every reference multiple-choice script writes its option list."""
    return "\n".join(f"{k}. {v}" for k, v in options.items())


def percent(correct: float, total: int) -> float:
    return 100.0 * correct / total if total else 0.0


__all__ = ["BASE_PROMPT", "CHOICE_PROMPT", "Benchmark", "options_text", "percent"]
