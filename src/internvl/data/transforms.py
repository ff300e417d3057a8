"""Image preprocessing with the numerics of torchvision on PIL images, without torchvision.

The official checkpoints were trained and evaluated with torchvision transforms applied to PIL
images. On PIL inputs torchvision delegates resizing to ``PIL.Image.resize`` (antialiased), crops with
``PIL.Image.crop``, converts with ``uint8 -> float32 / 255`` and normalises with ``(x - mean) / std``
in float32. We make the same calls in the same order, so the pixels are identical.

Random transforms (random-resized-crop, horizontal flip) draw from an explicit ``torch.Generator``
with the same sampling procedure as torchvision's, so a seed gives reproducible crops.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from internvl.core.errors import DataFormatError
from internvl.core.images import open_image

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CLIP_MEAN = (0.4814546, 0.4578275, 0.40821073)
CLIP_STD = (0.2686295, 0.2613025, 0.2757711)
SIGLIP_MEAN = (0.5, 0.5, 0.5)
SIGLIP_STD = (0.5, 0.5, 0.5)

NORMALIZATIONS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "imagenet": (IMAGENET_MEAN, IMAGENET_STD),
    "clip": (CLIP_MEAN, CLIP_STD),
    "siglip": (SIGLIP_MEAN, SIGLIP_STD),
}

INTERPOLATIONS = {
    "bicubic": Image.BICUBIC,
    "bilinear": Image.BILINEAR,
    "nearest": Image.NEAREST,
    "lanczos": Image.LANCZOS,
}

ImageTransform = Callable[[Image.Image], torch.Tensor]


def load_image(path: str | os.PathLike) -> Image.Image:
    """Open an image file and convert it to RGB (as every reference pipeline does first)."""
    with open_image(path) as img:  # missing / non-image / over the pixel limit: DataFormatError
        try:
            return to_rgb(img)
        except (OSError, SyntaxError, ValueError) as e:  # truncated or corrupt pixel data
            raise DataFormatError(f"cannot decode image {path}: {e}") from None


def to_rgb(img: Image.Image) -> Image.Image:
    """``img.convert("RGB")`` (alpha is dropped, palettes expanded), loading the pixels."""
    return img.convert("RGB") if img.mode != "RGB" else img.copy()


def _interp(name: str | int) -> int:
    if isinstance(name, int):
        return name
    try:
        return INTERPOLATIONS[name]
    except KeyError:
        raise ValueError(f"interpolation {name!r}; expected one of {sorted(INTERPOLATIONS)}") from None


def resize(img: Image.Image, size: int | Sequence[int], interpolation: str | int = "bicubic") -> Image.Image:
    """torchvision ``Resize``: an int resizes the shorter side (the longer one truncated), (h, w) is exact."""
    if isinstance(size, int):
        w, h = img.size
        short, long = (w, h) if w <= h else (h, w)
        if short == size:
            return img
        new_short, new_long = size, int(size * long / short)
        new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
    else:
        new_h, new_w = size
    return img.resize((new_w, new_h), _interp(interpolation))


def center_crop(img: Image.Image, size: int | Sequence[int]) -> Image.Image:
    """torchvision ``CenterCrop``: offsets rounded half-to-even as ``int(round(...))``, zero padding if too small."""
    th, tw = (size, size) if isinstance(size, int) else size
    w, h = img.size
    if tw > w or th > h:
        padded = Image.new(img.mode, (max(w, tw), max(h, th)))
        padded.paste(img, ((max(w, tw) - w) // 2, (max(h, th) - h) // 2))
        img, (w, h) = padded, padded.size
    top = int(round((h - th) / 2.0))
    left = int(round((w - tw) / 2.0))
    return img.crop((left, top, left + tw, top + th))


def to_tensor(img: Image.Image) -> torch.Tensor:
    """torchvision ``ToTensor`` on an RGB PIL image: float32[3, H, W] in [0, 1] (uint8 / 255 in float32)."""
    arr = np.array(img, dtype=np.uint8, copy=True)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous().to(torch.float32).div(255)


def normalize(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """``(x - mean) / std`` per channel, in the tensor's dtype (float32), like torchvision."""
    m = torch.as_tensor(mean, dtype=x.dtype).view(-1, 1, 1)
    s = torch.as_tensor(std, dtype=x.dtype).view(-1, 1, 1)
    return (x - m) / s


