"""Image preprocessing of InternVL-Chat: one 448px tile (V1-2) or dynamic aspect-ratio tiling (chat spec §6).

* V1-2 (``dynamic_image_size: false``): convert to RGB, resize directly to (448, 448) bicubic, ToTensor,
  ImageNet normalisation -> float32[1, 3, 448, 448]. This is the reference's ``build_transform`` path;
  the card's ``CLIPImageProcessor`` path gives the same pixels up to the last float32 ulp.
* The V1-2 model card instead calls ``Image.open(p).resize((448, 448))`` *before* converting to RGB and
  then ``CLIPImageProcessor``: PIL's default filter is NEAREST for palette ("P") and 1-bit images (bicubic
  otherwise) and RGBA is resized with its alpha. `card_preprocess_image` reproduces that path exactly;
  it differs from the default path only for such images.
* V1-5+ (``dynamic_image_size: true``): `dynamic_preprocess` picks a (cols, rows) grid closest to the
  image's aspect ratio, cuts 448px tiles row-major and appends a 448px thumbnail when ``use_thumbnail``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from internvl.core.images import read_image
from internvl.core.specs import served_image_size
from internvl.data.transforms import (
    IMAGENET_MEAN,
    NORMALIZATIONS,
    ImageTransform,
    build_transform,
    load_image,
    to_rgb,
)


@dataclass(frozen=True)
class ChatImageSettings:
    """Preprocessing settings, read from the chat checkpoint's config (see `from_config_dict`)."""

    image_size: int = 448
    dynamic_image_size: bool = False
    use_thumbnail: bool = False
    min_dynamic_patch: int = 1
    max_dynamic_patch: int = 6
    pad2square: bool = False
    norm: str = "imagenet"

    @classmethod
    def from_config_dict(cls, config: dict) -> ChatImageSettings:
        """From an internvl_chat ``config.json`` dict (or ``InternVLChatConfig.to_dict()``)."""
        return cls(
            image_size=served_image_size(config, default=448),
            dynamic_image_size=bool(config.get("dynamic_image_size", False)),
            use_thumbnail=bool(config.get("use_thumbnail", False)),
            min_dynamic_patch=int(config.get("min_dynamic_patch", 1)),
            max_dynamic_patch=int(config.get("max_dynamic_patch", 6)),
            pad2square=bool(config.get("pad2square", False)),
        )


def target_ratios(min_num: int, max_num: int) -> list[tuple[int, int]]:
    """Candidate (cols, rows) grids with min_num <= cols*rows <= max_num, in the reference's order.

    The reference sorts a Python *set* by area with a stable sort, so ties keep CPython's set iteration
    order for int tuples (deterministic); building the same set reproduces its tie-breaking exactly.
    """
    grids = {
        (i, j)
        for n in range(min_num, max_num + 1)
        for i in range(1, n + 1)
        for j in range(1, n + 1)
        if min_num <= i * j <= max_num
    }
    return sorted(grids, key=lambda g: g[0] * g[1])


def find_closest_aspect_ratio(
    aspect_ratio: float, ratios: list[tuple[int, int]], width: int, height: int, image_size: int
) -> tuple[int, int]:
    """Grid whose cols/rows is closest to the image's; ties go to the larger grid only for large images."""
    best_diff = float("inf")
    best = (1, 1)
    area = width * height
    for cols, rows in ratios:
        diff = abs(aspect_ratio - cols / rows)
        if diff < best_diff:
            best_diff, best = diff, (cols, rows)
        elif diff == best_diff and area > 0.5 * image_size * image_size * cols * rows:
            best = (cols, rows)
    return best


def choose_grid(width: int, height: int, min_num: int = 1, max_num: int = 6, image_size: int = 448) -> tuple[int, int]:
    """The (cols, rows) grid `dynamic_preprocess` cuts a ``width`` x ``height`` image into."""
    return find_closest_aspect_ratio(width / height, target_ratios(min_num, max_num), width, height, image_size)


