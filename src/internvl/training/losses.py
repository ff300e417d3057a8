"""Stage-2 retrieval objective: image-text matching + contrastive loss with targets from image ids.

Pure functions of tensors plus (rank, world_size): no global state is read, so one process with the
global batch and W processes with its shards give the same loss (tests/integration/slow). The
cross-rank gather is open_clip's gather-with-grad pattern: the forward all-gathers the features, the
backward sums the incoming gradients over ranks and keeps this rank's slice, so every rank's loss
sends gradient to the features of every rank.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


class _GatherWithGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, rank: int, world_size: int, group) -> torch.Tensor:
        import torch.distributed as dist

        ctx.rank, ctx.group = rank, group
        parts = [torch.empty_like(x) for _ in range(world_size)]
        dist.all_gather(parts, x.contiguous(), group=group)
        return torch.stack(parts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        import torch.distributed as dist

        grad = grad.contiguous()
        dist.all_reduce(grad, group=ctx.group)  # sum of every rank's loss gradient w.r.t. all features
        return grad[ctx.rank], None, None, None


def gather_features(x: torch.Tensor, rank: int, world_size: int, *, with_grad: bool = True, group=None) -> torch.Tensor:
    """float[W*B, ...] in rank-major order; identity (no collective) when ``world_size == 1``."""
    if world_size == 1:
        return x
    if with_grad:
        out = _GatherWithGrad.apply(x, rank, world_size, group)
    else:
        import torch.distributed as dist

        parts = [torch.empty_like(x) for _ in range(world_size)]
        dist.all_gather(parts, x.contiguous(), group=group)
        out = torch.stack(parts)
    return out.flatten(0, 1)


def soft_target_ce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``mean_i(-sum_j log_softmax(logits)_ij * targets_ij)``."""
    return -(F.log_softmax(logits, dim=1) * targets).sum(dim=1).mean()


def itc_loss(
    backbone_embeds: torch.Tensor,
    query_embeds: torch.Tensor,
    text_embeds: torch.Tensor,
    image_ids: torch.Tensor,
    logit_scale: torch.Tensor,
    rank: int = 0,
    world_size: int = 1,
    group=None,
) -> torch.Tensor:
    """Contrastive loss averaged over the query-based and the backbone-based image embeddings (spec §7.1.7).

    Local rows against global columns; the targets of row i spread uniformly over every gathered
    sample with the same image id (several captions of one image are all positives). No label smoothing.
    Embeddings: float[B, D], unnormalised; ``image_ids`` long[B] or long[B, 1].
    """
    bb = backbone_embeds / backbone_embeds.norm(dim=1, keepdim=True)  # no eps, as the reference
    img = query_embeds / query_embeds.norm(dim=1, keepdim=True)
    txt = text_embeds / text_embeds.norm(dim=1, keepdim=True)
    bb_all, img_all, txt_all = (gather_features(t, rank, world_size, group=group) for t in (bb, img, txt))
    ids = image_ids.reshape(-1)
    ids_all = gather_features(ids, rank, world_size, with_grad=False, group=group)
    pos = (ids[:, None] == ids_all[None, :]).to(txt.dtype)
    targets = pos / pos.sum(dim=1, keepdim=True)
    s = logit_scale.exp()
    return _symmetric_ce(s, img, txt, img_all, txt_all, targets) + _symmetric_ce(s, bb, txt, bb_all, txt_all, targets)


def _symmetric_ce(s, img, txt, img_all, txt_all, targets) -> torch.Tensor:
    """(text->image + image->text) / 2 of local rows against gathered columns."""
    return (soft_target_ce(s * txt @ img_all.t(), targets) + soft_target_ce(s * img @ txt_all.t(), targets)) / 2


def internvl_c_loss(
    image_embeds: torch.Tensor,
    text_embeds: torch.Tensor,
    image_ids: torch.Tensor,
    logit_scale: torch.Tensor,
    rank: int = 0,
    world_size: int = 1,
    *,
    scale_max: float | None = None,
    group=None,
) -> torch.Tensor:
    """InternVL-C contrastive loss (stage 1 / the ``itc_c`` objective): symmetric InfoNCE on unnormalised
    float[B, D] embeddings, captions of the same image all positive, ``exp(logit_scale)`` capped at ``scale_max``."""
    img = image_embeds / image_embeds.norm(dim=1, keepdim=True)
    txt = text_embeds / text_embeds.norm(dim=1, keepdim=True)
    img_all, txt_all = (gather_features(t, rank, world_size, group=group) for t in (img, txt))
    ids = image_ids.reshape(-1)
    ids_all = gather_features(ids, rank, world_size, with_grad=False, group=group)
    pos = (ids[:, None] == ids_all[None, :]).to(txt.dtype)
    s = logit_scale.exp()
    if scale_max is not None:
        s = s.clamp(max=scale_max)
    return _symmetric_ce(s.reshape(()), img, txt, img_all, txt_all, pos / pos.sum(dim=1, keepdim=True))


def itm_loss(itm_logits: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of float[2B, 2] logits against B zeros (negatives) then B ones (positives)."""
    b = itm_logits.shape[0] // 2
    labels = torch.cat([torch.zeros(b, dtype=torch.long), torch.ones(b, dtype=torch.long)]).to(itm_logits.device)
    return F.cross_entropy(itm_logits.float(), labels)


@dataclass
class RetrievalLoss:
    """``loss`` (with grad) = ``loss_itm`` + ``loss_itc``; the parts are detached, for logging."""

    loss: torch.Tensor
    loss_itm: torch.Tensor
    loss_itc: torch.Tensor


def retrieval_loss(
    model,
    batch: dict[str, torch.Tensor],
    rank: int = 0,
    world_size: int = 1,
    group=None,
    *,
    objective: str = "itm_itc",
    scale_max: float | None = None,
) -> RetrievalLoss:
    """The reference's stage-2 retrieval loss of an `InternVLModel` on one collated batch
    (``objective="itc_c"``: the InternVL-C contrastive loss alone; ``loss_itm`` is then 0)."""
    if objective == "itc_c":
        img = model.encode_image(batch["pixel_values"], mode="InternVL-C")
        txt = model.encode_text(batch["positive_input_ids"], batch["positive_attention_mask"])
        l_itc = internvl_c_loss(
            img, txt, batch["image_ids"], model.logit_scale, rank, world_size, scale_max=scale_max, group=group
        )
        return RetrievalLoss(l_itc, torch.zeros((), device=l_itc.device), l_itc.detach())
    feats = model.retrieval_features(
        batch["pixel_values"],
        batch["positive_input_ids"],
        batch["positive_attention_mask"],
        batch["negative_input_ids"],
        batch["negative_attention_mask"],
        batch["summarize_input_ids"],
        batch["summarize_attention_mask"],
    )
    l_itm = itm_loss(feats.itm_logits)
    l_itc = itc_loss(
        feats.backbone_embeds,
        feats.query_embeds,
        feats.text_embeds,
        batch["image_ids"],
        model.logit_scale,
        rank,
        world_size,
        group,
    )
    return RetrievalLoss(l_itm + l_itc, l_itm.detach(), l_itc.detach())
