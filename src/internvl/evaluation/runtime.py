"""What both evaluation runners share: device/precision choice, checkpoint loading, dataset lookup.

Precision follows the reference tools: clip_benchmark loads fp16 weights and runs under CUDA autocast;
the caption script runs the plain fp16 model. On CPU everything stays float32 (fp16 matmuls on CPU are
slow and not what the published numbers used).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import torch

from internvl.core.errors import ConfigError, DataFormatError
from internvl.data.datasets import DatasetSpec, ImageCaptions, find_missing_images, load_registry

logger = logging.getLogger(__name__)

# Short dataset names of the reference tools -> built-in registry entries.
RETRIEVAL_DATASETS: dict[tuple[str, str], str] = {
    ("flickr30k", "en"): "flickr30k_en_test",
    ("flickr30k", "cn"): "flickr30k_cn_test",
    ("coco", "en"): "coco_karpathy_test",
    ("mscoco_captions", "en"): "mscoco_captions_test",
    ("mscoco_captions", "cn"): "mscoco_captions_cn_test",
}
CAPTION_DATASETS: dict[str, str] = {
    "coco": "coco_karpathy_test",
    "flickr30k": "flickr30k_caption_test",
    "nocaps": "nocaps_val",
}


def pick_device(device: str | None) -> torch.device:
    """``None``/``"auto"``: the first CUDA device when there is one, else the CPU."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as e:
        raise ConfigError(f"--device {device!r}: {e}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {device}: CUDA is not available on this machine; use --device cpu")
    return dev


def pick_dtype(dtype: str | None, device: torch.device) -> str:
    """``None``/``"auto"``: fp16 on CUDA (as the reference evaluations), fp32 elsewhere."""
    if dtype in (None, "auto"):
        return "fp16" if device.type == "cuda" else "fp32"
    return dtype


def autocast_context(device: torch.device, enabled: bool):
    """fp16 autocast on CUDA (clip_benchmark's ``--amp``, its default); a no-op elsewhere."""
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.float16)
    return contextlib.nullcontext()


def load_model_and_tokenizer(model_dir: str | os.PathLike, *, dtype: str, device: torch.device):
    """The InternVL-C/G model and its text tokenizer from one checkpoint directory."""
    from internvl.data.tokenization import InternVLTextTokenizer
    from internvl.models.internvl_cg import InternVLModel

    tokenizer = InternVLTextTokenizer.from_pretrained(model_dir)  # cheap: fail before loading the weights
    model = InternVLModel.from_pretrained(model_dir, dtype=dtype, device=device)
    rows = model.config.qllama_config.vocab_size
    if tokenizer.vocab_size > rows:
        raise ConfigError(
            f"{model_dir}: the tokenizer has {tokenizer.vocab_size} tokens but the model's embedding table "
            f"{rows} rows (qllama_config.vocab_size); the tokenizer files do not belong to this checkpoint"
        )
    return model, tokenizer


def resolve_dataset(
    name: str,
    *,
    task: str,
    language: str | None = None,
    data_root: str | os.PathLike | None = None,
    registry_files: Sequence[str | os.PathLike] = (),
) -> DatasetSpec:
    """A registry entry from a full registry name or a reference short name (``flickr30k`` + language).

    Args:
        task: ``retrieval`` or ``caption`` (the short names map to different files per task).
    """
    registry = load_registry(registry_files, data_root=data_root)
    if name in registry:
        spec = registry.get(name)
        if language is not None and language != spec.language:
            logger.warning("dataset %s is registered with language %s; ignoring --language %s", name, spec.language, language)
        return spec
    if task == "retrieval":
        lang = language or "en"
        short = sorted({n for n, _ in RETRIEVAL_DATASETS})
        if (name, lang) in RETRIEVAL_DATASETS:
            return registry.get(RETRIEVAL_DATASETS[(name, lang)])
        if name in short:
            langs = sorted(lang_ for n, lang_ in RETRIEVAL_DATASETS if n == name)
            raise ConfigError(f"dataset {name!r} has no built-in '{lang}' split; languages: {langs}")
    elif task == "caption":
        short = sorted(CAPTION_DATASETS)
        if name in CAPTION_DATASETS:
            return registry.get(CAPTION_DATASETS[name])
    else:
        raise ValueError(f"task {task!r}; expected 'retrieval' or 'caption'")
    raise ConfigError(
        f"unknown dataset {name!r}: expected a short name ({', '.join(short)}) or a registry entry "
        f"({', '.join(registry.names())}); add your own with --registry FILE.yaml"
    )


def read_records(spec: DatasetSpec, limit: int | None = None) -> list[ImageCaptions]:
    """Parse the dataset, keep the first ``limit`` images and check that all their image files exist."""
    records = spec.read()
    if limit is not None:
        if limit < 1:
            raise ConfigError(f"--limit must be >= 1, got {limit}")
        records = records[:limit]
    if not records:
        raise DataFormatError(f"dataset '{spec.name}': {spec.annotation} lists no images")
    count, first = find_missing_images(records)
    if count:
        listed = "\n".join(f"  {r.image_path} (image id {r.image_id!r}, listed at {r.source})" for r in first)
        raise DataFormatError(
            f"dataset '{spec.name}': {count} of {len(records)} image files are missing under the image root "
            f"{spec.root}; first ones:\n{listed}\nPoint --data-root (or the 'root' of a --registry entry) at the "
            "folder that holds them."
        )
    return records


def write_json(path: str | os.PathLike, obj, *, append: bool = False) -> Path:
    """Write ``obj`` as JSON (or append it as one line, as clip_benchmark's result files)."""
    import json

    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    if append:
        with open(p, "a", encoding="utf-8") as f:
            f.write(json.dumps(obj, ensure_ascii=False) + "\n")
    else:
        p.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return p
