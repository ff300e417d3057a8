"""`internvl train sft` under torchrun (2 processes, gloo, CPU) on a tiny chat checkpoint and a meta
mixture with repeat_time 1.5 and 0.5. Two torchrun starts per test (each costs 10-20 s of imports here):

1. The real DeepSpeed engine (ZeRO-2, not a DDP fallback) with length grouping; the loss falls and the
   final checkpoint answers a trained question through `internvl chat`.
2. kill -9 of launcher and workers after a checkpoint, then --resume: the same per-step losses as the
   uninterrupted run of test 1.
3. LoRA under ZeRO-3 (one start): the merged export changed only the adapted LLM projections.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from internvl.cli.main import main
from internvl.training.engine import last_complete_checkpoint, read_metrics
from tests.integration.slow.test_train_torchrun import TORCHRUN, _env, _kill_tree, _port
from tests.unit.training.sft_helpers import COLORS, make_chat_checkpoint, make_mixture

pytestmark = [pytest.mark.slow, pytest.mark.integration]
pytest.importorskip("deepspeed", reason="the training engine's ZeRO backend: DS_BUILD_OPS=0 pip install deepspeed")
SETS = ("schedule.epochs=20", "optim.lr=1e-2", "log.save_steps=4", "data.system_message=Answer the questions.")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("sft_torchrun")
    return {"root": root, "ckpt": make_chat_checkpoint(root / "ckpt"), "meta": make_mixture(root / "data")}


def _command(world, out: Path, *, resume: bool = False) -> list[str]:
    cmd = [
        TORCHRUN,
        "--nproc_per_node",
        "2",
        "--master_port",
        str(_port()),
        "-m",
        "internvl.cli.main",
        "train",
        "sft",
        "tiny_synthetic",
        "--set",
        f"model.path={world['ckpt']}",
        "--set",
        f"data.meta_path={world['meta']}",
        "--set",
        f"log.output_dir={out}",
    ]
    for s in SETS:
        cmd += ["--set", s]
    return [*cmd, "--resume"] if resume else cmd


def _run(cmd: list[str], log: Path) -> None:
    with open(log, "w") as f:
        rc = subprocess.run(cmd, check=False, env=_env(), stdout=f, stderr=subprocess.STDOUT, timeout=400).returncode
    assert rc == 0, log.read_text()[-4000:]


def _losses(out: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in read_metrics(out) if "loss" in r}


def test_two_processes_run_deepspeed_and_the_checkpoint_chats(world, capsys):
    out = world["root"] / "uninterrupted"
    _run(_command(world, out), world["root"] / "uninterrupted.log")
    info = json.loads((out / "run_info.json").read_text())
    assert (info["wrapper"], info["deepspeed"], info["zero_stage"], info["world_size"]) == (
        "DeepSpeedEngine",
        True,
        2,
        2,
    )
    assert info["samples_per_epoch"] == 8 and info["global_step"] == 40  # 8 // (2 x 2) = 2 steps/epoch x 20
    losses = _losses(out)
    assert sorted(losses) == list(range(1, 41))
    first, last = [losses[s] for s in (1, 2, 3)], [losses[s] for s in (38, 39, 40)]
    assert sum(last) < 0.3 * sum(first), losses
    world["expected"] = losses
    capsys.readouterr()
    assert main(["chat", str(out / "final"), "tell me a fact", "--max-new-tokens", "10"]) == 0
    trained = {"water is wet", "the sky is blue", *(f"the image is {c}" for c in COLORS)}
    assert capsys.readouterr().out.strip() in trained  # a trained answer (which one: see the fast test)


def test_kill_9_and_resume_logs_identical_losses(world):
    expected = world.get("expected")
    if expected is None:  # run alone: make the reference run here
        ref = world["root"] / "uninterrupted"
        _run(_command(world, ref), world["root"] / "uninterrupted.log")
        expected = _losses(ref)
    out = world["root"] / "killed"
    with open(world["root"] / "killed.log", "w") as log:
        proc = subprocess.Popen(_command(world, out), env=_env(), stdout=log, stderr=subprocess.STDOUT)
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None:
            if max(_losses(out), default=0) >= 9 and last_complete_checkpoint(out, 2):
                break
            time.sleep(0.05)
        assert proc.poll() is None, "training finished before it could be killed"
        _kill_tree(proc)
    assert max(_losses(out)) < 40
    _run(_command(world, out, resume=True), world["root"] / "resumed.log")
    info = json.loads((out / "run_info.json").read_text())
    assert info["resumed_from"] and info["resumed_from"].startswith(str(out / "checkpoint-"))
    assert _losses(out) == expected  # bit-identical per-step losses


def test_lora_under_zero3_merges_into_the_exported_checkpoint(world, capsys):
    """The LoRA recipe's sharding (ZeRO-3): adapters train, the full weights are gathered for export, and
    the merged checkpoint differs from the start exactly in the adapted LLM projections."""
    import torch

    from internvl.models.internvl_chat import InternVLChatModel

    out = world["root"] / "lora_z3"
    cmd = _command(world, out)
    cmd += [
        "--set",
        "engine.zero_stage=3",
        "--set",
        "method.freeze_vision=true",
        "--set",
        "method.freeze_mlp=true",
        "--set",
        "method.freeze_llm=true",
        "--set",
        "method.llm_lora_rank=4",
        "--set",
        "schedule.max_steps=3",
        "--set",
        "optim.lr=0.05",
    ]
    _run(cmd, world["root"] / "lora_z3.log")
    info = json.loads((out / "run_info.json").read_text())
    assert (info["wrapper"], info["zero_stage"], info["world_size"]) == ("DeepSpeedEngine", 3, 2)
    before = InternVLChatModel.from_pretrained(world["ckpt"]).state_dict()
    after = InternVLChatModel.from_pretrained(out / "final").state_dict()
    assert before.keys() == after.keys()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    targets = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    adapted = {k for k in before if k.startswith("language_model.") and any(f".{t}.weight" in k for t in targets)}
    assert changed and changed <= adapted and len(changed) > len(adapted) // 2
    assert (out / "final" / "adapter" / "model.safetensors").is_file()
    capsys.readouterr()
    assert main(["chat", str(out / "final"), "tell me a fact", "--max-new-tokens", "4"]) == 0
