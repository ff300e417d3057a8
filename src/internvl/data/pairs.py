"""Image-text pairs for stage-2 retrieval fine-tuning (the reference's ``FlickrDataset``/``COCODataset``).

One sample per caption, in file order, as the reference: Flickr ``.txt`` lines and COCO Karpathy
(LAVIS list) entries, read through the same parsers the evaluation uses (`internvl.data.datasets`),
so any dataset of the registry file (built-in or ``--registry``) can be trained on without code edits.

Per sample (spec §7.3):

* caption: `pre_caption` (max 50 words); the negative caption is the caption of a uniformly drawn
  sample of a *different* image (the reference's rejection loop), here drawn from a generator seeded by
  (seed, epoch, index) so a run and its resume see the same negatives (the reference's unseeded
  ``random`` in workers is not reproducible, spec §9 T8);
* texts: ``[BOS] + pieces + [EOS]`` truncated to 80 and padded with the checkpoint's pad token, masks
  from the tokenizer: ``positive_*`` (caption), ``negative_*`` (negative caption) and ``summarize_*``
  (``"summarize:" + caption``); the captioning fields (`PairTokenizer.captioning_fields`) are produced
  on request only, since the retrieval loss does not read them. The tokenizer pads each text to 80 (the
  reference) or not at all; `collate_pairs` then pads a batch to its longest text (dynamic padding) or
  to a fixed length;
* image: ``train_retrieval`` transform (random-resized-crop 0.5-1, bicubic, flip, ImageNet statistics)
  drawn from a per-sample seeded generator;
* ``image_ids``: long[1], **exact**. The reference builds it through a float32 tensor, which rounds
  Flickr ids (~1e9) to multiples of 64 and can merge distinct images into one positive set of the
  contrastive targets (spec §9 T7); we keep the integer.
"""

from __future__ import annotations

import os
import random
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch

from internvl.core.errors import ConfigError, DataFormatError
from internvl.core.images import open_image
from internvl.data.datasets.coco import iter_coco_captions
from internvl.data.datasets.flickr import SEPARATOR, iter_flickr_lines
from internvl.data.datasets.records import pre_caption
from internvl.data.tokenization import CAPTION_PROMPT, MAX_LENGTH, TEXT_PREFIX, InternVLTextTokenizer, pad_rows
from internvl.data.transforms import build_transform, load_image

EMPTY_POLICIES = ("error", "skip", "keep")
IGNORE_INDEX = -100
TEXT_FIELDS = ("positive", "negative", "summarize")


@dataclass(frozen=True)
class CaptionPair:
    """One training sample before decoding: ``caption`` is already cleaned; ``source`` is ``file:line``."""

    image_id: int
    image_path: Path
    caption: str
    source: str


def read_caption_pairs(
    annotation: str | os.PathLike,
    image_root: str | os.PathLike,
    format: str,
    *,
    max_words: int = 50,
    empty: str = "error",
) -> tuple[list[CaptionPair], list[str]]:
    """Read a ``flickr_format`` or ``coco_format`` annotation into one pair per caption (file order).

    Args:
        empty: what to do with a caption that is empty after cleaning: ``error`` (default: the message
            names file, line and field), ``skip`` (dropped and returned in the second list), ``keep``
            (the reference's behaviour: an empty text is trained on).

    Returns:
        (pairs, skipped) where ``skipped`` lists the ``file:line`` of every dropped caption.

    Raises:
        DataFormatError: bad lines/entries, non-integer image ids (the model's targets are integer
            ids), a second ``.jpg,`` on a Flickr line (the reference's parser rejects it as well).
    """
    if empty not in EMPTY_POLICIES:
        raise ConfigError(f"empty={empty!r}; expected one of {EMPTY_POLICIES}")
    root = Path(image_root)
    raw: list[tuple[str, object, Path, str]] = []
    if format == "flickr_format":
        for lineno, stem, caption in iter_flickr_lines(annotation):
            where = f"{annotation}:{lineno}"
            if SEPARATOR in caption:
                raise DataFormatError(
                    f"{where}: field 'caption': a second '{SEPARATOR}' on the line; expected "
                    "'<id>.jpg,<caption>' with exactly one '.jpg,'"
                )
            if not stem.isdigit():
                raise DataFormatError(
                    f"{where}: field 'image': {stem + '.jpg'!r} has no numeric image id; "
                    "training uses the integer file name as the image id"
                )
            raw.append((where, int(stem), root / f"{stem}.jpg", caption))
    elif format == "coco_format":
        for where, image, image_id, caption in iter_coco_captions(annotation):
            if not isinstance(image_id, int):
                raise DataFormatError(
                    f"{where}: field 'image_id': {image_id!r} has no integer id (expected an int or "
                    "a string ending in '_<digits>', e.g. 'coco_57870')"
                )
            raw.append((where, image_id, root / image, caption))
    else:
        raise ConfigError(f"format {format!r}; expected flickr_format or coco_format")
    pairs: list[CaptionPair] = []
    skipped: list[str] = []
    for where, image_id, path, caption in raw:
        clean = pre_caption(caption, max_words)
        if not clean:
            if empty == "error":
                raise DataFormatError(
                    f"{where}: field 'caption': empty after cleaning (raw {caption!r}); fix the line, "
                    "or pass skip_bad_samples to skip and count such lines"
                )
            if empty == "skip":
                skipped.append(where)
                continue
        pairs.append(CaptionPair(int(image_id), path, clean, where))
    return pairs, skipped


