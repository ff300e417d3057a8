"""Pixel shuffle orders, dynamic tiling candidates and video frame indices (hand-computed values)."""

from __future__ import annotations

import warnings

import pytest
import torch
from PIL import Image

from internvl.core.errors import ConfigError
from internvl.data.image_processing import (
    ChatImageSettings,
    dynamic_preprocess,
    find_closest_aspect_ratio,
    preprocess_image,
    target_ratios,
)
from internvl.data.synthetic import synthetic_image
from internvl.data.transforms import build_transform
from internvl.data.video import get_index, video_prompt_prefix
from internvl.models.projector import build_mlp_projector, pixel_shuffle


def _grid(rows: int, cols: int) -> torch.Tensor:
    # x[0, r, c] = [r, c]: each patch carries its own coordinates (C = 2).
    r, c = torch.meshgrid(torch.arange(rows), torch.arange(cols), indexing="ij")
    return torch.stack([r, c], dim=-1).float().unsqueeze(0)


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_pixel_shuffle_token_contents_and_order(version):
    x = _grid(4, 4)  # (1, 4, 4, 2)
    y = pixel_shuffle(x, 0.5, version)  # (1, 2, 2, 8)
    tokens = y.reshape(4, 8)
    for r in range(2):
        for c in range(2):
            t = c * 2 + r if version == "v1" else r * 2 + c  # v1 is column-major over the merged grid
            expected = [2 * r, 2 * c, 2 * r, 2 * c + 1, 2 * r + 1, 2 * c, 2 * r + 1, 2 * c + 1]
            assert tokens[t].tolist() == expected, (version, r, c)


def test_ps_version_v1_is_noted_once_per_model_load_at_debug_level(caplog):
    """Quiet by default: pixel_shuffle itself warns nothing; a v1 model notes it once when built (visible
    with `internvl -v`), and a v2 model or one without a pixel shuffle not at all."""
    import logging

    from internvl.models.internvl_chat import build_internvl_chat, tiny_chat_config

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pixel_shuffle(_grid(4, 4), 0.5, "v1")
    note = "ps_version='v1'"
    with caplog.at_level(logging.DEBUG, logger="internvl.models.internvl_chat"):
        model = build_internvl_chat(tiny_chat_config(64, ps_version="v1"), seed=0)
        size = model.config.image_size
        with torch.no_grad():  # forwards add no further notes (the reference warned on each)
            model.extract_feature(torch.zeros(1, 3, size, size))
            model.extract_feature(torch.zeros(1, 3, size, size))
    records = [r for r in caplog.records if note in r.getMessage()]
    assert len(records) == 1 and records[0].levelno == logging.DEBUG
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger="internvl.models.internvl_chat"):
        build_internvl_chat(tiny_chat_config(64, ps_version="v2"), seed=0)
    assert not [r for r in caplog.records if note in r.getMessage()]


def test_pixel_shuffle_rejects_unknown_version_and_odd_grid():
    with pytest.raises(ConfigError, match="ps_version"):
        pixel_shuffle(_grid(4, 4), 0.5, "v3")
    with pytest.raises(ConfigError, match="3x3"):
        pixel_shuffle(_grid(3, 3), 0.5, "v2")


def test_mlp_projector_keys_match_checkpoint():
    mlp = build_mlp_projector(8, 16, 0.5)
    assert sorted(mlp.state_dict()) == ["0.bias", "0.weight", "1.bias", "1.weight", "3.bias", "3.weight"]
    assert mlp[1].in_features == 32


def test_candidate_grid_order_matches_reference():
    assert target_ratios(1, 6) == [
        (1, 1),
        (1, 2),
        (2, 1),
        (3, 1),
        (1, 3),
        (4, 1),
        (1, 4),
        (2, 2),
        (1, 5),
        (5, 1),
        (6, 1),
        (2, 3),
        (1, 6),
        (3, 2),
    ]
    assert target_ratios(1, 12) == [
        (1, 1),
        (1, 2),
        (2, 1),
        (3, 1),
        (1, 3),
        (2, 2),
        (4, 1),
        (1, 4),
        (5, 1),
        (1, 5),
        (1, 6),
        (6, 1),
        (3, 2),
        (2, 3),
        (7, 1),
        (1, 7),
        (4, 2),
        (2, 4),
        (1, 8),
        (8, 1),
        (1, 9),
        (3, 3),
        (9, 1),
        (2, 5),
        (5, 2),
        (10, 1),
        (1, 10),
        (11, 1),
        (1, 11),
        (12, 1),
        (3, 4),
        (4, 3),
        (1, 12),
        (6, 2),
        (2, 6),
    ]


def test_closest_aspect_ratio_and_tie_break():
    ratios = target_ratios(1, 6)
    assert find_closest_aspect_ratio(800 / 600, ratios, 800, 600, 448) == (3, 2)  # |4/3 - 3/2| < |4/3 - 1|
    assert find_closest_aspect_ratio(2000 / 500, ratios, 2000, 500, 448) == (4, 1)
    # 448x448: (1,1) and (2,2) tie on ratio; (2,2) wins only for an image larger than half of 4 tiles.
    assert find_closest_aspect_ratio(1.0, ratios, 448, 448, 448) == (1, 1)
    assert find_closest_aspect_ratio(1.0, ratios, 900, 900, 448) == (2, 2)


