"""Image transforms reproduce torchvision-on-PIL numerics, computed here independently from PIL + NumPy."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from internvl.core.errors import DataFormatError
from internvl.data import transforms as T
from internvl.data.synthetic import synthetic_image


def _reference(img: Image.Image, size_wh: tuple[int, int], mean, std) -> torch.Tensor:
    """The documented torchvision sequence written out with NumPy (float64 stats cast like torchvision)."""
    arr = np.asarray(img.convert("RGB").resize(size_wh, Image.BICUBIC), dtype=np.uint8).astype(np.float32) / np.float32(
        255
    )
    arr = (arr - np.asarray(mean, dtype=np.float32)) / np.asarray(std, dtype=np.float32)
    return torch.from_numpy(arr.transpose(2, 0, 1).copy())


@pytest.mark.parametrize("mode", ["RGB", "L", "RGBA", "P"])
def test_retrieval_transform_matches_pil_numpy(mode):
    img = synthetic_image(1, size=97).resize((97, 61))
    img = img.convert(mode)
    out = T.build_transform("retrieval", 56)(img)
    expected = _reference(img, (56, 56), T.IMAGENET_MEAN, T.IMAGENET_STD)
    assert out.dtype == torch.float32 and out.shape == (3, 56, 56)
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=0)


def test_classification_transform_resizes_short_side_then_center_crops():
    img = synthetic_image(2, size=90).resize((90, 45))  # w=90, h=45
    out = T.build_transform("classification", 30, norm="clip")(img)
    resized = img.resize((60, 30), Image.BICUBIC)  # short side 45 -> 30, long side int(30*90/45)=60
    cropped = resized.crop((15, 0, 45, 30))  # left = round((60-30)/2)
    expected = _reference(cropped, (30, 30), T.CLIP_MEAN, T.CLIP_STD)
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=0)


def test_resize_int_truncates_long_side_like_torchvision():
    img = Image.new("RGB", (100, 33))
    assert T.resize(img, 20).size == (int(20 * 100 / 33), 20)
    assert T.resize(Image.new("RGB", (33, 100)), 20).size == (20, int(20 * 100 / 33))


def test_center_crop_rounds_offsets_and_pads_small_images():
    img = Image.fromarray(np.arange(7 * 5 * 3, dtype=np.uint8).reshape(5, 7, 3))
    crop = T.center_crop(img, 4)
    left, top = int(round((7 - 4) / 2)), int(round((5 - 4) / 2))
    np.testing.assert_array_equal(np.asarray(crop), np.asarray(img)[top : top + 4, left : left + 4])
    padded = T.center_crop(img, 9)
    assert padded.size == (9, 9)
    assert np.asarray(padded)[0].sum() == 0  # zero padding rows


def test_to_tensor_and_normalize_are_float32_exact():
    img = Image.fromarray(np.full((2, 2, 3), 255, dtype=np.uint8))
    x = T.to_tensor(img)
    assert x.dtype == torch.float32 and torch.all(x == 1.0)
    y = T.normalize(x, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    assert torch.all(y == 2.0)


def test_train_transform_is_seeded_and_covers_flip():
    img = synthetic_image(3, size=80)
    a = T.build_transform("train_retrieval", 32, generator=torch.Generator().manual_seed(5))
    b = T.build_transform("train_retrieval", 32, generator=torch.Generator().manual_seed(5))
    outs_a = [a(img) for _ in range(6)]
    outs_b = [b(img) for _ in range(6)]
    for x, y in zip(outs_a, outs_b, strict=True):
        torch.testing.assert_close(x, y, atol=0, rtol=0)
    assert any(not torch.equal(outs_a[0], o) for o in outs_a[1:])


def test_random_resized_crop_params_stay_inside_and_respect_scale():
    img = Image.new("RGB", (120, 80))
    g = torch.Generator().manual_seed(0)
    for _ in range(50):
        top, left, h, w = T.random_resized_crop_params(img, (0.5, 1.0), (3 / 4, 4 / 3), g)
        assert 0 <= top and top + h <= 80 and 0 <= left and left + w <= 120
        assert 0.45 * 9600 <= h * w <= 1.05 * 9600


def test_unknown_kind_and_norm_are_rejected():
    with pytest.raises(ValueError, match="transform kind"):
        T.build_transform("foo", 32)
    with pytest.raises(ValueError, match="norm"):
        T.build_transform("retrieval", 32, norm="bar")


def test_load_image_errors_name_the_path(tmp_path):
    with pytest.raises(DataFormatError, match="missing.jpg"):
        T.load_image(tmp_path / "missing.jpg")
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    with pytest.raises(DataFormatError, match="bad.jpg"):
        T.load_image(bad)
    good = tmp_path / "good.png"
    synthetic_image(0).convert("RGBA").save(good)
    assert T.load_image(good).mode == "RGB"
