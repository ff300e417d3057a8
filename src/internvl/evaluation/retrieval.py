"""Zero-shot / fine-tuned image-text retrieval with clip_benchmark's protocol (spec §6).

Per batch of images (64 by default): all their captions, cleaned with `pre_caption` and flattened in
image order then caption order, are tokenised once ("summarize:" prefix, 80 ids); images use the
retrieval transform (resize to S x S, no crop); both embeddings are L2-normalised and moved to the CPU
in float32. recall@k is then computed in streamed blocks (`internvl.evaluation.metrics.retrieval`).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from internvl.core.devices import amp_dtype, pick_device, pick_dtype
from internvl.core.errors import ConfigError, DataFormatError, InternVLError
from internvl.core.io import write_json
from internvl.data.datasets import CaptionImageDataset, ImageCaptions, loader_batches, pre_caption
from internvl.data.transforms import build_transform
from internvl.evaluation.metrics.retrieval import DEFAULT_KS, retrieval_metrics
from internvl.evaluation.runtime import read_records, resolve_dataset
from internvl.inference.embedding import embed_texts, encode_batches
from internvl.inference.loading import load_pretrained

logger = logging.getLogger(__name__)

# clip_benchmark's --model names for the two heads (recorded in the result JSON).
MODEL_NAMES = {"InternVL-C": "internvl_c_retrieval_hf", "InternVL-G": "internvl_g_retrieval_hf"}


@dataclass
class Embeddings:
    """L2-normalised float32 CPU embeddings and, for every text, the index of its image."""

    images: torch.Tensor  # (N_img, D)
    texts: torch.Tensor  # (N_txt, D)
    text_to_image: torch.Tensor  # (N_txt,) int64


@torch.no_grad()
def encode_dataset(
    model,
    tokenizer,
    records: Sequence[ImageCaptions],
    *,
    mode: str = "InternVL-C",
    batch_size: int = 64,
    num_workers: int = 0,
    amp: bool = True,
    clean_captions: bool = True,
    progress: bool = True,
) -> Embeddings:
    """Encode every image and caption of ``records`` the way clip_benchmark does.

    Args:
        model: an ``InternVLModel`` (its device and dtype are used).
        tokenizer: an ``InternVLTextTokenizer``.
        mode: ``InternVL-C`` or ``InternVL-G`` image embedding (texts are the same for both).
        batch_size: images per step; their captions (about 5x as many) are encoded together.
        num_workers: DataLoader processes decoding images.
        amp: fp16 autocast for an fp16 model on CUDA (clip_benchmark's default); fp32/bf16 models and the
            CPU never autocast (`internvl.core.devices.amp_dtype`).
        clean_captions: apply `pre_caption` (the clip_benchmark datasets do).
    """
    from tqdm.auto import tqdm

    device, dtype = model.device, model.dtype
    dataset = CaptionImageDataset(records, build_transform("retrieval", model.image_size))
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers, pin_memory=device.type == "cuda"
    )
    # The bar closes on an error too, so the message after it starts on a line of its own.
    with (
        loader_batches(loader) as batches,
        tqdm(total=len(loader), desc=f"encoding ({mode})", unit="batch", disable=not progress) as bar,
    ):
        images = encode_batches(
            model,
            (pixels for pixels, _ in batches),
            lambda pixels: model.encode_image(pixels.to(device, dtype), mode=mode),
            amp=amp,
            progress=lambda _: bar.update(1),
        )
    # Captions in image order, then caption order; encoded length-sorted with dynamic padding
    # (`embed_texts`), about as many per batch as the captions of one image batch.
    captions, owners = [], []
    for i, record in enumerate(records):
        for caption in record.captions:
            captions.append(pre_caption(caption) if clean_captions else caption)
            owners.append(i)
    per_image = max(1, round(len(captions) / max(1, len(records))))
    texts = embed_texts(model, tokenizer, captions, batch_size * per_image, amp=amp)
    return Embeddings(images, texts, torch.tensor(owners, dtype=torch.int64))


def evaluate_retrieval(
    model,
    tokenizer,
    records: Sequence[ImageCaptions],
    *,
    mode: str = "InternVL-C",
    batch_size: int = 64,
    num_workers: int = 0,
    amp: bool = True,
    ks: Sequence[int] = DEFAULT_KS,
    progress: bool = True,
) -> dict[str, float]:
    """recall@k metrics (clip_benchmark keys plus ``mean_recall``) of ``model`` on ``records``."""
    uncaptioned = [r for r in records if not r.captions]
    if uncaptioned:
        r = uncaptioned[0]
        raise DataFormatError(
            f"{len(uncaptioned)} image(s) have no caption, e.g. image id {r.image_id!r} ({r.source}); "
            "every image needs at least one caption for image->text retrieval"
        )
    emb = encode_dataset(
        model, tokenizer, records, mode=mode, batch_size=batch_size, num_workers=num_workers, amp=amp, progress=progress
    )
    try:
        return retrieval_metrics(emb.images, emb.texts, emb.text_to_image, ks=ks, device=model.device)
    except ValueError as e:  # e.g. NaN embeddings from an fp16 overflow
        raise InternVLError(
            f"retrieval metrics failed: {e} (model dtype {model.dtype}; try --dtype fp32 or bf16)"
        ) from None


def run_retrieval(
    model_dir: str | os.PathLike,
    dataset: str,
    *,
    language: str | None = None,
    mode: str = "InternVL-C",
    data_root: str | os.PathLike | None = None,
    registry_files: Sequence[str | os.PathLike] = (),
    batch_size: int = 64,
    limit: int | None = None,
    device: str | None = None,
    dtype: str | None = None,
    amp: bool = True,
    num_workers: int = 4,
    ks: Sequence[int] = DEFAULT_KS,
    output: str | os.PathLike | None = None,
    append: bool = False,
    progress: bool = True,
) -> dict:
    """Load a checkpoint, evaluate it on a registered dataset and (optionally) write the result JSON.

    Returns:
        clip_benchmark's result object ``{"dataset", "model", "pretrained", "task", "metrics",
        "language"}`` plus ``mode``, ``num_images``, ``num_texts``, ``image_size``, ``dtype``, ``limit``
        and ``seconds``.
    """
    if mode not in MODEL_NAMES:
        raise ConfigError(f"--mode {mode!r}; expected one of {list(MODEL_NAMES)}")
    spec = resolve_dataset(
        dataset, task="retrieval", language=language, data_root=data_root, registry_files=registry_files
    )
    records = read_records(spec, limit)  # fail on data problems before loading a 14B model
    dev = pick_device(device)
    dt = pick_dtype(dtype, dev)
    start = time.perf_counter()
    loaded = load_pretrained(model_dir, dtype=dt, device=dev, model_types=("internvl",))
    model, tokenizer = loaded.model, loaded.tokenizer
    metrics = evaluate_retrieval(
        model,
        tokenizer,
        records,
        mode=mode,
        batch_size=batch_size,
        num_workers=num_workers,
        amp=amp,
        ks=ks,
        progress=progress,
    )
    result = {
        "dataset": spec.name,
        "model": MODEL_NAMES[mode],
        "pretrained": str(model_dir),
        "task": "zeroshot_retrieval",
        "metrics": metrics,
        "language": spec.language,
        "mode": mode,
        "num_images": len(records),
        "num_texts": sum(len(r.captions) for r in records),
        "image_size": model.image_size,
        "dtype": dt,
        "amp": amp_dtype(model.device, model.dtype, amp) is not None,
        "limit": limit,
        "seconds": round(time.perf_counter() - start, 2),
    }
    if output is not None:
        write_json(output, result, append=append)
    return result
