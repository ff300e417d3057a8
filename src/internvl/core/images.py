"""Opening image files safely: one place for the pixel limit and the "cannot read" errors.

Every loader (transforms, the chat preprocessing, the evaluation datasets, the CLI's pre-flight
checks) opens files through `open_image`, so a decompression bomb, an image over the pixel limit, a
non-image or a missing file is a `DataFormatError` naming the file, raised from the header alone
(before any pixel is decoded). Only PIL is imported, so the CLI can check inputs before loading torch.
"""

from __future__ import annotations

import os
import warnings

from internvl.core.errors import DataFormatError

# PIL's own default (Image.MAX_IMAGE_PIXELS: ~ a 9459 x 9459 image, 256 MiB as RGB); above it PIL only
# warns up to twice as much and then raises its own DecompressionBombError. We refuse above it.
DEFAULT_MAX_IMAGE_PIXELS = 89_478_485
ENV_MAX_IMAGE_PIXELS = "INTERNVL_MAX_IMAGE_PIXELS"
_RAISE_HINT = f"raise the limit with `internvl --max-image-pixels N ...` or {ENV_MAX_IMAGE_PIXELS}=N"


def max_image_pixels() -> int:
    """The pixel limit: ``$INTERNVL_MAX_IMAGE_PIXELS`` (set by ``internvl --max-image-pixels``), else PIL's default.

    An environment variable, so DataLoader worker processes see the same limit.
    """
    raw = os.environ.get(ENV_MAX_IMAGE_PIXELS, "").strip()
    if not raw:
        return DEFAULT_MAX_IMAGE_PIXELS
    try:
        value = int(raw.replace("_", "").replace(",", ""))
    except ValueError:
        value = 0
    if value < 1:
        raise DataFormatError(f"{ENV_MAX_IMAGE_PIXELS}={raw!r}: expected a positive integer (pixels)")
    return value


def open_image(path: str | os.PathLike, context: str = ""):
    """``PIL.Image.open(path)`` after checking the header: the lazy image (use it in a ``with``).

    Raises:
        DataFormatError: the file is missing, is not an image PIL can identify, or has more pixels than
            `max_image_pixels` (checked before decoding; PIL's decompression-bomb error is reported the
            same way). ``context`` (e.g. ``"dataset 'coco': "``) prefixes the message.
    """
    from PIL import Image

    limit = max_image_pixels()
    if Image.MAX_IMAGE_PIXELS is not None and limit > Image.MAX_IMAGE_PIXELS:
        Image.MAX_IMAGE_PIXELS = limit  # our limit decides; PIL's lower one must not fire first
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # we check the size below
            img = Image.open(path)
    except FileNotFoundError:
        raise DataFormatError(f"{context}image file not found: {path}") from None
    except IsADirectoryError:
        raise DataFormatError(f"{context}{path}: is a folder, expected an image file") from None
    except Image.DecompressionBombError:
        saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None  # read the size for the message
        try:
            with Image.open(path) as again:
                img = again
        finally:
            Image.MAX_IMAGE_PIXELS = saved
    except OSError as e:  # UnidentifiedImageError included: not an image
        raise DataFormatError(f"{context}cannot read image {path}: {e}") from None
    w, h = img.size
    if w * h > limit:
        img.close()
        raise DataFormatError(
            f"{context}{path}: {w}x{h} = {w * h:,} pixels is over the limit of {limit:,} (checked before "
            f"decoding, against decompression bombs); {_RAISE_HINT}"
        )
    return img


def read_image(path: str | os.PathLike, context: str = "", convert: str | None = "RGB"):
    """Open (checked as `open_image`) and fully decode ``path``; a truncated or corrupt file is a `DataFormatError`."""
    with open_image(path, context) as img:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # palette-with-transparency notes
                return img.convert(convert) if convert else img.copy()
        except (OSError, SyntaxError, ValueError) as e:  # truncated data, broken chunks
            raise DataFormatError(f"{context}cannot decode image {path}: {e}") from None
