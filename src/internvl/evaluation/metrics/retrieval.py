"""Image-text retrieval recall@k (clip_benchmark's definition), streamed in blocks.

Pure: depends on torch only, never on the rest of the package.

Definition (clip_benchmark ``metrics/zeroshot_retrieval.py``; InternVL spec §6.3): with L2-normalised
embeddings the score of (text t, image i) is the cosine ``text_t . image_i``. Each text has exactly one
positive image (the image it describes); an image has as positives all of its captions.

* ``image_retrieval_recall@k`` (text -> image, "T->I" in papers): the fraction of TEXTS whose positive
  image is among the k highest-scoring images.
* ``text_retrieval_recall@k`` (image -> text, "I->T"): the fraction of IMAGES for which AT LEAST ONE of
  their captions is among the k highest-scoring texts.

Ties. clip_benchmark takes the top k with ``torch.topk``, whose order among equal scores is left
unspecified by torch (it differs between CPU/CUDA kernels and sizes), so an item tied at the k-th place
may or may not count. We fix the rule: **candidates are ranked by descending score, and equal scores are
ordered by dataset index (the earlier image or text ranks higher)**, i.e. the order of a stable
descending sort. An item at 0-based rank r is in the top k iff r < k. With fp32 cosine scores of distinct
items exact ties are rare; they do happen when two images share a caption string (the two identical text
embeddings tie in every image's row), and then this rule is the deterministic version of what topk does.

Streaming. The (n_texts x n_images) score matrix of COCO (25,010 x 5,000) is never materialised and
nothing is sorted. For the first positive of each query we only need its rank, i.e. how many candidates
come before it: ``#{score > s*} + #{score == s* and index < p*}`` (s*, p* = the best positive's score and
index). Blocks of ``chunk_size`` texts x all images are computed twice with identical shapes (pass 1 finds
each image's best caption, pass 2 counts), so both passes see bit-identical scores.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

DEFAULT_KS: tuple[int, ...] = (1, 5, 10)


def first_positive_ranks(
    image_emb: torch.Tensor,
    text_emb: torch.Tensor,
    text_to_image: torch.Tensor | Sequence[int],
    *,
    chunk_size: int = 1024,
    device: torch.device | str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """0-based rank of the first positive for every text query and every image query.

    Args:
        image_emb: float[N_img, D] image embeddings (normalise them first for cosine scores).
        text_emb: float[N_txt, D] text embeddings.
        text_to_image: int[N_txt], the index (into ``image_emb``) of the image each text describes.
        chunk_size: texts per score block; memory is O(chunk_size * N_img).
        device: where to compute the blocks (default: the embeddings' device).

    Returns:
        ``(text_ranks int64[N_txt], image_ranks int64[N_img])``: for text t the number of images ranked
        before its positive image; for image i the number of texts ranked before its best caption.
    """
    image_emb, text_emb, owner = _check_inputs(image_emb, text_emb, text_to_image)
    dev = torch.device(device) if device is not None else image_emb.device
    n_img, n_txt = image_emb.shape[0], text_emb.shape[0]
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    images = image_emb.to(dev, torch.float32)
    owner_dev = owner.to(dev)
    col = torch.arange(n_img, device=dev)

    def block(start: int, end: int) -> torch.Tensor:
        return text_emb[start:end].to(dev, torch.float32) @ images.T  # (c, N_img)

    # Pass 1: text -> image ranks, and each image's best caption score s* and (smallest) text index p*.
    text_ranks = torch.empty(n_txt, dtype=torch.int64, device=dev)
    best_score = torch.full((n_img,), float("-inf"), device=dev)
    best_text = torch.full((n_img,), n_txt, dtype=torch.int64, device=dev)
    for start in range(0, n_txt, chunk_size):
        end = min(start + chunk_size, n_txt)
        scores = block(start, end)  # (c, N_img)
        own = owner_dev[start:end]  # (c,)
        rows = torch.arange(end - start, device=dev)
        pos = scores[rows, own]  # (c,) score of each text's own image
        before = (scores > pos[:, None]) | ((scores == pos[:, None]) & (col[None, :] < own[:, None]))
        text_ranks[start:end] = before.sum(dim=1)

        chunk_best = torch.full((n_img,), float("-inf"), device=dev).scatter_reduce(0, own, pos, "amax")
        is_best = pos == chunk_best[own]
        t_idx = torch.arange(start, end, device=dev)
        chunk_first = torch.full((n_img,), n_txt, dtype=torch.int64, device=dev).scatter_reduce(
            0, own[is_best], t_idx[is_best], "amin"
        )
        # Chunks arrive in increasing text index, so on an equal score the earlier chunk's index stays.
        better = chunk_best > best_score
        best_text = torch.where(better, chunk_first, best_text)
        best_score = torch.where(better, chunk_best, best_score)

    # Pass 2: image -> text ranks = texts scoring above s*, or equal to s* with a smaller index than p*.
    image_ranks = torch.zeros(n_img, dtype=torch.int64, device=dev)
    for start in range(0, n_txt, chunk_size):
        end = min(start + chunk_size, n_txt)
        scores = block(start, end)  # (c, N_img)
        t_idx = torch.arange(start, end, device=dev)
        before = (scores > best_score[None, :]) | (
            (scores == best_score[None, :]) & (t_idx[:, None] < best_text[None, :])
        )
        image_ranks += before.sum(dim=0)
    return text_ranks.cpu(), image_ranks.cpu()


def recall_at_k(ranks: torch.Tensor, k: int) -> float:
    """Fraction of queries whose first positive has rank < k.

    Computed as clip_benchmark does, a float32 mean of 0/1 hits (the count is exact; the quotient is
    rounded to float32), so the JSON values are bit-identical to clip_benchmark's for the same hits:
    e.g. 14651/25010 is reported as 0.5858056545257568, the value in the InternVL README.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    return (ranks < k).float().mean().item()


def retrieval_metrics(
    image_emb: torch.Tensor,
    text_emb: torch.Tensor,
    text_to_image: torch.Tensor | Sequence[int],
    *,
    ks: Sequence[int] = DEFAULT_KS,
    chunk_size: int = 1024,
    device: torch.device | str | None = None,
) -> dict[str, float]:
    """clip_benchmark's retrieval metrics plus their mean.

    Keys, in clip_benchmark's order: for each k, ``image_retrieval_recall@k`` (text -> image) then
    ``text_retrieval_recall@k`` (image -> text); finally ``mean_recall``, the mean of all of them
    (clip_benchmark reports no mean; the InternVL paper's "mean recall" is this average over R@1/5/10 of
    both directions).
    """
    text_ranks, image_ranks = first_positive_ranks(
        image_emb, text_emb, text_to_image, chunk_size=chunk_size, device=device
    )
    metrics: dict[str, float] = {}
    for k in ks:
        metrics[f"image_retrieval_recall@{k}"] = recall_at_k(text_ranks, k)
        metrics[f"text_retrieval_recall@{k}"] = recall_at_k(image_ranks, k)
    metrics["mean_recall"] = sum(metrics.values()) / len(metrics) if metrics else float("nan")
    return metrics


def _check_inputs(
    image_emb: torch.Tensor, text_emb: torch.Tensor, text_to_image: torch.Tensor | Sequence[int]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    if image_emb.ndim != 2 or text_emb.ndim != 2:
        raise ValueError(
            f"embeddings must be 2-D [N, D]; got images {tuple(image_emb.shape)}, texts {tuple(text_emb.shape)}"
        )
    if image_emb.shape[1] != text_emb.shape[1]:
        raise ValueError(f"embedding widths differ: images {image_emb.shape[1]}, texts {text_emb.shape[1]}")
    owner = torch.as_tensor(text_to_image, dtype=torch.int64).reshape(-1).cpu()
    n_img, n_txt = image_emb.shape[0], text_emb.shape[0]
    if owner.numel() != n_txt:
        raise ValueError(f"text_to_image has {owner.numel()} entries for {n_txt} texts")
    if n_img == 0 or n_txt == 0:
        raise ValueError(f"need at least one image and one text; got {n_img} images, {n_txt} texts")
    if owner.min() < 0 or owner.max() >= n_img:
        raise ValueError(f"text_to_image values must lie in [0, {n_img}); got range [{owner.min()}, {owner.max()}]")
    without = torch.ones(n_img, dtype=torch.bool)
    without[owner] = False
    if without.any():
        first = without.nonzero()[:5].flatten().tolist()
        raise ValueError(
            f"{int(without.sum())} image(s) have no caption (e.g. indices {first}); image->text recall is undefined"
        )
    for name, emb in (("image", image_emb), ("text", text_emb)):
        if not torch.isfinite(emb).all():
            raise ValueError(f"{name} embeddings contain NaN or inf")
    return image_emb, text_emb, owner
