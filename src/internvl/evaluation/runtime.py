"""What both evaluation runners share: dataset lookup and record checks.

Device / dtype / autocast choice lives in `internvl.core.devices` and checkpoint loading in
`internvl.inference.loading`; their old names here are re-exported for compatibility.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

from internvl.core.devices import pick_device, pick_dtype  # noqa: F401 (re-exported)
from internvl.core.errors import ConfigError, DataFormatError
from internvl.core.io import write_json  # noqa: F401 (re-exported)
from internvl.data.datasets import DatasetSpec, ImageCaptions, find_missing_images, load_registry
from internvl.inference.loading import load_cg_model as load_model_and_tokenizer  # noqa: F401 (re-exported)

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
            logger.warning(
                "dataset %s is registered with language %s; ignoring --language %s", name, spec.language, language
            )
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
    if count:  # one line (the CLI prints it as `error: ...`): the first file in full, a few more by name
        head = first[0]
        more = [str(r.image_path) for r in first[1:3]]
        also = f"; also {', '.join(more)}" + (f" and {count - 1 - len(more)} more" if count - 1 > len(more) else "")
        raise DataFormatError(
            f"dataset '{spec.name}': image file not found: {head.image_path} (image id {head.image_id!r}, listed "
            f"at {head.source}){also if more else ''}; {count} of {len(records)} image files are missing under the "
            f"image root {spec.root}: point --data-root (or the 'root' of a --registry entry) at the folder that "
            "holds them"
        )
    return records
