"""Readers for the JSON caption files (``coco_format``): the LAVIS/BLIP list and the COCO caption dict.

Two JSON layouts occur in the official guides; `read_coco_captions` detects which one a file has.

1. **LAVIS/BLIP list** (``data/coco/annotations/coco_karpathy_{train,val,test}.json``)::

       [{"image": "val2014/COCO_val2014_000000391895.jpg", "caption": ["A man ...", ...]}, ...]   # val/test
       [{"image": "train2014/COCO_train2014_000000057870.jpg", "caption": "A restaurant ...",
         "image_id": "coco_57870"}, ...]                                                         # train

   ``caption`` is a list (one entry per image) or a string (one entry per caption; entries of the same
   image are grouped). Image id: the integer after the last ``_`` of ``image_id`` if present, else of the
   file name (``COCO_val2014_000000391895.jpg`` -> 391895), as the reference computes it. Image file =
   ``{root}/{image}`` (root ``data/coco``).

2. **COCO caption dict** (``coco_karpathy_test_gt.json``, ``flickr30k_test_karpathy.json``,
   ``nocaps_val_4500_captions.json``, clip_benchmark's ``coco_test_karpathy.json``)::

       {"images": [{"id": 0, "file_name": "0013ea2087020901.jpg", ...}, ...],
        "annotations": [{"image_id": 0, "id": 0, "caption": "A baby is standing ..."}, ...]}

   Image file = ``{root}/{file_name}`` (or ``{root}/{image}`` when an entry has no ``file_name``, as the
   reference allows). Images keep the order of ``images``; captions the order of ``annotations``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from internvl.core.errors import DataFormatError
from internvl.core.io import read_json
from internvl.data.datasets.records import ImageCaptions, ImageId

_LIST_EXPECTED = 'an object {"image": "<relative path>", "caption": "<text>" or ["<text>", ...]}'
_DICT_EXPECTED = '{"images": [{"id": ..., "file_name": ...}], "annotations": [{"image_id": ..., "caption": ...}]}'


def load_json(path: str | os.PathLike, what: str) -> Any:
    """Parse a JSON file; errors name the file and, for syntax errors, the line and column."""
    p = Path(path)
    if not p.is_file():
        raise DataFormatError(f"annotation file not found: {p} (expected {what})")
    return read_json(p, expected=what)


def read_coco_captions(annotation: str | os.PathLike, image_root: str | os.PathLike) -> list[ImageCaptions]:
    """Read either JSON layout into one record per image (images without captions keep an empty tuple).

    Raises:
        DataFormatError: missing file, invalid JSON, or an entry with a missing or mistyped field (the
            message names the file, the entry index and the field).
    """
    path = Path(annotation)
    data = load_json(path, f"a COCO-style caption file: a JSON list of {_LIST_EXPECTED}, or {_DICT_EXPECTED}")
    if isinstance(data, list):
        return _read_list(data, path, Path(image_root))
    if isinstance(data, dict):
        return _read_dict(data, path, Path(image_root))
    raise DataFormatError(
        f"{path}: top level is a JSON {type(data).__name__}; expected a list of {_LIST_EXPECTED} or {_DICT_EXPECTED}"
    )


def read_caption_references(annotation: str | os.PathLike) -> dict[ImageId, list[str]]:
    """Reference captions per image id from a COCO caption dict (the ground truth the scorer compares to).

    The image set is ``images`` when present (as pycocotools' ``COCO.getImgIds``), else the ids that
    occur in ``annotations``.
    """
    path = Path(annotation)
    data = load_json(path, f"a COCO caption ground-truth file: {_DICT_EXPECTED}")
    if not isinstance(data, dict) or "annotations" not in data:
        raise DataFormatError(
            f"{path}: field 'annotations' missing; expected a COCO caption ground-truth file {_DICT_EXPECTED}"
        )
    refs: dict[ImageId, list[str]] = {}
    if "images" in data:
        for i, img in enumerate(_field(data, "images", list, path, "top level")):
            entry = f"{path}: images[{i}]"
            if not isinstance(img, dict):
                raise DataFormatError(f"{entry}: expected an object with an 'id'; got {type(img).__name__}")
            refs.setdefault(_id(_field(img, "id", (int, str), path, f"images[{i}]"), entry, "id"), [])
    for i, ann in _annotations(data, path):
        image_id = _id(ann["image_id"], f"{path}: annotations[{i}]", "image_id")
        if "images" in data and image_id not in refs:
            raise DataFormatError(f"{path}: annotations[{i}]: field 'image_id': {image_id!r} is not among 'images'")
        refs.setdefault(image_id, []).append(ann["caption"])
    return refs


def _read_list(data: list, path: Path, root: Path) -> list[ImageCaptions]:
    groups: dict[str, tuple[ImageId, list[str], int]] = {}
    for i, entry in enumerate(data):
        where = f"entry [{i}]"
        if not isinstance(entry, dict):
            raise DataFormatError(f"{path}: {where}: expected {_LIST_EXPECTED}; got a {type(entry).__name__}")
        image = _field(entry, "image", str, path, where)
        caption = _field(entry, "caption", (str, list), path, where)
        captions = [caption] if isinstance(caption, str) else caption
        for j, c in enumerate(captions):
            if not isinstance(c, str):
                raise DataFormatError(
                    f"{path}: {where}: field 'caption'[{j}]: expected a string; got {type(c).__name__}"
                )
        if "image_id" in entry:
            image_id = _id_from_name(entry["image_id"], f"{path}: {where}", "image_id")
        else:
            image_id = _id_from_name(Path(image).stem, f"{path}: {where}", "image")
        if image not in groups:
            groups[image] = (image_id, [], i)
        groups[image][1].extend(captions)
    return [
        ImageCaptions(image_id=image_id, image_path=root / image, captions=tuple(caps), source=f"{path}[{first}]")
        for image, (image_id, caps, first) in groups.items()
    ]


def _read_dict(data: dict, path: Path, root: Path) -> list[ImageCaptions]:
    images = _field(data, "images", list, path, "top level")
    order: dict[ImageId, tuple[str, int]] = {}
    for i, img in enumerate(images):
        where = f"images[{i}]"
        if not isinstance(img, dict):
            raise DataFormatError(
                f"{path}: {where}: expected an object with 'id' and 'file_name'; got {type(img).__name__}"
            )
        image_id = _id(_field(img, "id", (int, str), path, where), f"{path}: {where}", "id")
        if "file_name" in img:
            rel = _field(img, "file_name", str, path, where)
        elif "image" in img:
            rel = _field(img, "image", str, path, where)
        else:
            raise DataFormatError(
                f"{path}: {where}: field 'file_name' missing; expected the image's path relative to the image root"
            )
        if image_id in order:
            raise DataFormatError(
                f"{path}: {where}: field 'id': duplicate image id {image_id!r} (first at images[{order[image_id][1]}])"
            )
        order[image_id] = (rel, i)
    captions: dict[ImageId, list[str]] = {k: [] for k in order}
    for i, ann in _annotations(data, path):
        image_id = _id(ann["image_id"], f"{path}: annotations[{i}]", "image_id")
        if image_id not in captions:
            raise DataFormatError(f"{path}: annotations[{i}]: field 'image_id': {image_id!r} is not among 'images'")
        captions[image_id].append(ann["caption"])
    return [
        ImageCaptions(image_id=k, image_path=root / rel, captions=tuple(captions[k]), source=f"{path}:images[{i}]")
        for k, (rel, i) in order.items()
    ]


def _annotations(data: dict, path: Path):
    for i, ann in enumerate(_field(data, "annotations", list, path, "top level")):
        where = f"annotations[{i}]"
        if not isinstance(ann, dict):
            raise DataFormatError(
                f"{path}: {where}: expected an object with 'image_id' and 'caption'; got {type(ann).__name__}"
            )
        _field(ann, "image_id", (int, str), path, where)
        _field(ann, "caption", str, path, where)
        yield i, ann


def _field(obj: dict, key: str, types, path: Path, where: str):
    if key not in obj:
        raise DataFormatError(f"{path}: {where}: field '{key}' missing")
    value = obj[key]
    if not isinstance(value, types) or isinstance(value, bool):
        names = " or ".join(t.__name__ for t in (types if isinstance(types, tuple) else (types,)))
        raise DataFormatError(
            f"{path}: {where}: field '{key}': expected {names}; got {type(value).__name__} {str(value)[:60]!r}"
        )
    return value


def _id(value: int | str, where: str, field: str) -> ImageId:
    """Ids are kept as ints when they are integral (so ``"42"`` and ``42`` agree), else as strings."""
    if isinstance(value, int):
        return value
    return int(value) if value.isdigit() else value


def _id_from_name(value: int | str, where: str, field: str) -> ImageId:
    """The integer after the last ``_`` (``coco_57870``, ``COCO_val2014_000000391895``), as the reference."""
    if isinstance(value, int):
        return value
    if not isinstance(value, str):
        raise DataFormatError(f"{where}: field '{field}': expected a string or int; got {type(value).__name__}")
    tail = value.rsplit("_", 1)[-1]
    return int(tail) if tail.isdigit() else value


def iter_coco_captions(annotation: str | os.PathLike) -> Iterator[tuple[str, str, ImageId, str]]:
    """Yield ``(entry, image path relative to the root, image id, raw caption)`` per caption, in file order.

    The per-caption view the fine-tuning pairs need (one sample per caption, `internvl.data.pairs`),
    for both layouts: LAVIS list entries (ids as `read_coco_captions` derives them) and COCO caption
    dicts (annotation order). ``entry`` names the file and entry for error messages.
    """
    path = Path(annotation)
    data = load_json(path, f"a COCO-style caption file: a JSON list of {_LIST_EXPECTED}, or {_DICT_EXPECTED}")
    if isinstance(data, list):
        for i, entry in enumerate(data):
            where = f"entry [{i}]"
            if not isinstance(entry, dict):
                raise DataFormatError(f"{path}: {where}: expected {_LIST_EXPECTED}; got a {type(entry).__name__}")
            image = _field(entry, "image", str, path, where)
            caption = _field(entry, "caption", (str, list), path, where)
            key = "image_id" if "image_id" in entry else "image"
            raw_id = entry["image_id"] if key == "image_id" else Path(image).stem
            image_id = _id_from_name(raw_id, f"{path}: {where}", key)
            for j, c in enumerate([caption] if isinstance(caption, str) else caption):
                if not isinstance(c, str):
                    raise DataFormatError(
                        f"{path}: {where}: field 'caption'[{j}]: expected a string; got {type(c).__name__}"
                    )
                yield f"{path}: {where}", image, image_id, c
    elif isinstance(data, dict):
        files = {r.image_id: r for r in _read_dict(data, path, Path())}
        for i, ann in _annotations(data, path):
            image_id = _id(ann["image_id"], f"{path}: annotations[{i}]", "image_id")
            yield f"{path}: annotations[{i}]", str(files[image_id].image_path), image_id, ann["caption"]
    else:
        raise DataFormatError(
            f"{path}: top level is a JSON {type(data).__name__}; "
            f"expected a list of {_LIST_EXPECTED} or {_DICT_EXPECTED}"
        )