def find_bad_images(pairs: list[CaptionPair], verify: bool = True, workers: int = 8) -> list[tuple[CaptionPair, str]]:
    """(pair, reason) for every sample whose image is missing, empty or (``verify``) not a readable image.

    One stat per distinct file, plus the header check of every verb (`open_image`: an image PIL can identify,
    within the pixel limit) and PIL's ``verify`` when ``verify``; threads overlap the I/O.
    """

    def check(path: Path) -> str | None:
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            return f"{path} not found"
        except OSError as e:
            return f"{path}: {e.strerror or e}"
        if size == 0:
            return f"{path} is empty (0 bytes)"
        if verify:
            try:
                with open_image(path) as im:
                    im.verify()
            except DataFormatError as e:
                return str(e)
            except Exception as e:  # PIL raises many types for corrupt files
                return f"{path} is not a readable image ({type(e).__name__}: {e})"
        return None

    paths = sorted({p.image_path for p in pairs})
    with ThreadPoolExecutor(max_workers=workers) as pool:
        reasons = dict(zip(paths, pool.map(check, paths), strict=True))
    return [(p, reasons[p.image_path]) for p in pairs if reasons[p.image_path]]


class PairTokenizer:
    """The fine-tuning tokenisation: ``LlamaTokenizer(add_eos_token=True)``, truncate, pad with ``[PAD]``.

    Built on `InternVLTextTokenizer.encode_pieces`, so training and evaluation split text with the same
    code; only the padding differs (pad token + tokenizer mask here, id 0 + ``ids > 0`` at evaluation,
    equivalent for the model, spec §9 T2).
    """

    def __init__(
        self,
        text_tokenizer: InternVLTextTokenizer,
        pad_token_id: int,
        max_length: int = MAX_LENGTH,
        pad_to_max_length: bool = True,
    ) -> None:
        if max_length < 2:
            raise ConfigError(f"max_length={max_length}; need room for BOS and EOS")
        self.text = text_tokenizer
        self.pad_token_id = pad_token_id
        self.max_length = max_length
        self.pad_to_max_length = pad_to_max_length

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, max_length: int = MAX_LENGTH, pad_to_max_length: bool = True):
        text = InternVLTextTokenizer.from_pretrained(path, prefix="")
        pad = text.tokenizer.pad_token_id
        if pad is None:
            raise DataFormatError(
                f"{path}: the tokenizer has no pad token; the fine-tuning data pads with the "
                "checkpoint's '[PAD]' token (set pad_token in special_tokens_map.json)"
            )
        return cls(text, pad, max_length, pad_to_max_length)

    def encode(self, text: str, max_length: int | None = None, pad: bool | None = None) -> tuple[list[int], list[int]]:
        """``([BOS] + pieces[:L-2] + [EOS] + [PAD]*, mask)`` as the slow tokenizer with truncation does."""
        length = self.max_length if max_length is None else max_length
        ids = [self.text.bos_token_id, *self.text.encode_pieces(text)[: length - 2], self.text.eos_token_id]
        mask = [1] * len(ids)
        if self.pad_to_max_length if pad is None else pad:
            n = length - len(ids)
            ids += [self.pad_token_id] * n
            mask += [0] * n
        return ids, mask

    def retrieval_fields(self, caption: str, negative_caption: str) -> dict[str, list[int]]:
        """``positive_*``, ``negative_*`` and ``summarize_*`` ids and masks."""
        out: dict[str, list[int]] = {}
        for name, text in zip(TEXT_FIELDS, (caption, negative_caption, TEXT_PREFIX + caption), strict=True):
            out[f"{name}_input_ids"], out[f"{name}_attention_mask"] = self.encode(text)
        return out

    def captioning_fields(self, caption: str, prompt: str = CAPTION_PROMPT) -> dict[str, list[int]]:
        """The reference's ITG fields (unused by the retrieval loss): prompt without EOS + caption without BOS.

        ``labels`` are -100 on pad ids and on all but the last prompt token (the reference keeps the
        prompt's final piece as a target, spec §9 T10).
        """
        prefix, prefix_mask = self.encode(prompt, pad=False)
        prefix, prefix_mask = prefix[:-1], prefix_mask[:-1]
        content, content_mask = self.encode(caption, max_length=self.max_length - len(prefix) + 1)
        ids = prefix + content[1:]
        labels = [IGNORE_INDEX if t == self.pad_token_id else t for t in ids]
        labels[: len(prefix) - 1] = [IGNORE_INDEX] * (len(prefix) - 1)
        return {"input_ids": ids, "attention_mask": prefix_mask + content_mask[1:], "labels": labels}


