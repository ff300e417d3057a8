"""Caption datasets in the file formats of the official guides, and a registry of named datasets.

`read_flickr_captions` (Flickr30K / Flickr30K-CN Karpathy ``.txt``), `read_coco_captions` (LAVIS list
or COCO caption JSON: COCO Karpathy, Flickr30K JSON, NoCaps), `read_caption_references` (ground truth
for scoring), `load_registry` (built-in + user YAML entries) and `CaptionImageDataset` (lazy images).
"""

from __future__ import annotations

from internvl.data.datasets.coco import read_caption_references, read_coco_captions
from internvl.data.datasets.flickr import read_flickr_captions
from internvl.data.datasets.images import CaptionImageDataset, loader_batches
from internvl.data.datasets.records import ImageCaptions, find_missing_images, pre_caption
from internvl.data.datasets.registry import (
    BUILTIN_REGISTRY,
    FORMATS,
    DatasetRegistry,
    DatasetSpec,
    infer_format,
    load_registry,
    read_registry_file,
)

__all__ = [
    "BUILTIN_REGISTRY",
    "FORMATS",
    "CaptionImageDataset",
    "loader_batches",
    "DatasetRegistry",
    "DatasetSpec",
    "ImageCaptions",
    "find_missing_images",
    "infer_format",
    "load_registry",
    "pre_caption",
    "read_caption_references",
    "read_coco_captions",
    "read_flickr_captions",
    "read_registry_file",
]
