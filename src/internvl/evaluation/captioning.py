"""Zero-shot captioning evaluation on COCO Karpathy test, Flickr30K Karpathy test and NoCaps val (spec §5).

Generation follows the reference script: prompt ``"English caption:"`` after the query tokens, beam
search with 5 beams, 8 to 30 new tokens, caption = decoded text stripped; images resized to S x S. The
captions are written in COCO results format (``[{"image_id", "caption"}]``, dataset order) and scored
with pycocoevalcap against the dataset's COCO-format ground truth (BLEU-1..4, METEOR, ROUGE-L, CIDEr).

Runs are incremental: every batch is appended to ``<dataset>_captions.partial.jsonl`` as it finishes,
and a rerun with the same settings captions only the images not yet there (see ``run_caption_eval``).

Differences from the reference script, all on purpose: one process (no NCCL group is required), any
batch size (the prompt is shared, so no padding is involved; the reference asserts batch size 1 —
larger batches agree up to fp16 rounding of batched matmuls), fixed output file names instead of a
timestamp, and no SPICE (the reference output has none either).
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from internvl.core.caption_defaults import CAPTION_BATCH_SIZE, GENERATION, PROMPT
from internvl.core.devices import pick_device, pick_dtype
from internvl.core.errors import DataFormatError, InternVLError
from internvl.data.datasets import CaptionImageDataset, ImageCaptions, loader_batches, read_caption_references
from internvl.data.transforms import build_transform
from internvl.evaluation.metrics.captioning import CAPTION_METRICS, average_length, score_captions
from internvl.evaluation.partial_results import PartialResults, file_fingerprint, write_json_atomic
from internvl.evaluation.runtime import read_records, resolve_dataset
from internvl.inference.loading import load_pretrained

logger = logging.getLogger(__name__)

# Files whose change means "another model": weights, configs, tokenizer. A whitelist, so results
# written into the model folder itself (--output = model dir) do not look like a model change.
MODEL_FILES = (
    "*.safetensors",
    "*.bin",
    "*.pt",
    "*.pth",
    "*.index.json",
    "config.json",
    "generation_config.json",
    "tokenizer*",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab*",
    "merges.txt",
    "*.model",
)


@torch.no_grad()
def caption_dataset(
    model,
    tokenizer,
    records: Sequence[ImageCaptions],
    *,
    prompt: str = PROMPT,
    batch_size: int = CAPTION_BATCH_SIZE,
    num_workers: int = 0,
    num_beams: int = GENERATION["num_beams"],
    min_new_tokens: int = GENERATION["min_new_tokens"],
    max_new_tokens: int = GENERATION["max_new_tokens"],
    progress: bool = True,
    on_batch: Callable[[list[dict]], None] | None = None,
) -> list[dict]:
    """Generate one caption per image; returns COCO results ``[{"image_id": ..., "caption": ...}]`` in order.

    Args:
        on_batch: called with each batch's results as soon as they exist (``run_caption_eval`` appends
            them to the partial file there, so a crash loses at most one batch).
    """
    from tqdm.auto import tqdm

    from internvl.inference.captioning import generate_captions

    dataset = CaptionImageDataset(records, build_transform("caption", model.image_size))
    # Workers decode the next batches while the device generates; pinned pages let the copy run async.
    pinned = model.device.type == "cuda"
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers, pin_memory=pinned
    )
    results: list[dict] = []
    # The bar closes on an error too, so the message after it starts on a line of its own.
    with (
        loader_batches(loader) as batches,
        tqdm(total=len(records), desc="captioning", unit="img", disable=not progress) as bar,
    ):
        for pixels, indices in batches:
            pixels = pixels.to(model.device, non_blocking=pinned)
            captions = generate_captions(
                model,
                tokenizer,
                pixels,
                prompt=prompt,
                num_beams=num_beams,  # generate_captions casts the dtype
                min_new_tokens=min_new_tokens,
                max_new_tokens=max_new_tokens,
            )
            batch = [
                {"image_id": records[i].image_id, "caption": c} for i, c in zip(indices.tolist(), captions, strict=True)
            ]
            if on_batch is not None:
                on_batch(batch)
            results.extend(batch)
            bar.update(len(indices))
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
            reference_file,
            len(references),
            len(predictions),
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
    batch_size: int = CAPTION_BATCH_SIZE,
    limit: int | None = None,
    device: str | None = None,
    dtype: str | None = None,
    num_workers: int = 2,
    prompt: str = PROMPT,
    num_beams: int = GENERATION["num_beams"],
    min_new_tokens: int = GENERATION["min_new_tokens"],
    max_new_tokens: int = GENERATION["max_new_tokens"],
    resume: bool = True,
    score: bool = True,
    progress: bool = True,
) -> dict:
    """Caption a registered dataset, write ``{name}_captions.json`` and ``{name}_metrics.json`` to ``output_dir``.

    Each batch is appended to ``{name}_captions.partial.jsonl`` (flushed and fsynced) as soon as it is
    generated, and the settings that matter for the captions go to ``{name}_captions.partial.settings.json``.
    With ``resume`` (the default) an existing partial file written with the same settings is continued:
    only images without a caption there are generated. Both files are kept after a successful run, so
    rerunning re-scores without generating and a larger ``limit`` continues a smoke run. The final JSON
    files are written atomically.

    Args:
        resume: ``False`` discards an existing partial file and starts over (CLI ``--overwrite``).
        score: ``False`` only generates (no ground truth or Java needed; ``metrics`` is ``None``); a
            later run with ``score=True`` scores the saved captions without generating again.

    Returns:
        The metrics object written: ``dataset``, ``model``, ``prompt``, ``num_images``,
        ``average_length``, ``metrics`` (Bleu_1..4, METEOR, ROUGE_L, CIDEr), ``generation``, ``dtype``,
        ``limit``, ``captions_file``, ``partial_file``, ``resumed_images`` (captions taken from the partial
        file), ``generated_images`` (captions generated by this call), ``seconds`` (this call).

    Raises:
        ConfigError: the partial file was written with other settings (model, dataset, prompt,
            generation settings, dtype); the message lists them.
    """
    spec = resolve_dataset(dataset, task="caption", data_root=data_root, registry_files=registry_files)
    records = read_records(spec, limit)
    # Read the ground truth first: fail before generating for an hour.
    references = read_caption_references(spec.reference_file) if score else None
    dev = pick_device(device)
    dt = pick_dtype(dtype, dev)
    start = time.perf_counter()
    out = Path(output_dir)
    generation = {"num_beams": num_beams, "min_new_tokens": min_new_tokens, "max_new_tokens": max_new_tokens}
    # What decides a caption: compared when resuming. Batch size and device only change fp16 rounding,
    # and the limit only how many images, so those may change between runs (recorded as details).
    settings = {
        "model": str(Path(model_dir).resolve()),
        "model_files": file_fingerprint(model_dir, MODEL_FILES) if Path(model_dir).is_dir() else {},
        "dataset": spec.name,
        "annotation_sha256": _sha256(spec.annotation),
        "prompt": prompt,
        "generation": generation,
        "dtype": dt,
    }
    details = {
        "annotation": str(spec.annotation),
        "image_root": str(spec.root),
        "limit": limit,
        "batch_size": batch_size,
        "device": str(dev),
    }
    partial = PartialResults.open(
        out / f"{spec.name}_captions.partial.jsonl",
        out / f"{spec.name}_captions.partial.settings.json",
        settings,
        details=details,
        key="image_id",
        fields=("image_id", "caption"),
        resume=resume,
    )
    with partial:
        resumed = sum(r.image_id in partial.done for r in records)
        todo = [r for r in records if r.image_id not in partial.done]
        if resumed:
            logger.info(
                "%d of %d images already captioned in %s; captioning the other %d",
                resumed,
                len(records),
                partial.path,
                len(todo),
            )
        if todo:  # a finished run rescored needs no model
            loaded = load_pretrained(model_dir, dtype=dt, device=dev, model_types=("internvl",))
            model, tokenizer = loaded.model, loaded.tokenizer
            caption_dataset(
                model,
                tokenizer,
                todo,
                prompt=prompt,
                batch_size=batch_size,
                num_workers=num_workers,
                num_beams=num_beams,
                min_new_tokens=min_new_tokens,
                max_new_tokens=max_new_tokens,
                progress=progress,
                on_batch=partial.append,
            )
    results = [{"image_id": r.image_id, "caption": partial.done[r.image_id]["caption"]} for r in records]
    captions_file = write_json_atomic(out / f"{spec.name}_captions.json", results)
    metrics = None
    if references is not None:
        metrics = score_results(results, references, reference_file=spec.reference_file, full=limit is None)
    summary = {
        "dataset": spec.name,
        "model": str(model_dir),
        "prompt": prompt,
        "num_images": len(results),
        "average_length": average_length([r["caption"] for r in results]),
        "metrics": metrics,
        "generation": {**generation, "batch_size": batch_size},
        "dtype": dt,
        "limit": limit,
        "captions_file": str(captions_file),
        "partial_file": str(partial.path),
        "resumed_images": resumed,
        "generated_images": len(todo),
        "seconds": round(time.perf_counter() - start, 2),
    }
    write_json_atomic(out / f"{spec.name}_metrics.json", summary)
    return summary


def _sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


__all__ = ["CAPTION_METRICS", "GENERATION", "PROMPT", "caption_dataset", "run_caption_eval", "score_results"]