def dynamic_preprocess(
    image: Image.Image, min_num: int = 1, max_num: int = 6, image_size: int = 448, use_thumbnail: bool = False
) -> list[Image.Image]:
    """Split ``image`` into 448px tiles on the best grid (row-major), plus a thumbnail if asked and >1 tile."""
    width, height = image.size
    cols, rows = choose_grid(width, height, min_num, max_num, image_size)
    resized = image.resize((image_size * cols, image_size * rows))  # PIL default filter, as the reference
    tiles = []
    for k in range(cols * rows):
        col, row = k % cols, k // cols
        tiles.append(resized.crop((col * image_size, row * image_size, (col + 1) * image_size, (row + 1) * image_size)))
    if use_thumbnail and len(tiles) > 1:
        tiles.append(image.resize((image_size, image_size)))
    return tiles


def expand_to_square(image: Image.Image, fill: tuple[int, ...]) -> Image.Image:
    """Pad to a square canvas of colour ``fill``, image centred (``pad2square``)."""
    w, h = image.size
    if w == h:
        return image
    side = max(w, h)
    canvas = Image.new(image.mode, (side, side), fill)
    canvas.paste(image, ((side - w) // 2, (side - h) // 2))
    return canvas


def preprocess_image(
    image: Image.Image | str | os.PathLike,
    settings: ChatImageSettings = ChatImageSettings(),
    max_num: int | None = None,
    transform: ImageTransform | None = None,
) -> torch.Tensor:
    """One image -> float32[T, 3, S, S] tiles (T = 1 for V1-2).

    Args:
        image: a PIL image or a path.
        settings: from the checkpoint config (`ChatImageSettings.from_config_dict`).
        max_num: per-call override of ``max_dynamic_patch`` (e.g. split among several images).
        transform: per-tile transform (default: the ``chat`` transform of ``settings``; SFT passes the
            ``train_chat`` one for ``data_augment`` datasets).
    """
    img = load_image(image) if isinstance(image, (str, os.PathLike)) else to_rgb(image)
    if settings.pad2square:
        mean = NORMALIZATIONS.get(settings.norm, (IMAGENET_MEAN, None))[0]
        img = expand_to_square(img, tuple(int(m * 255) for m in mean))
    if transform is None:
        transform = build_transform("chat", settings.image_size, settings.norm)
    if settings.dynamic_image_size:
        tiles = dynamic_preprocess(
            img,
            settings.min_dynamic_patch,
            max_num if max_num is not None else settings.max_dynamic_patch,
            settings.image_size,
            settings.use_thumbnail,
        )
    else:
        tiles = [img]
    return torch.stack([transform(t) for t in tiles])  # (T, 3, S, S)


def preprocess_images(
    images: list[Image.Image | str | os.PathLike], settings: ChatImageSettings = ChatImageSettings()
) -> tuple[torch.Tensor, list[int]]:
    """Several images -> (all tiles concatenated float32[sum T, 3, S, S], tiles per image)."""
    per_image = [preprocess_image(im, settings) for im in images]
    return torch.cat(per_image), [p.shape[0] for p in per_image]


def card_preprocess_image(
    image: Image.Image | str | os.PathLike, settings: ChatImageSettings = ChatImageSettings()
) -> torch.Tensor:
    """The V1-2 model card's preprocessing, exactly: float32[1, 3, S, S].

    ``Image.open(path).resize((S, S))`` in the file's own mode (PIL's default filter: NEAREST for "P"
    and "1" images, BICUBIC otherwise), then ``CLIPImageProcessor`` with the checkpoint's
    preprocessor_config (RGB conversion, shortest-edge resize and centre crop, both no-ops at S x S,
    ``x * (1/255)`` in float64 cast to float32, ``(x - mean) / std`` in float32).
    """
    if isinstance(image, (str, os.PathLike)):
        img = read_image(image, convert=None)  # checked: missing, non-image, pixel limit, truncated
    else:
        img = image
    size = settings.image_size
    img = img.resize((size, size)).convert("RGB")  # resample=None: PIL picks the mode's default filter
    mean, std = NORMALIZATIONS[settings.norm]
    x = (np.asarray(img).astype(np.float64) * (1 / 255)).astype(np.float32)  # (S, S, 3)
    x = (x - np.asarray(mean, dtype=np.float32)) / np.asarray(std, dtype=np.float32)
    return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))[None]  # (1, 3, S, S)
