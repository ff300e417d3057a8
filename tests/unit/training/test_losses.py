"""The contrastive loss with gather-with-grad: 2 gloo processes == 1 process on the same global batch.

Loss (mean over ranks) and the gradients of the embeddings (summed over ranks, as DDP/ZeRO average
the rank losses' gradients times W) must equal the single-process oracle.
"""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from internvl.training.losses import itc_loss, itm_loss, soft_target_ce

B, D, W = 3, 8, 2


def _inputs():
    g = torch.Generator().manual_seed(0)
    bb, q, t = (torch.randn(W * B, D, generator=g) for _ in range(3))
    ids = torch.tensor([5, 6, 5, 7, 8, 6])  # positives across the two ranks' shards
    return bb, q, t, ids, torch.tensor(2.0)


def _worker(rank: int, port: int, out: dict) -> None:
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=W)
    try:
        bb, q, t, ids, scale = _inputs()
        sl = slice(rank * B, (rank + 1) * B)
        parts = [x[sl].clone().requires_grad_() for x in (bb, q, t)]
        loss = itc_loss(*parts, ids[sl], scale, rank=rank, world_size=W)
        loss.backward()
        out[rank] = (loss.item(), [p.grad for p in parts])
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_soft_targets_and_itm_by_hand():
    logits = torch.tensor([[0.0, 0.0, 0.0]])
    targets = torch.tensor([[0.5, 0.5, 0.0]])
    assert torch.isclose(soft_target_ce(logits, targets), torch.log(torch.tensor(3.0)))
    itm = torch.tensor([[2.0, 0.0], [0.0, 2.0]])  # neg row says 0, pos row says 1: both right
    assert torch.isclose(itm_loss(itm), torch.log1p(torch.exp(torch.tensor(-2.0))))


@pytest.mark.slow
def test_two_process_gather_equals_one_process():
    bb, q, t, ids, scale = _inputs()
    full = [x.clone().requires_grad_() for x in (bb, q, t)]
    oracle = itc_loss(*full, ids, scale)
    oracle.backward()
    manager = mp.Manager()
    out = manager.dict()
    mp.spawn(_worker, args=(_free_port(), out), nprocs=W, join=True)
    losses = [out[r][0] for r in range(W)]
    assert abs(sum(losses) / W - oracle.item()) < 1e-6
    for i, p in enumerate(full):
        grad = torch.cat([out[r][1][i] for r in range(W)]) / W
        torch.testing.assert_close(grad, p.grad, atol=1e-6, rtol=1e-5)
