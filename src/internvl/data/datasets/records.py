"""The record every caption-dataset reader returns, and the caption cleaner the reference applies.

A record names one image (its id, its file) and all of its captions; nothing is decoded here, so a
dataset of 30k images costs a few megabytes until an image is actually needed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

ImageId = int | str


@dataclass(frozen=True)
class ImageCaptions:
    """One image of a caption dataset.

    Attributes:
        image_id: the dataset's id of the image (an int where the file format has one: the Flickr photo
            id, the COCO image id, the NoCaps id; otherwise the string found in the file).
        image_path: where the image file is expected (not checked at construction).
        captions: its captions in file order, raw (see `pre_caption` for the reference's cleaning).
        source: ``file:line`` or ``file[entry]`` the record came from, for error messages.
    """

    image_id: ImageId
    image_path: Path
    captions: tuple[str, ...]
    source: str = ""


_PUNCT = re.compile(r"""[.!"()*#:;~]""")
_SPACES = re.compile(r"\s{2,}")


def pre_caption(caption: str, max_words: int = 50) -> str:
    """The caption cleaning of clip_benchmark's retrieval datasets and of the fine-tuning data (spec §6.5).

    Lower-cases, replaces each of ``. ! " ( ) * # : ; ~`` with a space, collapses runs of whitespace,
    strips the trailing newline and surrounding spaces and keeps at most ``max_words`` space-separated
    words. Idempotent. Chinese text only loses ASCII punctuation (full-width punctuation is kept, as in
    the reference).
    """
    caption = _PUNCT.sub(" ", caption.lower())
    caption = _SPACES.sub(" ", caption)
    caption = caption.rstrip("\n").strip(" ")
    words = caption.split(" ")
    if len(words) > max_words:
        caption = " ".join(words[:max_words])
    return caption


def find_missing_images(records: list[ImageCaptions], limit: int = 5) -> tuple[int, list[ImageCaptions]]:
    """Count the records whose image file does not exist; return the count and the first ``limit`` of them.

    A stat per image: checking 30k paths takes well under a second, and failing here beats failing an hour
    into an evaluation.
    """
    missing = [r for r in records if not r.image_path.is_file()]
    return len(missing), missing[:limit]
