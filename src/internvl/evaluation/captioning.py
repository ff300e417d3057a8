"""Zero-shot captioning evaluation on COCO Karpathy test, Flickr30K Karpathy test and NoCaps val (spec §5).

Generation follows the reference script: prompt ``"English caption:"`` after the query tokens, beam
search with 5 beams, 8 to 30 new tokens, caption = decoded text stripped; images resized to S x S. The
captions are written in COCO results format (``[{"image_id", "caption"}]``, dataset order) and scored
with pycocoevalcap against the dataset's COCO-format ground truth (BLEU-1..4, METEOR, ROUGE-L, CIDEr).

Differences from the reference script, all on purpose: one process (no NCCL group is required), any
batch size (the prompt is shared, so no padding is involved; the reference asserts batch size 1 —
larger batches agree up to fp16 rounding of batched matmuls), fixed output file names instead of a
timestamp, and no SPICE (the reference output has none either).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from internvl.core.errors import DataFormatError, InternVLError
from internvl.data.datasets import CaptionImageDataset, ImageCaptions, read_caption_references
from internvl.data.transforms import build_transform
from internvl.evaluation.metrics.captioning import CAPTION_METRICS, average_length, score_captions
from internvl.evaluation.runtime import (
    load_model_and_tokenizer,
    pick_device,
    pick_dtype,
    read_records,
    resolve_dataset,
    write_json,
)

logger = logging.getLogger(__name__)

PROMPT = "English caption:"
GENERATION = {"num_beams": 5, "min_new_tokens": 8, "max_new_tokens": 30}


@torch.no_grad()
def caption_dataset(
    model,
    tokenizer,
    records: Sequence[ImageCaptions],
    *,
    prompt: str = PROMPT,
    batch_size: int = 1,
    num_workers: int = 0,
    num_beams: int = GENERATION["num_beams"],
    min_new_tokens: int = GENERATION["min_new_tokens"],
    max_new_tokens: int = GENERATION["max_new_tokens"],
    progress: bool = True,
) -> list[dict]:
    """Generate one caption per image; returns COCO results ``[{"image_id": ..., "caption": ...}]`` in order."""
    from tqdm.auto import tqdm

    from internvl.inference.captioning import generate_captions

    device, dtype = model.device, model.dtype
    dataset = CaptionImageDataset(records, build_transform("caption", model.image_size))
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    results: list[dict] = []
    bar = tqdm(total=len(records), desc="captioning", unit="img", disable=not progress)
    for pixels, indices in loader:
        captions = generate_captions(
            model, tokenizer, pixels.to(device, dtype), prompt=prompt, num_beams=num_beams,
            min_new_tokens=min_new_tokens, max_new_tokens=max_new_tokens,
        )
        for i, caption in zip(indices.tolist(), captions):
            results.append({"image_id": records[i].image_id, "caption": caption})
        bar.update(len(indices))
    bar.close()
    return results


def score_results(
    results: Sequence[dict], references: dict, *, reference_file: str | os.PathLike = "", full: bool = True
) -> dict[str, float]:
    """pycocoevalcap scores of ``results`` against the references of the captioned images.

    Every captioned image must have references (pycocotools' ``loadRes`` asserts the same). The
    document frequencies of CIDEr come from the references of the captioned images only, so a
    ``--limit`` run is not comparable with the full benchmark.
    """
    predictions = {r["image_id"]: r["caption"] for r in results}
    unknown = [i for i in predictions if i not in references]
    if unknown:
        raise DataFormatError(
            f"{len(unknown)} captioned image id(s) are not in the ground truth {reference_file}, e.g. {unknown[:5]}; "
            "the annotation and reference files must describe the same images"
        )
    if full and len(predictions) != len(references):
        logger.warning(
            "the ground truth %s has %d images but %d were captioned; scoring the captioned ones",
            reference_file, len(references), len(predictions),
        )
    refs = {i: references[i] for i in predictions}
    try:
        return score_captions(refs, predictions)
    except (ValueError, RuntimeError) as e:
        raise InternVLError(f"caption scoring failed: {e}") from None


def run_caption_eval(
    model_dir: str | os.PathLike,
    dataset: str,
    output_dir: str | os.PathLike,
    *,
    data_root: str | os.PathLike | None = None,
    registry_files: Sequence[str | os.PathLike] = (),
    batch_size: int = 1,
    limit: int | None = None,
    device: str | None = None,
    dtype: str | None = None,
    num_workers: int = 2,
    prompt: str = PROMPT,
    num_beams: int = GENERATION["num_beams"],
    min_new_tokens: int = GENERATION["min_new_tokens"],
    max_new_tokens: int = GENERATION["max_new_tokens"],
    progress: bool = True,
) -> dict:
    """Caption a registered dataset, write ``{name}_captions.json`` and ``{name}_metrics.json`` to ``output_dir``.

    Returns:
        The metrics object written: ``dataset``, ``model``, ``prompt``, ``num_images``,
        ``average_length``, ``metrics`` (Bleu_1..4, METEOR, ROUGE_L, CIDEr), ``generation``, ``dtype``,
        ``limit``, ``captions_file``, ``seconds``.
    """
    spec = resolve_dataset(dataset, task="caption", data_root=data_root, registry_files=registry_files)
    records = read_records(spec, limit)
    references = read_caption_references(spec.reference_file)  # fail before generating for an hour
    dev = pick_device(device)
    dt = pick_dtype(dtype, dev)
    start = time.perf_counter()
    model, tokenizer = load_model_and_tokenizer(model_dir, dtype=dt, device=dev)
    results = caption_dataset(
        model, tokenizer, records, prompt=prompt, batch_size=batch_size, num_workers=num_workers,
        num_beams=num_beams, min_new_tokens=min_new_tokens, max_new_tokens=max_new_tokens, progress=progress,
    )
    out = Path(output_dir)
    captions_file = write_json(out / f"{spec.name}_captions.json", results)
    metrics = score_results(results, references, reference_file=spec.reference_file, full=limit is None)
    summary = {
        "dataset": spec.name,
        "model": str(model_dir),
        "prompt": prompt,
        "num_images": len(results),
        "average_length": average_length([r["caption"] for r in results]),
        "metrics": metrics,
        "generation": {"num_beams": num_beams, "min_new_tokens": min_new_tokens, "max_new_tokens": max_new_tokens,
                       "batch_size": batch_size},
        "dtype": dt,
        "limit": limit,
        "captions_file": str(captions_file),
        "seconds": round(time.perf_counter() - start, 2),
    }
    write_json(out / f"{spec.name}_metrics.json", summary)
    return summary


__all__ = ["CAPTION_METRICS", "GENERATION", "PROMPT", "caption_dataset", "run_caption_eval", "score_results"]
