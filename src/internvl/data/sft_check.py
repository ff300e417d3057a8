"""Validate an SFT meta mixture without training (``internvl data check``).

Every record training would read (each line once, whatever its ``repeat_time``) goes through the same
code as `SFTDataset`: record parsing, the placeholder rules, `preprocess_conversation`. Images are
opened and fully decoded (missing, unreadable and truncated files are found), or with
``decode_images=False`` only their headers are read for the tile count. Problems carry the same
``kind`` and message as the error training would raise; a sample longer than ``max_length`` that
training can truncate (text only) is a warning (``truncated``), one it would reject is ``over_length``.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from PIL import Image

from internvl.core.errors import DataFormatError
from internvl.data.datasets.chat_records import ChatRecordError
from internvl.data.sft import SFTDataset, SFTSampleError, count_tiles, preprocess_conversation

UNLIMITED = 1 << 40


@dataclass(frozen=True)
class Problem:
    dataset: str
    source: str  # file:line
    kind: str
    message: str


@dataclass
class DatasetSummary:
    name: str
    annotation: str
    records: int = 0  # distinct lines checked
    samples: int = 0  # after repeat_time
    images: int = 0  # image / video files referenced
    tokens: int = 0  # untruncated tokens of the valid records
    truncated: int = 0
    problems: Counter = field(default_factory=Counter)


@dataclass
class CheckReport:
    max_length: int
    datasets: list[DatasetSummary]
    problems: list[Problem]
    warnings: list[Problem]

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict:
        def row(p: Problem) -> dict:
            return {"dataset": p.dataset, "source": p.source, "kind": p.kind, "message": p.message}

        return {
            "ok": self.ok,
            "max_length": self.max_length,
            "datasets": [
                {**{k: v for k, v in d.__dict__.items() if k != "problems"}, "problems": dict(d.problems)}
                for d in self.datasets
            ],
            "problems": [row(p) for p in self.problems],
            "warnings": [row(p) for p in self.warnings],
        }


def _check_image(path: str, decode: bool) -> tuple[int, int]:
    """(width, height) of an image file; raises `SFTSampleError` (kind ``image``) when it cannot be used."""
    if path.startswith("s3://"):
        raise SFTSampleError("image", f"image {path}: s3:// paths need a storage client; copy the images locally")
    if not os.path.isfile(path):
        raise SFTSampleError("image", f"image file not found: {path}")
    try:
        with Image.open(path) as img:
            if decode:
                img.load()  # a truncated file fails here, not at open
            return img.size
    except OSError as e:
        raise SFTSampleError("image", f"cannot read image {path}: {e}") from None


def check_sft_data(
    dataset: SFTDataset,
    *,
    decode_images: bool = True,
    progress: Callable[[int], None] | None = None,
) -> CheckReport:
    """Check every distinct record of ``dataset`` (see the module doc). ``progress(n)`` is called per record."""
    cfg = dataset.config
    summaries = [DatasetSummary(s.name, str(s.annotation)) for s in dataset.sources]
    problems: list[Problem] = []
    warnings: list[Problem] = []
    sizes_seen: dict[str, tuple[int, int]] = {}  # an image several records share is decoded once

    def _image_size(path: str) -> tuple[int, int]:
        if path not in sizes_seen:
            sizes_seen[path] = _check_image(path, decode_images)
        return sizes_seen[path]

    first_sample: dict[tuple[int, int], int] = {}
    for i, key in enumerate(dataset.index):
        summaries[key[0]].samples += 1
        first_sample.setdefault(key, i)
    for key, i in first_sample.items():
        source = dataset.sources[key[0]]
        summary = summaries[key[0]]
        summary.records += 1
        where = f"{source.annotation}:{key[1] + 1}"
        try:
            record = dataset.record(i)
            settings = dataset.settings_for(source)
            if record.images:
                summary.images += len(record.images)
                budget = dataset.tile_budget(record, settings)
                sizes = [_image_size(source.image_path(p)) for p in record.images]
                num_tokens = [cfg.num_image_token * count_tiles(w, h, settings, budget) for w, h in sizes]
                conversations = dataset.conversation_for(record)
            elif record.video:
                summary.images += 1
                path = source.image_path(record.video)
                if not os.path.isfile(path):
                    raise SFTSampleError("image", f"video file not found: {path}")
                if decode_images:
                    from internvl.data.video import video_info

                    video_info(path)
                num_tokens = [cfg.num_image_token] * cfg.num_video_frames
                conversations = dataset.conversation_for(record, cfg.num_video_frames)
            else:
                num_tokens, conversations = [], dataset.conversation_for(record)
            kwargs = {"num_image_tokens": num_tokens, "system_message": cfg.system_message}
            full = preprocess_conversation(conversations, cfg.template, dataset.encoder, max_length=UNLIMITED, **kwargs)
            n = int(full["input_ids"].shape[0])
            if n > cfg.max_length:
                preprocess_conversation(
                    conversations, cfg.template, dataset.encoder, max_length=cfg.max_length, **kwargs
                )
                summary.truncated += 1
                warnings.append(
                    Problem(
                        source.name,
                        where,
                        "truncated",
                        f"{n} tokens > max_length {cfg.max_length}; training keeps the first {cfg.max_length}",
                    )
                )
            summary.tokens += n
        except (SFTSampleError, ChatRecordError) as e:
            message = str(e) if str(e).startswith(str(source.annotation)) else f"{where}: {e}"
            problems.append(Problem(source.name, where, e.kind, message))
            summary.problems[e.kind] += 1
        except DataFormatError as e:  # e.g. an undecodable video
            problems.append(Problem(source.name, where, "image", f"{where}: {e}"))
            summary.problems["image"] += 1
        if progress is not None:
            progress(1)
    return CheckReport(cfg.max_length, summaries, problems, warnings)
