"""Our dynamic tiling against the reference's `dynamic_preprocess` / `find_closest_aspect_ratio` on every
fixture case: candidate order, the chosen grid (ties included), tile count, thumbnail, tile hashes and pixels."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import PIL
import pytest
from PIL import Image

from internvl.data.image_processing import choose_grid, dynamic_preprocess, find_closest_aspect_ratio, target_ratios
from tests.conftest import parity_root

pytestmark = pytest.mark.parity


def _root():
    root = parity_root() / "dynamic_preprocess"
    if not (root / "cases.json").is_file():
        pytest.fail(f"parity fixtures not found at {root} (set INTERNVL_PARITY_FIXTURES)")
    return root


DATA = json.loads((_root() / "cases.json").read_text())


@pytest.fixture(scope="module")
def stored():
    from safetensors.numpy import load_file

    return load_file(str(_root() / "tiles.safetensors"))


def _range(key: str) -> tuple[int, int]:
    lo, hi = key.split(",")
    return int(lo), int(hi)


@pytest.mark.parametrize("key", sorted(DATA["candidates"]))
def test_candidate_order(key):
    assert [list(g) for g in target_ratios(*_range(key))] == DATA["candidates"][key]


@pytest.mark.parametrize(
    "call", DATA["find_closest_aspect_ratio"], ids=lambda c: f"{c['width']}x{c['height']}-{c['candidates']}"
)
def test_find_closest_aspect_ratio_ties(call):
    got = find_closest_aspect_ratio(
        call["aspect_ratio"],
        target_ratios(*_range(call["candidates"])),
        call["width"],
        call["height"],
        call["image_size"],
    )
    assert list(got) == call["best"]


def _tiles(case):
    with Image.open(_root() / case["image"]) as f:
        image = f.convert("RGB")
    args = (case["min_num"], case["max_num"], case["image_size"])
    return image, args, dynamic_preprocess(image, *args, use_thumbnail=case["use_thumbnail"])


@pytest.mark.parametrize("case", DATA["cases"], ids=lambda c: c["key"])
def test_dynamic_preprocess_grid_and_tiles(case):
    image, args, tiles = _tiles(case)
    assert list(choose_grid(image.width, image.height, *args)) == case["grid_cols_rows"]
    cols, rows = case["grid_cols_rows"]
    assert cols * rows == case["n_grid_tiles"] and len(tiles) == case["n_tiles"]
    assert (len(tiles) > case["n_grid_tiles"]) == case["thumbnail_appended"]
    assert all(t.size == (case["image_size"], case["image_size"]) and t.mode == "RGB" for t in tiles)


# Tile pixels come from Pillow's bicubic resize, whose rounding differs between Pillow releases for some
# images (e.g. 9.5 vs 13 on the 200x500 and 33x777 ones); the fixture records the version it used.
FIXTURE_PILLOW = json.loads((_root() / "meta.json").read_text()).get("versions", {}).get("pillow")


@pytest.mark.skipif(
    FIXTURE_PILLOW not in (None, PIL.__version__),
    reason=f"tile pixels are Pillow-version specific: fixture {FIXTURE_PILLOW}, installed {PIL.__version__}",
)
@pytest.mark.parametrize("case", DATA["cases"], ids=lambda c: c["key"])
def test_dynamic_preprocess_pixels(case, stored):
    _, _, tiles = _tiles(case)
    arrays = np.stack([np.asarray(t, dtype=np.uint8) for t in tiles])  # (n, H, W, 3)
    assert [hashlib.sha256(a.tobytes()).hexdigest() for a in arrays] == case["tile_sha256"]
    golden = stored[case["key"]]
    stride = case["image_size"] // golden.shape[1]  # full tiles (stride 1) or every 16th pixel
    np.testing.assert_array_equal(arrays[:, ::stride, ::stride], golden)
