"""Engine pieces that need no process group: which checkpoint resumes, DeepSpeed config checks, launcher env."""

from __future__ import annotations

import json

import pytest

from internvl.core.distributed import DistContext
from internvl.core.errors import ConfigError
from internvl.training.engine import EngineSettings, deepspeed_config, last_complete_checkpoint


def _checkpoint(root, step, files):
    d = root / f"checkpoint-{step}"
    d.mkdir()
    for f in files:
        (d / f).write_text("x")


def test_a_partially_written_checkpoint_is_skipped(tmp_path):
    assert last_complete_checkpoint(tmp_path / "missing", 2) is None
    _checkpoint(tmp_path, 2, ["trainer_state.json", "rng_state_0.pth", "rng_state_1.pth"])
    _checkpoint(tmp_path, 10, ["trainer_state.json", "rng_state_0.pth", "rng_state_1.pth"])
    _checkpoint(tmp_path, 12, ["trainer_state.json", "rng_state_0.pth"])  # rank 1 was killed mid-save
    _checkpoint(tmp_path, 14, ["rng_state_0.pth", "rng_state_1.pth"])  # trainer state not written yet
    assert last_complete_checkpoint(tmp_path, 2) == str(tmp_path / "checkpoint-10")
    _checkpoint(tmp_path, 16, ["trainer_state.json", "rng_state.pth"])
    assert last_complete_checkpoint(tmp_path, 1) == str(tmp_path / "checkpoint-16")


def _settings(tmp_path, **kw):
    return EngineSettings(
        output_dir=tmp_path, per_device_batch_size=1, gradient_accumulation_steps=1, lr=1e-3, warmup_steps=0, **kw
    )


def test_deepspeed_configs_with_optimizer_or_scheduler_blocks_are_refused(tmp_path):
    assert deepspeed_config(_settings(tmp_path, zero_stage=3))["zero_optimization"]["stage"] == 3
    bad = tmp_path / "ds.json"
    bad.write_text(json.dumps({"zero_optimization": {"stage": 1}, "scheduler": {"type": "WarmupDecayLR"}}))
    with pytest.raises(ConfigError, match="remove the 'scheduler' block: DeepSpeed's scheduler writes one lr"):
        deepspeed_config(_settings(tmp_path, deepspeed_config=str(bad)))
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match=r"ds.json:1: invalid JSON"):
        deepspeed_config(_settings(tmp_path, deepspeed_config=str(bad)))


def test_launcher_environments():
    assert DistContext.from_env({"RANK": "3", "WORLD_SIZE": "8", "LOCAL_RANK": "1"}) == DistContext(3, 8, 1)
    slurm = {"SLURM_PROCID": "5", "SLURM_NTASKS": "16", "SLURM_LOCALID": "5"}
    ctx = DistContext.from_env(slurm)
    assert ctx == DistContext(5, 16, 5)
    ctx.export_torch_env(slurm, master_port=1234)
    assert (slurm["RANK"], slurm["WORLD_SIZE"], slurm["LOCAL_RANK"], slurm["MASTER_PORT"]) == ("5", "16", "5", "1234")
    assert DistContext.from_env({}) == DistContext()
    # Every rank of a launch agrees on 29500; a lone process takes a free port (no clash with a neighbour).
    multi = {}
    DistContext(0, 2, 0).export_torch_env(multi)
    assert multi["MASTER_PORT"] == "29500"
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        ports = set()
        for _ in range(3):
            env = {}
            DistContext().export_torch_env(env)
            ports.add(int(env["MASTER_PORT"]))
        assert taken not in ports and all(p > 0 for p in ports)


def test_single_process_ddp_backend_logs_jsonl_and_tensorboard(tmp_path):
    """The engine on a toy loss module (no process group): metrics.jsonl, TensorBoard events, run_info."""
    import torch
    from torch import nn

    from internvl.training.engine import Engine, read_metrics

    class Toy(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Linear(3, 1)

        def forward(self, x, y):
            loss = ((self.w(x).squeeze(-1) - y) ** 2).mean()
            return {"loss": loss, "part": loss.detach() * 2}

    g = torch.Generator().manual_seed(0)
    data = [{"x": torch.randn(3, generator=g), "y": torch.randn((), generator=g)} for _ in range(8)]
    toy = Toy()
    settings = _settings(tmp_path, backend="ddp", precision="fp32", max_steps=3, save_steps=2, tensorboard=True)
    engine = Engine(toy, data, settings, DistContext(), param_groups_fn=lambda: [{"params": list(toy.parameters())}])
    info = engine.train()
    assert (info["wrapper"], info["deepspeed"], info["global_step"]) == ("Toy", False, 3)
    records = [r for r in read_metrics(tmp_path) if "loss" in r]
    assert [r["step"] for r in records] == [1, 2, 3]
    assert all(abs(r["part"] - 2 * r["loss"]) < 1e-6 for r in records)  # extra outputs logged, averaged
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    assert last_complete_checkpoint(tmp_path, 1) == str(tmp_path / "checkpoint-3")
