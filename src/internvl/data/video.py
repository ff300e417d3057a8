"""Video input for InternVL-Chat: the model card's frame sampling, decoded with PyAV (chat spec §4.6).

Frames are sampled uniformly in ``num_segments`` segments (`get_index`, identical to the card's
``get_index``, including round-half-to-even), decoded to RGB and preprocessed like images (one tile
per frame by default). The card decodes with decord; PyAV yields the same frames for
constant-frame-rate files. The prompt prefix is ``"Frame1: <image>\\nFrame2: <image>\\n..."``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

from internvl.core.errors import DataFormatError
from internvl.data.image_processing import ChatImageSettings, preprocess_image


def get_index(
    bound: Sequence[float] | None, fps: float, max_frame: int, first_idx: int = 0, num_segments: int = 32
) -> np.ndarray:
    """Frame indices at the centre of ``num_segments`` equal segments of [start, end] (seconds).

    The card's arithmetic exactly (Python ``round`` for the ends, ``np.round`` for the offsets, ``int``
    truncation); an empty or missing ``bound`` means the whole clip, an end before the start gives
    descending indices and more segments than frames repeats indices, as in the reference.
    Example: fps 30, 300 frames (max_frame 299), 8 segments -> [18, 55, 93, 130, 168, 205, 242, 280].

    Raises:
        DataFormatError: ``num_segments`` < 1 (the reference divides by zero), or a ``bound`` that puts
            frames outside [0, max_frame] (e.g. a start past the end of the clip; the reference returns
            such indices unclamped and the decoder then fails or reads the wrong frames).
    """
    if num_segments < 1:
        raise DataFormatError(f"num_segments={num_segments}; expected >= 1 frames to sample")
    start, end = bound if bound else (-100000, 100000)
    start_idx = max(first_idx, round(start * fps))
    end_idx = min(round(end * fps), max_frame)
    seg_size = float(end_idx - start_idx) / num_segments
    indices = np.array([int(start_idx + seg_size / 2 + np.round(seg_size * k)) for k in range(num_segments)])
    outside = indices[(indices < 0) | (indices > max_frame)]
    if outside.size:
        raise DataFormatError(
            f"video bound {list(bound)} s at {fps} fps selects frames {sorted(set(outside.tolist()))[:8]} outside the "
            f"clip (frames 0..{max_frame}, {(max_frame + 1) / fps:.2f} s); give a bound inside the video"
        )
    return indices


def _open(path: str | os.PathLike):
    try:
        import av
    except ImportError:  # pragma: no cover - av is a declared extra
        raise DataFormatError("video input needs PyAV: pip install av") from None
    try:
        return av.open(str(path))
    except (FileNotFoundError, av.error.FileNotFoundError):
        raise DataFormatError(f"video file not found: {path}") from None
    except av.error.FFmpegError as e:
        raise DataFormatError(f"cannot read video {path}: {e}") from None


def video_info(path: str | os.PathLike) -> tuple[int, float]:
    """(number of frames, average fps) of the first video stream; frames are counted when not stored."""
    with _open(path) as container:
        if not container.streams.video:
            raise DataFormatError(f"{path}: no video stream")
        stream = container.streams.video[0]
        fps = float(stream.average_rate or stream.guessed_rate or 0)
        n = int(stream.frames or 0)
        if n <= 0:
            n = sum(1 for _ in container.decode(stream))
    if n <= 0 or fps <= 0:
        raise DataFormatError(f"{path}: cannot determine frame count / fps (frames={n}, fps={fps})")
    return n, fps


def read_frames(path: str | os.PathLike, indices: Sequence[int]) -> list[Image.Image]:
    """Decode the frames at ``indices`` (0-based, decode order) as RGB PIL images, in ``indices`` order."""
    wanted = sorted(set(int(i) for i in indices))
    found: dict[int, Image.Image] = {}
    with _open(path) as container:
        stream = container.streams.video[0]
        for k, frame in enumerate(container.decode(stream)):
            if k in wanted:
                found[k] = frame.to_image().convert("RGB")
            if k >= wanted[-1]:
                break
    missing = [i for i in wanted if i not in found]
    if missing:
        raise DataFormatError(f"{path}: frames {missing} could not be decoded")
    return [found[int(i)] for i in indices]


def load_video(
    path: str | os.PathLike,
    *,
    bound: Sequence[float] | None = None,
    num_segments: int = 8,
    settings: ChatImageSettings = ChatImageSettings(),
    max_num: int = 1,
) -> tuple[torch.Tensor, list[int]]:
    """The card's ``load_video``: (float32[sum tiles, 3, S, S], tiles per frame).

    ``max_num`` tiles per frame apply only when the checkpoint uses dynamic tiling (1 for V1-2).
    """
    n, fps = video_info(path)
    indices = get_index(bound, fps, n - 1, first_idx=0, num_segments=num_segments)
    frames = read_frames(path, indices)
    tiles = [preprocess_image(f, settings, max_num=max_num) for f in frames]
    return torch.cat(tiles), [t.shape[0] for t in tiles]


def video_prompt_prefix(num_frames: int) -> str:
    """``"Frame1: <image>\\nFrame2: <image>\\n..."`` as in the model card (training used "Frame-1")."""
    return "".join(f"Frame{i + 1}: <image>\n" for i in range(num_frames))
