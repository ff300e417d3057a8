"""A map-style torch dataset over caption records that opens each image only when it is requested, and the
one way the evaluations iterate a DataLoader over it."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch
from PIL import Image

from internvl.core.errors import DataFormatError
from internvl.core.images import read_image
from internvl.data.datasets.records import ImageCaptions


class CaptionImageDataset(torch.utils.data.Dataset):
    """``dataset[i] -> (transform(image_i), i)``; the captions stay in ``records`` (strings need no collation).

    Images are decoded lazily in ``__getitem__`` (so DataLoader workers do the decoding) and converted to
    RGB before the transform, as every reference pipeline does.
    """

    def __init__(
        self,
        records: Sequence[ImageCaptions],
        transform: Callable[[Image.Image], torch.Tensor],
        name: str = "",
    ):
        self.records = list(records)
        self.transform = transform
        self.name = name

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        rec = self.records[index]
        if not rec.image_path.exists():
            raise DataFormatError(
                f"{self._prefix()}image file not found: {rec.image_path} (image id {rec.image_id!r}, listed at "
                f"{rec.source}); expected it under the dataset's image root {rec.image_path.parent}"
            )
        # Non-image, over the pixel limit, truncated: DataFormatError naming the file.
        rgb = read_image(rec.image_path, context=f"{self._prefix()}(image id {rec.image_id!r}) ")
        return self.transform(rgb), index

    def _prefix(self) -> str:
        return f"dataset '{self.name}': " if self.name else ""


@contextmanager
def loader_batches(loader: torch.utils.data.DataLoader) -> Iterator[Iterator]:
    """``iter(loader)`` whose worker processes stop when the block ends, an error included.

    Otherwise an error (a bad image) leaves the workers to the error's traceback: they stop only when it
    is collected, and torch then waits seconds per worker if other workers were started meanwhile (the
    next evaluation in the same process, e.g. a test or a notebook).
    """
    batches = iter(loader)
    try:
        yield batches
    finally:
        shutdown = getattr(batches, "_shutdown_workers", None)  # absent for num_workers=0
        if shutdown is not None:
            shutdown()