def _sample_seed(seed: int, epoch: int, index: int, stream: int) -> int:
    """A 63-bit seed per (run seed, epoch, sample, stream): independent of workers, ranks and resumes."""
    return hash((seed, epoch, index, stream)) & ((1 << 63) - 1)


class RetrievalPairs(torch.utils.data.Dataset):
    """Map-style dataset of decoded training samples (see the module docstring for the fields).

    Every random choice is a function of (seed, epoch, index): `set_epoch` before each epoch.
    """

    def __init__(
        self,
        pairs: Sequence[CaptionPair],
        tokenizer: PairTokenizer,
        image_size: int,
        *,
        seed: int = 0,
        norm: str = "imagenet",
        augment: bool = True,
        contrastive_only: bool = False,
    ) -> None:
        """``augment``: the reference's random-resized-crop + flip (False: resize only, for data whose
        captions name positions); ``contrastive_only``: only the ``positive_*`` caption fields (no ITM
        negative, no summarize prompt), what the ``itc_c`` objective reads."""
        if len({p.image_id for p in pairs}) < 2:
            # The reference's rejection loop would never terminate.
            raise DataFormatError(
                f"{len(pairs)} caption(s) of {len({p.image_id for p in pairs})} image(s): ITM "
                "negatives need captions of at least two different images"
            )
        self.pairs = list(pairs)
        self.tokenizer = tokenizer
        self.seed = seed
        self.epoch = 0
        self._generator = torch.Generator()
        self.contrastive_only = contrastive_only
        kind = "train_retrieval" if augment else "retrieval"
        self.transform = build_transform(kind, image_size, norm, generator=self._generator)

    def __len__(self) -> int:
        return len(self.pairs)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def negative_index(self, index: int) -> int:
        """A uniformly drawn sample of another image (rejection sampling, as the reference)."""
        rng = random.Random(_sample_seed(self.seed, self.epoch, index, 0))
        image_id = self.pairs[index].image_id
        while True:
            j = rng.randrange(len(self.pairs))
            if self.pairs[j].image_id != image_id:
                return j

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        pair = self.pairs[index]
        if self.contrastive_only:
            ids, mask = self.tokenizer.encode(pair.caption)
            fields = {"positive_input_ids": ids, "positive_attention_mask": mask}
        else:
            negative = self.pairs[self.negative_index(index)].caption
            fields = self.tokenizer.retrieval_fields(pair.caption, negative)
        self._generator.manual_seed(_sample_seed(self.seed, self.epoch, index, 1))
        try:
            pixels = self.transform(load_image(pair.image_path))
        except DataFormatError as e:
            raise DataFormatError(f"{pair.source}: field 'image': {e}") from None
        out = {k: torch.tensor(v, dtype=torch.long) for k, v in fields.items()}
        out["pixel_values"] = pixels
        out["image_ids"] = torch.tensor([pair.image_id], dtype=torch.long)
        return out


def collate_pairs(
    samples: Sequence[dict[str, torch.Tensor]], pad_token_id: int, length: int | None = None
) -> dict[str, torch.Tensor]:
    """Stack `RetrievalPairs` samples; every ``*_input_ids`` / ``*_attention_mask`` field padded to one width.

    ``length=None`` cuts the batch to its longest text (dynamic padding); ``length=max_length`` is the
    reference's layout. One width for all caption fields, because `InternVLModel.retrieval_features`
    runs the negative, positive and summarize rows in one QLLaMA pass. The losses do not change: padded
    keys are masked out of every attention row and the text feature is read at the EOS, so no real
    position sees a pad (tests/unit/training/test_padding_invariance.py).
    """
    text = [k for k in samples[0] if k.endswith(("_input_ids", "_attention_mask"))]
    width = max(len(s[k]) for s in samples for k in text) if length is None else length
    out = torch.utils.data.default_collate([{k: v for k, v in s.items() if k not in text} for s in samples])
    for k in text:
        out[k] = pad_rows([s[k] for s in samples], pad_token_id if k.endswith("_input_ids") else 0, width)
    return {k: out[k] for k in samples[0]}


@dataclass(frozen=True)
class PairCollate:
    """`collate_pairs` with its settings bound (picklable, for DataLoader workers)."""

    pad_token_id: int
    length: int | None = None

    def __call__(self, samples: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        return collate_pairs(samples, self.pad_token_id, self.length)
