"""Vision-to-language bridge of InternVL-Chat: pixel shuffle + the ``mlp1`` projector (chat spec §3).

``pixel_shuffle`` merges each 2x2 block of ViT patch features into one token (4x fewer tokens, 4x wider).
Two token orders exist and both are reproduced exactly:

* ``v1`` (InternVL-Chat-V1-2 and its MLP projector were trained with it): the merged 16x16 grid is
  emitted *column-major* (token t = c * 16 + r), i.e. the image is transposed.
* ``v2`` (later releases): row-major (t = r * 16 + c).

Within a token both versions concatenate the patches in the order
x[2r, 2c], x[2r, 2c+1], x[2r+1, 2c], x[2r+1, 2c+1].
"""

from __future__ import annotations

import torch
from torch import nn

from internvl.core.errors import ConfigError

PS_VERSIONS = ("v1", "v2")


def pixel_shuffle(x: torch.Tensor, scale_factor: float = 0.5, version: str = "v2") -> torch.Tensor:
    """Space-to-depth on a patch grid, with the reference's exact memory layout.

    Args:
        x: float[N, H, W, C] patch features (H = rows, W = columns of the ViT grid).
        scale_factor: spatial factor (0.5 merges 2x2 blocks).
        version: ``"v1"`` (transposed token order, V1-2) or ``"v2"`` (row-major).

    Returns:
        float[N, W*s, H*s, C/s^2] for v1 (the transposed grid), float[N, H*s, W*s, C/s^2] for v2.
    """
    if version not in PS_VERSIONS:
        raise ConfigError(f"ps_version={version!r}; expected one of {PS_VERSIONS}")
    n, h, w, c = x.shape
    hs, ws = int(h * scale_factor), int(w * scale_factor)
    if hs / scale_factor != h or ws / scale_factor != w:
        raise ConfigError(f"patch grid {h}x{w} is not divisible by 1/scale_factor={1 / scale_factor:g}")
    x = x.reshape(n, h, ws, int(c / scale_factor))  # (N, H, W*s, C/s): merge column pairs into channels
    x = x.permute(0, 2, 1, 3).contiguous()  # (N, W*s, H, C/s)
    x = x.reshape(n, ws, hs, int(c / (scale_factor * scale_factor)))  # (N, W*s, H*s, C/s^2): merge row pairs
    if version == "v1":
        return x  # left transposed: this is what the V1-2 weights expect (InternVLChatModel notes it once per load)
    return x.permute(0, 2, 1, 3).contiguous()  # (N, H*s, W*s, C/s^2): back to row-major


def build_mlp_projector(vision_width: int, llm_width: int, downsample_ratio: float = 0.5) -> nn.Sequential:
    """``mlp1``: LayerNorm -> Linear -> GELU -> Linear, with the official indices 0/1/3 as state-dict keys.

    The input width is ``vision_width * (1/downsample_ratio)^2`` (3200 * 4 = 12800 for V1-2).
    """
    in_dim = vision_width * int(1 / downsample_ratio) ** 2
    return nn.Sequential(
        nn.LayerNorm(in_dim),
        nn.Linear(in_dim, llm_width),
        nn.GELU(),
        nn.Linear(llm_width, llm_width),
    )
