"""Engine hooks the SFT recipe relies on: the recipe's sampler feeds the loader, and a batch holding
``labels`` is still divided by the accumulation steps (one process, DDP backend, no process group)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from internvl.core.distributed import DistContext
from internvl.training.engine import Engine, EngineSettings, read_metrics


class _Toy(nn.Module):
    """A per-micro-batch mean loss whose batch carries ``labels`` (as SFT's does) and ``**batch``."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.w = nn.Linear(3, 1)
        self.seen: list[int] = []

    def forward(self, **batch):
        self.seen += batch["index"].tolist()
        loss = ((self.w(batch["x"]).squeeze(-1) - batch["labels"]) ** 2).mean()
        return {"loss": loss}


def _data():
    g = torch.Generator().manual_seed(0)
    return [
        {"x": torch.randn(3, generator=g), "labels": torch.randn((), generator=g), "index": torch.tensor(i)}
        for i in range(8)
    ]


def _engine(tmp_path, toy, per_device, accumulation, sampler_fn=None):
    settings = EngineSettings(
        output_dir=tmp_path,
        per_device_batch_size=per_device,
        gradient_accumulation_steps=accumulation,
        lr=1e-2,
        warmup_steps=0,
        max_steps=1,
        precision="fp32",
        backend="ddp",
        save_steps=100,
        tensorboard=False,
    )
    return Engine(
        toy,
        _data(),
        settings,
        DistContext(),
        sampler_fn=sampler_fn,
        param_groups_fn=lambda: [{"params": list(toy.parameters())}],
    )


@pytest.fixture(autouse=True)
def _free_port(monkeypatch):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        monkeypatch.setenv("MASTER_PORT", str(s.getsockname()[1]))


def test_accumulation_averages_micro_batch_losses(tmp_path):
    """One step of 4 samples as 1 x 4 and as 2 micro-batches x 2 (same samples, in order): the same
    gradient (norm logged), i.e. Trainer divided the summed micro-batch losses by 2."""
    order = list(range(8))
    norms = []
    for per_device, accumulation in ((4, 1), (2, 2)):
        out = tmp_path / f"b{per_device}"
        engine = _engine(out, _Toy(), per_device, accumulation, sampler_fn=lambda: order)
        engine.train()
        norms.append([r["grad_norm"] for r in read_metrics(out) if "grad_norm" in r][0])
    assert norms[0] == pytest.approx(norms[1], rel=1e-5), norms


def test_the_recipe_sampler_orders_the_samples(tmp_path):
    order = [5, 2, 7, 0, 1, 3, 4, 6]
    toy = _Toy()
    _engine(tmp_path, toy, 4, 1, sampler_fn=lambda: order).train()
    assert toy.seen == order[:4]
