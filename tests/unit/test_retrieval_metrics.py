"""recall@k (clip_benchmark keys) on hand-built similarity matrices, ties, and a streamed-vs-full oracle."""

from __future__ import annotations

import pytest
import torch

from internvl.evaluation.metrics.retrieval import first_positive_ranks, recall_at_k, retrieval_metrics

KEYS = [
    "image_retrieval_recall@1",
    "text_retrieval_recall@1",
    "image_retrieval_recall@5",
    "text_retrieval_recall@5",
    "image_retrieval_recall@10",
    "text_retrieval_recall@10",
    "mean_recall",
]


def _embed_scores(scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Embeddings whose products are exactly ``scores`` (texts x images): text_t = row t, image_i = e_i."""
    n_txt, n_img = scores.shape
    return torch.eye(n_img), scores.clone()


def test_hand_computed_recalls_with_several_captions_per_image():
    # 3 images; texts 0,1 -> image 0, texts 2,3 -> image 1, text 4 -> image 2 (variable counts, as in COCO).
    owner = [0, 0, 1, 1, 2]
    scores = torch.tensor(
        [
            [0.9, 0.1, 0.2],  # t0: image 0 first            -> rank 0
            [0.3, 0.8, 0.1],  # t1: image 0 second           -> rank 1
            [0.5, 0.4, 0.6],  # t2: image 1 third            -> rank 2
            [0.1, 0.7, 0.0],  # t3: image 1 first            -> rank 0
            [0.2, 0.9, 0.3],  # t4: image 2 second           -> rank 1
        ]
    )
    # Image rows (columns of scores): image 0 sorts texts 0.9(t0) ...: first positive t0 -> rank 0.
    # image 1: 0.9(t4) 0.8(t1) 0.7(t3) ...: first positive t3 at rank 2. image 2: 0.6(t2) 0.3(t4): rank 1.
    images, texts = _embed_scores(scores)
    text_ranks, image_ranks = first_positive_ranks(images, texts, owner)
    assert text_ranks.tolist() == [0, 1, 2, 0, 1]
    assert image_ranks.tolist() == [0, 2, 1]
    m = retrieval_metrics(images, texts, owner, ks=(1, 2, 3))
    assert m["image_retrieval_recall@1"] == pytest.approx(2 / 5)
    assert m["image_retrieval_recall@2"] == pytest.approx(4 / 5)
    assert m["text_retrieval_recall@1"] == pytest.approx(1 / 3)
    assert m["text_retrieval_recall@2"] == pytest.approx(2 / 3)
    assert m["text_retrieval_recall@3"] == pytest.approx(1.0)
    assert m["mean_recall"] == pytest.approx((2 / 5 + 4 / 5 + 1 + 1 / 3 + 2 / 3 + 1) / 6)


def test_default_keys_and_order_match_clip_benchmark():
    images, texts = _embed_scores(torch.rand(24, 12, generator=torch.Generator().manual_seed(0)))
    m = retrieval_metrics(images, texts, torch.arange(24) % 12)
    assert list(m) == KEYS
    assert all(isinstance(v, float) for v in m.values())
    # k >= number of candidates: every query is a hit.
    scores = texts @ images.T  # (24 texts, 12 images); random floats, so no ties
    owner = torch.arange(24) % 12
    for k in (1, 5, 10):  # independent oracle: the true image is among the k best of its text's row
        top = scores.argsort(dim=1, descending=True)[:, :k]
        expected = (top == owner[:, None]).any(dim=1).float().mean().item()
        assert m[f"image_retrieval_recall@{k}"] == pytest.approx(expected, abs=1e-7)
    assert 0 < m["image_retrieval_recall@1"] < m["image_retrieval_recall@10"] < 1
    assert retrieval_metrics(images, texts, owner, ks=(12,))["image_retrieval_recall@12"] == 1.0


def test_ties_rank_the_earlier_item_first():
    # Text 0 ties images 0,1,2 at 0.5; its positive is image 1: one tied image (index 0) comes before it.
    # Text 1's positive is image 0, tied with later images only: rank 0. Text 2 -> image 2 behind 0 and 1.
    scores = torch.tensor([[0.5, 0.5, 0.5], [0.7, 0.7, 0.1], [0.5, 0.5, 0.5]])
    owner = [1, 0, 2]
    images, texts = _embed_scores(scores)
    text_ranks, image_ranks = first_positive_ranks(images, texts, owner)
    assert text_ranks.tolist() == [1, 0, 2]
    # Image 1's column is (0.5, 0.7, 0.5): text 1 (0.7, not its caption) first, then its caption text 0.
    # Image 2's column (0.5, 0.1, 0.5): text 0 ties its caption text 2 and comes first -> rank 1.
    assert image_ranks.tolist() == [0, 1, 1]
    m = retrieval_metrics(images, texts, owner, ks=(1, 2))
    assert m["image_retrieval_recall@1"] == pytest.approx(1 / 3)
    assert m["image_retrieval_recall@2"] == pytest.approx(2 / 3)
    assert m["text_retrieval_recall@1"] == pytest.approx(1 / 3)


def test_an_image_hits_if_any_of_its_captions_is_in_the_top_k():
    # Image 0 has 3 captions; only the third scores high. Image 1's only caption is beaten by all three.
    scores = torch.tensor([[0.1, 0.9], [0.2, 0.8], [0.95, 0.7], [0.3, 0.6]])
    owner = [0, 0, 0, 1]
    images, texts = _embed_scores(scores)
    _, image_ranks = first_positive_ranks(images, texts, owner)
    assert image_ranks.tolist() == [0, 3]


def _naive_ranks(images, texts, owner):
    """Oracle: full score matrix and a stable descending sort (equal scores keep dataset order)."""
    scores = texts @ images.T
    order = torch.sort(scores, dim=1, descending=True, stable=True).indices  # (T, I)
    text_ranks = (order == owner[:, None]).float().argmax(dim=1)
    positives = owner[None, :] == torch.arange(images.shape[0])[:, None]  # (I, T)
    order_t = torch.sort(scores.T, dim=1, descending=True, stable=True).indices
    image_ranks = torch.gather(positives, 1, order_t).float().argmax(dim=1)
    return text_ranks, image_ranks


@pytest.mark.parametrize("quantised", [False, True])
def test_streamed_ranks_equal_the_full_matrix_oracle(quantised):
    g = torch.Generator().manual_seed(1)
    n_img, n_txt, d = 97, 431, 16
    if quantised:  # few distinct values: many exact ties across blocks
        images = torch.randint(-1, 2, (n_img, d), generator=g).float()
        texts = torch.randint(-1, 2, (n_txt, d), generator=g).float()
    else:
        images = torch.nn.functional.normalize(torch.randn(n_img, d, generator=g), dim=-1)
        texts = torch.nn.functional.normalize(torch.randn(n_txt, d, generator=g), dim=-1)
    owner = torch.cat([torch.arange(n_img), torch.randint(0, n_img, (n_txt - n_img,), generator=g)])
    owner = owner[torch.randperm(n_txt, generator=g)]
    want_t, want_i = _naive_ranks(images, texts, owner)
    for chunk in (1, 7, 64, 10_000):
        got_t, got_i = first_positive_ranks(images, texts, owner, chunk_size=chunk)
        assert torch.equal(got_t, want_t), chunk
        assert torch.equal(got_i, want_i), chunk
    m = retrieval_metrics(images, texts, owner, chunk_size=50)
    for k in (1, 5, 10):
        assert m[f"image_retrieval_recall@{k}"] == pytest.approx((want_t < k).float().mean().item())
        assert m[f"text_retrieval_recall@{k}"] == pytest.approx((want_i < k).float().mean().item())


def test_matches_clip_benchmark_topk_recall_when_there_are_no_ties():
    """clip_benchmark: topk per row, count positives among them, hit if > 0 (spec §6.3)."""
    g = torch.Generator().manual_seed(2)
    images = torch.nn.functional.normalize(torch.randn(40, 8, generator=g), dim=-1)
    texts = torch.nn.functional.normalize(torch.randn(200, 8, generator=g), dim=-1)
    owner = torch.arange(200) % 40
    scores = texts @ images.T
    positives = torch.zeros_like(scores, dtype=torch.bool)
    positives[torch.arange(200), owner] = True

    def topk_hits(s, p, k):
        idx = torch.topk(s, k, dim=1).indices
        return (torch.gather(p, 1, idx).sum(1) > 0).float().mean().item()

    m = retrieval_metrics(images, texts, owner)
    for k in (1, 5, 10):
        assert m[f"image_retrieval_recall@{k}"] == pytest.approx(topk_hits(scores, positives, k))
        assert m[f"text_retrieval_recall@{k}"] == pytest.approx(topk_hits(scores.T, positives.T, k))


def test_values_are_float32_means_like_clip_benchmark():
    # 14651 of 25010 texts hit: clip_benchmark reports float32(14651) / float32(25010) (InternVL README value).
    ranks = torch.cat([torch.zeros(14651, dtype=torch.int64), torch.full((25010 - 14651,), 7)])
    assert recall_at_k(ranks, 1) == 0.5858056545257568
    assert recall_at_k(ranks, 8) == 1.0


def test_input_errors_are_specific():
    images, texts = torch.eye(3), torch.rand(4, 3)
    with pytest.raises(ValueError, match="have no caption"):
        retrieval_metrics(images, texts, [0, 0, 1, 1])
    with pytest.raises(ValueError, match=r"text_to_image has 3 entries for 4 texts"):
        retrieval_metrics(images, texts, [0, 1, 2])
    with pytest.raises(ValueError, match=r"must lie in \[0, 3\)"):
        retrieval_metrics(images, texts, [0, 1, 2, 3])
    with pytest.raises(ValueError, match="widths differ"):
        retrieval_metrics(images, torch.rand(4, 2), [0, 1, 2, 2])
    with pytest.raises(ValueError, match="NaN or inf"):
        retrieval_metrics(images, torch.full((4, 3), float("nan")), [0, 1, 2, 2])
    with pytest.raises(ValueError, match="k must be >= 1"):
        recall_at_k(torch.tensor([0, 1]), 0)