def random_resized_crop_params(
    img: Image.Image,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    generator: torch.Generator | None = None,
) -> tuple[int, int, int, int]:
    """torchvision's ``RandomResizedCrop.get_params``: (top, left, height, width), ten tries then a center crop."""
    width, height = img.size
    area = height * width
    log_ratio = torch.log(torch.tensor(ratio))
    for _ in range(10):
        target_area = area * torch.empty(1).uniform_(scale[0], scale[1], generator=generator).item()
        aspect = torch.exp(
            torch.empty(1).uniform_(log_ratio[0].item(), log_ratio[1].item(), generator=generator)
        ).item()
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            i = int(torch.randint(0, height - h + 1, size=(1,), generator=generator).item())
            j = int(torch.randint(0, width - w + 1, size=(1,), generator=generator).item())
            return i, j, h, w
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        h, w = height, int(round(height * max(ratio)))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


@dataclass
class RandomResizedCrop:
    """Crop a random area (``scale``) with a random aspect ratio, then resize to ``size`` x ``size``."""

    size: int
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    interpolation: str = "bicubic"
    generator: torch.Generator | None = None

    def __call__(self, img: Image.Image) -> Image.Image:
        top, left, h, w = random_resized_crop_params(img, self.scale, self.ratio, self.generator)
        return img.crop((left, top, left + w, top + h)).resize((self.size, self.size), _interp(self.interpolation))


@dataclass
class RandomHorizontalFlip:
    p: float = 0.5
    generator: torch.Generator | None = None

    def __call__(self, img: Image.Image) -> Image.Image:
        if torch.rand(1, generator=self.generator).item() < self.p:
            return img.transpose(Image.FLIP_LEFT_RIGHT)
        return img


@dataclass
class RandomJpegReencode:
    """Re-encode as JPEG at a uniformly drawn quality in [low, high] (the reference's SFT augmentation)."""

    low: int = 75
    high: int = 100
    generator: torch.Generator | None = None

    def __call__(self, img: Image.Image) -> Image.Image:
        import io

        quality = int(torch.randint(self.low, self.high + 1, (1,), generator=self.generator).item())
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=quality)
        buf.seek(0)
        return Image.open(buf).convert("RGB")


class Compose:
    """Apply PIL-level steps, then ToTensor and Normalize: one callable PIL image -> float32[3, S, S]."""

    def __init__(
        self, steps: Sequence[Callable[[Image.Image], Image.Image]], mean: Sequence[float], std: Sequence[float]
    ):
        self.steps = list(steps)
        self.mean = tuple(mean)
        self.std = tuple(std)

    def __call__(self, img: Image.Image) -> torch.Tensor:
        img = to_rgb(img)
        for step in self.steps:
            img = step(img)
        return normalize(to_tensor(img), self.mean, self.std)

    def __repr__(self) -> str:
        return f"Compose(steps={self.steps}, mean={self.mean}, std={self.std})"


TRANSFORM_KINDS = ("retrieval", "caption", "classification", "train_retrieval", "chat", "train_chat")


def build_transform(
    kind: str,
    image_size: int,
    norm: str = "imagenet",
    *,
    interpolation: str = "bicubic",
    generator: torch.Generator | None = None,
) -> ImageTransform:
    """The reference pipelines by name (InternVL 1.0 spec §4, chat spec §6.2).

    Args:
        kind: ``retrieval``/``caption``/``chat``: resize to (S, S), no crop. ``classification``: shorter
            side to S, then center crop. ``train_retrieval``: random-resized-crop (scale 0.5-1) + flip.
            ``train_chat``: JPEG re-encoding at quality 75-100, then as ``chat`` (SFT ``data_augment``).
        image_size: S.
        norm: ``imagenet`` (all InternVL checkpoints), ``clip`` or ``siglip`` statistics.
        generator: randomness for the training transform.
    """
    if norm not in NORMALIZATIONS:
        raise ValueError(f"norm {norm!r}; expected one of {sorted(NORMALIZATIONS)}")
    mean, std = NORMALIZATIONS[norm]
    s = image_size
    if kind in ("retrieval", "caption", "chat"):
        steps = [lambda im: resize(im, (s, s), interpolation)]
    elif kind == "classification":
        steps = [lambda im: resize(im, s, interpolation), lambda im: center_crop(im, s)]
    elif kind == "train_retrieval":
        steps = [
            RandomResizedCrop(s, scale=(0.5, 1.0), interpolation=interpolation, generator=generator),
            RandomHorizontalFlip(0.5, generator=generator),
        ]
    elif kind == "train_chat":
        steps = [RandomJpegReencode(generator=generator), lambda im: resize(im, (s, s), interpolation)]
    else:
        raise ValueError(f"transform kind {kind!r}; expected one of {TRANSFORM_KINDS}")
    return Compose(steps, mean, std)
