"""Batched image/text embeddings and zero-shot classification with InternVL-C/G.

These follow clip_benchmark's use of the reference model: embeddings are L2-normalised
(``F.normalize``, eps 1e-12) before any similarity; a zero-shot classifier is, per class, the mean
of the normalised embeddings of its prompt templates, normalised again; classification logits are
``100 * image @ classifier.T``. An fp16 model on CUDA runs under fp16 autocast (``amp``, the
default), as clip_benchmark runs the fp16 reference: softmax, LayerNorm and norms then compute in
float32, so the numbers match its evaluations instead of differing by ~1e-3; fp32/bf16 models never
autocast (the policy of `internvl.core.devices`).

`encode_batches` is the one batch encoder: `embed_images`, `embed_texts` (so ``embed`` and ``classify``)
and the retrieval evaluation (`internvl.evaluation.retrieval.encode_dataset`) all run through it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import torch
import torch.nn.functional as F
from PIL import Image

from internvl.core import devices
from internvl.data.tokenization import InternVLTextTokenizer
from internvl.data.transforms import load_image
from internvl.models.internvl_cg import InternVLModel

logger = logging.getLogger(__name__)

ImageLike = Image.Image | str | os.PathLike
# One neutral template; evaluation passes the ImageNet template set.
DEFAULT_TEMPLATES: tuple[str, ...] = ("a photo of a {}.",)


def _batches(items: Sequence, batch_size: int) -> Iterable[Sequence]:
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size}; expected >= 1")
    for start in range(0, len(items), batch_size):
        yield items[start : start + batch_size]


def amp_context(model: InternVLModel, amp: bool = True):
    """fp16 autocast for an fp16 model on CUDA (clip_benchmark's numerics); a no-op otherwise.

    fp32/bf16 models are left alone: autocast would lower their matmuls to fp16 (`internvl.core.devices`).
    """
    return devices.amp_context(model.device, model.dtype, amp)


Batch = TypeVar("Batch")


def encode_batches(
    model: InternVLModel,
    batches: Iterable[Batch],
    encode: Callable[[Batch], torch.Tensor],
    *,
    normalize: bool = True,
    progress: Callable[[int], None] | None = None,
    amp: bool = True,
    size: Callable[[Batch], int] = len,
) -> torch.Tensor:
    """Run ``encode`` over ``batches`` under the amp policy: float32[N, D] on the CPU, optionally L2-normalised.

    ``progress`` is called with ``size(batch)`` after each batch.
    """
    out = []
    for batch in batches:
        with amp_context(model, amp):
            emb = encode(batch).float()
        out.append((F.normalize(emb, dim=-1) if normalize else emb).cpu())
        if progress is not None:
            progress(size(batch))
    if not out:
        return torch.empty(0, model.config.clip_embed_dim)
    return torch.cat(out)


def _pixels(images: Sequence[ImageLike], transform: Callable[[Image.Image], torch.Tensor]) -> torch.Tensor:
    tensors = [transform(img if isinstance(img, Image.Image) else load_image(img)) for img in images]
    return torch.stack(tensors)  # (B, 3, S, S)


@torch.no_grad()
def embed_images(
    model: InternVLModel,
    images: Sequence[ImageLike],
    transform: Callable[[Image.Image], torch.Tensor],
    batch_size: int = 32,
    mode: str = "InternVL-C",
    *,
    normalize: bool = True,
    progress: Callable[[int], None] | None = None,
    amp: bool = True,
) -> torch.Tensor:
    """Embed images (PIL images or paths) in batches.

    Args:
        transform: PIL image -> float[3, S, S] (e.g. ``build_transform("retrieval", model.image_size)``).
        mode: ``"InternVL-C"`` (attention-pooled ViT) or ``"InternVL-G"`` (plus the QLLaMA queries).
        normalize: L2-normalise each row (what retrieval and classification compare).
        progress: called with the number of items finished after each batch.
        amp: fp16 autocast for an fp16 model on CUDA (see `amp_context`).

    Returns:
        float32[N, clip_embed_dim] on the CPU.
    """

    def encode(chunk: Sequence[ImageLike]) -> torch.Tensor:
        return model.encode_image(_pixels(chunk, transform).to(model.device, model.dtype), mode=mode)

    return encode_batches(
        model, _batches(list(images), batch_size), encode, normalize=normalize, progress=progress, amp=amp
    )


def _text_batches(tokenizer: InternVLTextTokenizer, texts: Sequence[str], batch_size: int, padding: str):
    """(batches of padded ids, order): ``order[j]`` is the input index of the j-th encoded row.

    ``"longest"`` sorts the texts by length (longest first, so a batch too large for memory fails at
    once) and pads each batch to its own longest row; ``"max_length"`` keeps the input order and 80 ids
    (the reference). Both give the same embeddings: trailing padding is invisible to the causal EOS state.
    """
    if padding not in ("longest", "max_length"):
        raise ValueError(f"padding={padding!r}; expected 'longest' or 'max_length'")
    rows = [tokenizer.encode(t) for t in texts]
    order = list(range(len(rows)))
    length = None
    if padding == "longest":
        order.sort(key=lambda i: -len(rows[i]))
    else:
        length = tokenizer.max_length
    batches = (tokenizer.pad([rows[i] for i in chunk], length) for chunk in _batches(order, batch_size))
    return batches, order


@torch.no_grad()
def embed_texts(
    model: InternVLModel,
    tokenizer: InternVLTextTokenizer,
    texts: Sequence[str],
    batch_size: int = 64,
    *,
    normalize: bool = True,
    progress: Callable[[int], None] | None = None,
    amp: bool = True,
    padding: str = "longest",
) -> torch.Tensor:
    """Embed texts in batches (``summarize:`` prefix). Returns float32[N, D] on the CPU, in input order.

    ``padding="longest"`` (default) length-sorts the texts and cuts each batch to its longest text;
    ``"max_length"`` is the reference's 80 ids per text, same numbers, more work (see `_text_batches`).
    """
    texts = list(texts)
    batches, order = _text_batches(tokenizer, texts, batch_size, padding)
    emb = encode_batches(
        model,
        batches,
        lambda ids: model.encode_text(ids.to(model.device)),
        normalize=normalize,
        progress=progress,
        amp=amp,
    )
    out = torch.empty_like(emb)
    out[torch.tensor(order, dtype=torch.long)] = emb
    return out


def zero_shot_classifier(
    model: InternVLModel,
    tokenizer: InternVLTextTokenizer,
    classnames: Sequence[str],
    templates: Sequence[str] | Sequence[Callable[[str], str]] = DEFAULT_TEMPLATES,
    batch_size: int = 64,
    *,
    progress: Callable[[int], None] | None = None,
    amp: bool = True,
) -> torch.Tensor:
    """Class embeddings float32[C, D]: mean of the normalised template embeddings, renormalised.

    Templates are format strings with one ``{}`` (or callables) applied to each class name.
    """
    if not classnames:
        raise ValueError("zero_shot_classifier needs at least one class name")
    if not templates:
        raise ValueError("zero_shot_classifier needs at least one template")
    texts = [t(c) if callable(t) else t.format(c) for c in classnames for t in templates]
    emb = embed_texts(model, tokenizer, texts, batch_size, normalize=True, progress=progress, amp=amp)  # (C*T, D)
    emb = emb.view(len(classnames), len(templates), -1).mean(dim=1)  # (C, D)
    return emb / emb.norm(dim=-1, keepdim=True)


@dataclass
class Classification:
    """Top-k per image: ``probs`` float[N, k] (softmax over all classes) and ``indices`` long[N, k]."""

    probs: torch.Tensor
    indices: torch.Tensor


def classify(image_embeddings: torch.Tensor, classifier: torch.Tensor, top_k: int = 5) -> Classification:
    """Zero-shot predictions from normalised image embeddings float[N, D] and a classifier float[C, D]."""
    if image_embeddings.shape[-1] != classifier.shape[-1]:
        raise ValueError(
            f"image embeddings have width {image_embeddings.shape[-1]} but the classifier {classifier.shape[-1]}"
        )
    logits = 100.0 * image_embeddings.float() @ classifier.float().t()  # (N, C)
    probs = logits.softmax(dim=-1)
    k = min(top_k, classifier.shape[0])
    top = probs.topk(k, dim=-1)
    return Classification(probs=top.values, indices=top.indices)
