"""Reader for the Flickr30K Karpathy caption files (``flickr_format``).

Files: ``flickr30k_{train,val,test}_karpathy.txt`` (English, from mehdidc/retrieval_annotations, used
by clip_benchmark and the fine-tuning scripts) and ``flickr30k_cn_{train,test}.txt`` (Flickr30K-CN).
Layout, UTF-8 text:

    image,caption                                   <- header line, skipped
    1000092795.jpg,Two young guys with shaggy hair look at their hands while hanging out in the yard.
    1000092795.jpg,"Two young, White males are outside near many bushes."
    ...

Each line is split once at the first ``.jpg,``: captions may contain commas, and CSV quotes are kept
verbatim (the reference does not un-quote; `pre_caption` later turns ``"`` into spaces). Captions are
grouped per image in order of first appearance. Image file = ``{root}/{stem}.jpg``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

from internvl.core.errors import DataFormatError
from internvl.data.datasets.records import ImageCaptions

logger = logging.getLogger(__name__)

SEPARATOR = ".jpg,"
_EXPECTED = "'<image name>.jpg,<caption>' (one caption per line after a header line)"


def read_flickr_captions(annotation: str | os.PathLike, image_root: str | os.PathLike) -> list[ImageCaptions]:
    """Read a Flickr30K(-CN) Karpathy ``.txt`` file into one record per image.

    Args:
        annotation: the ``.txt`` file.
        image_root: the folder holding the ``<id>.jpg`` files (``data/flickr30k/Images`` in the guides).

    Raises:
        DataFormatError: missing file, undecodable bytes, or a line without ``.jpg,`` / with an empty
            image name or caption (the message names the file, the line and the field).
    """
    path = Path(annotation)
    root = Path(image_root)
    groups: dict[str, list[str]] = {}
    first_line: dict[str, int] = {}
    for lineno, stem, caption in iter_flickr_lines(path):
        if not caption.strip():
            raise DataFormatError(
                f"{path}:{lineno}: field 'caption': empty caption for {stem}.jpg; expected {_EXPECTED}"
            )
        if stem not in groups:
            groups[stem] = []
            first_line[stem] = lineno
        groups[stem].append(caption)
    return [
        ImageCaptions(
            image_id=int(stem) if stem.isdigit() else stem,
            image_path=root / f"{stem}.jpg",
            captions=tuple(captions),
            source=f"{path}:{first_line[stem]}",
        )
        for stem, captions in groups.items()
    ]


def iter_flickr_lines(annotation: str | os.PathLike) -> Iterator[tuple[int, str, str]]:
    """Yield ``(line number, image stem, raw caption)`` per caption line, in file order.

    The one parser of the format, shared by the evaluation reader (grouped per image) and the
    fine-tuning pairs (one sample per line, `internvl.data.pairs`). Lines are stripped and split at the
    first ``.jpg,``; blank lines are skipped; the caption may be empty (callers decide).

    Raises:
        DataFormatError: missing file, undecodable bytes, a line without ``.jpg,`` or an empty image name.
    """
    path = Path(annotation)
    if not path.is_file():
        raise DataFormatError(
            f"annotation file not found: {path} (expected a Flickr30K Karpathy caption file such as "
            f"flickr30k_test_karpathy.txt: a header line, then {_EXPECTED})"
        )
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
            except UnicodeDecodeError as e:
                raise DataFormatError(f"{path}:{lineno}: not valid UTF-8 ({e.reason} at byte {e.start})") from None
            if lineno == 1:
                if SEPARATOR in line:
                    logger.warning(
                        "%s:1 looks like a caption line, but the first line is a header and is skipped "
                        "(as the reference does): %r",
                        path,
                        line.strip()[:80],
                    )
                continue
            line = line.strip()
            if not line:
                continue
            stem, sep, caption = line.partition(SEPARATOR)
            where = f"{path}:{lineno}"
            if not sep:
                json_hint = " (this looks like JSON: use format coco_format for .json files)"
                hint = json_hint if path.suffix == ".json" else ""
                raise DataFormatError(
                    f"{where}: field 'image': no '{SEPARATOR}' found; expected {_EXPECTED}{hint}; got {line[:80]!r}"
                )
            if not stem:
                raise DataFormatError(f"{where}: field 'image': empty image name; expected {_EXPECTED}")
            yield lineno, stem, caption