def test_dynamic_preprocess_tiles_row_major_with_thumbnail():
    img = Image.new("RGB", (2 * 8, 8))
    img.paste((255, 0, 0), (0, 0, 8, 8))
    img.paste((0, 0, 255), (8, 0, 16, 8))
    tiles = dynamic_preprocess(img, 1, 6, image_size=8, use_thumbnail=True)
    assert len(tiles) == 3 and all(t.size == (8, 8) for t in tiles)
    assert tiles[0].getpixel((4, 4)) == (255, 0, 0) and tiles[1].getpixel((4, 4)) == (0, 0, 255)
    assert len(dynamic_preprocess(img, 1, 1, image_size=8, use_thumbnail=True)) == 1  # no thumbnail for 1 tile


def test_single_tile_preprocessing_equals_chat_transform():
    img = synthetic_image(3, size=80)
    x = preprocess_image(img, ChatImageSettings(image_size=56))
    assert x.shape == (1, 3, 56, 56)
    torch.testing.assert_close(x[0], build_transform("chat", 56)(img), rtol=0, atol=0)
    dyn = preprocess_image(
        Image.new("RGB", (120, 56)), ChatImageSettings(image_size=56, dynamic_image_size=True, use_thumbnail=True)
    )
    assert dyn.shape == (3, 3, 56, 56)  # 2 tiles + thumbnail


def test_settings_from_v1_2_config():
    s = ChatImageSettings.from_config_dict({"force_image_size": 448, "vision_config": {"image_size": 448}})
    assert (s.image_size, s.dynamic_image_size, s.use_thumbnail) == (448, False, False)


def test_get_index_matches_card_example():
    assert get_index(None, 30, 299, num_segments=8).tolist() == [18, 55, 93, 130, 168, 205, 242, 280]
    assert get_index((1.0, 2.0), 10, 99, num_segments=2).tolist() == [12, 17]


def test_video_prompt_prefix():
    assert video_prompt_prefix(2) == "Frame1: <image>\nFrame2: <image>\n"


def _test_images():
    import numpy as np

    rgb = synthetic_image(1, size=90).resize((90, 70))
    rgba = np.array(rgb.convert("RGBA"))
    rgba[..., 3] = np.linspace(0, 255, rgba.shape[1]).astype(np.uint8)[None]  # a horizontal alpha ramp
    return rgb, Image.fromarray(rgba), rgb.convert("P", palette=Image.ADAPTIVE, colors=16)


def test_card_path_resizes_before_rgb_conversion_with_pils_default_filter():
    from internvl.data.image_processing import card_preprocess_image
    from internvl.data.transforms import normalize, to_tensor

    rgb, rgba, pal = _test_images()
    s = ChatImageSettings(image_size=56)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    # RGB: identical to the default (eval) path
    torch.testing.assert_close(card_preprocess_image(rgb, s), preprocess_image(rgb, s), rtol=0, atol=0)
    # palette: NEAREST on the palette image (PIL's default for mode "P"), not bicubic
    card = card_preprocess_image(pal, s)
    nearest = normalize(to_tensor(pal.convert("RGB").resize((56, 56), Image.NEAREST)), mean, std)[None]
    torch.testing.assert_close(card, nearest, rtol=0, atol=1e-6)
    assert (card - preprocess_image(pal, s)).abs().max() > 0.1  # the eval path (bicubic on RGB) differs
    # RGBA: resized with its alpha, then the alpha is dropped (transformers 4.37's convert_to_rgb)
    by_hand = normalize(to_tensor(rgba.resize((56, 56), Image.BICUBIC).convert("RGB")), mean, std)[None]
    torch.testing.assert_close(card_preprocess_image(rgba, s), by_hand, rtol=0, atol=1e-6)


def test_card_path_equals_transformers_clip_image_processor():
    """Independent oracle: the card's CLIPImageProcessor (V1-2 preprocessor_config values) on the card's
    PIL-resized image, bit for bit (RGB and palette; RGBA differs on current transformers, which
    composites transparency on white)."""
    try:
        from transformers import CLIPImageProcessor

        proc = CLIPImageProcessor(
            size={"shortest_edge": 56},
            crop_size=56,
            do_center_crop=True,
            resample=3,
            image_mean=[0.485, 0.456, 0.406],
            image_std=[0.229, 0.224, 0.225],
        )
    except Exception as e:  # pragma: no cover - depends on the installed transformers
        pytest.skip(f"CLIPImageProcessor unavailable: {e}")
    from internvl.data.image_processing import card_preprocess_image

    rgb, _, pal = _test_images()
    for img in (rgb, pal):
        ref = proc(images=img.resize((56, 56)), return_tensors="pt").pixel_values
        torch.testing.assert_close(card_preprocess_image(img, ChatImageSettings(image_size=56)), ref, rtol=0, atol=0)


def test_card_path_reads_files_in_their_own_mode(tmp_path):
    from internvl.data.image_processing import card_preprocess_image

    _, _, pal = _test_images()
    pal.save(tmp_path / "p.png")
    s = ChatImageSettings(image_size=56)
    torch.testing.assert_close(card_preprocess_image(tmp_path / "p.png", s), card_preprocess_image(pal, s))
