"""`internvl train sft` in one process (engine.backend=ddp, CPU) on tiny chat models and a two-dataset
mixture (repeat_time 1.5 and 0.5). The torchrun runs (2 processes, DeepSpeed, kill -9 + resume) are in
tests/integration/slow/test_train_torchrun.py."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from internvl.cli.main import main
from internvl.models.internvl_chat import InternVLChatModel
from internvl.training.engine import read_metrics
from tests.unit.training.sft_helpers import COLORS, make_chat_checkpoint, make_mixture, make_parts

pytestmark = pytest.mark.integration
SYSTEM = "Answer the questions."


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("sft")
    vit, llm = make_parts(root / "pretrained")
    return {
        "root": root,
        "ckpt": make_chat_checkpoint(root / "ckpt"),
        "vit": vit,
        "llm": llm,
        "meta": make_mixture(root / "data"),
    }


@pytest.fixture(autouse=True)
def _single_process_env(monkeypatch):
    # No launcher variables: `internvl train` then runs one process on a free port of its own choosing.
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(key, raising=False)


def _train(world, out, *sets: str, resume: bool = False) -> int:
    args = [
        "train",
        "sft",
        "tiny_synthetic",
        "--set",
        f"data.meta_path={world['meta']}",
        "--set",
        f"log.output_dir={out}",
        "--set",
        "engine.backend=ddp",
        "--set",
        f"data.system_message={SYSTEM}",
    ]
    for s in sets:
        args += ["--set", s]
    return main([*args, "--resume"] if resume else args)


def _im_end(path) -> int:
    from internvl.inference.chat import load_tokenizer

    return load_tokenizer(path).convert_tokens_to_ids("<|im_end|>")


def _chat(capsys, final, question, image=None) -> str:
    capsys.readouterr()
    args = ["chat", str(final), question, "--max-new-tokens", "10"]
    if image is not None:
        args += ["--image", str(image)]
    assert main(args) == 0
    return capsys.readouterr().out.strip()


def test_loss_falls_and_the_checkpoint_answers_in_chat(world, capsys):
    import torch

    out = world["root"] / "full"
    threads = torch.get_num_threads()
    sets = ("schedule.epochs=30", "optim.lr=1e-2", "log.save_steps=1000", "engine.cpu_threads=1")
    assert _train(world, out, f"model.path={world['ckpt']}", *sets) == 0
    info = json.loads((out / "run_info.json").read_text())
    # one process on the ddp backend: no one-process group, no DistributedDataParallel around the model
    assert (info["wrapper"], info["world_size"], info["cpu_threads"]) == ("SFTLossModule", 1, 1)
    assert torch.get_num_threads() == threads  # the thread count is the training's only
    assert info["samples_per_epoch"] == 6 + 2  # 4 colour records x 1.5 + 4 text records x 0.5
    assert info["global_step"] == 60 and info["warmup_steps"] == 6  # 8 // 4 = 2 steps/epoch; ceil(0.1 x 60)
    losses = [r["loss"] for r in read_metrics(out) if "loss" in r]
    assert len(losses) == 60
    assert sum(losses[-5:]) / 5 < 0.15 * sum(losses[:5]) / 5, losses
    assert any(p.name.startswith("events.out.tfevents") for p in (out / "tensorboard").iterdir())

    final = out / "final"
    gen = json.loads((final / "generation_config.json").read_text())
    cfg = json.loads((final / "config.json").read_text())
    assert cfg["template"] == "Hermes-2" and cfg["system_message"] == SYSTEM
    assert isinstance(gen["eos_token_id"], list) and gen["eos_token_id"][0] == _im_end(final)
    # the exported tokenizer splits a training sample as the one trained on, and the chat prompt likewise
    from internvl.data.conversation import build_query
    from internvl.data.text_encoders import load_text_encoder
    from internvl.inference.chat import load_tokenizer

    prompt, _ = build_query(
        "Hermes-2", "<image>\nwhat colour is the image?", num_patches_list=[1], num_image_token=1, system_message=SYSTEM
    )
    trained = load_text_encoder(world["ckpt"]).encode(prompt)
    assert load_text_encoder(final).encode(prompt) == trained == load_tokenizer(final)(prompt).input_ids
    # trained answers come back through `internvl chat` (the answer format and the text facts)
    answer = _chat(capsys, final, "what colour is the image?", world["root"] / "data" / "images" / "red.png")
    assert answer.startswith("the image is ") and answer.removeprefix("the image is ") in COLORS, answer
    assert _chat(capsys, final, "tell me a fact") in ("water is wet", "the sky is blue")


def test_assembled_from_internvit_llm_and_a_projector(world, tmp_path, capsys):
    """The guide's layout: InternViT dir + LLM dir (+ mlp_path). The chat tokens are added, the new
    lm_head rows are the mean of the old ones, the parts' weights are used as stored."""
    from transformers import AutoModelForCausalLM

    from internvl.models.intern_vit import InternViT
    from internvl.training.recipes.sft import SFTFinetune
    from internvl.training.sft_recipe import load_sft_recipe

    base = [
        f"model.vision_path={world['vit']}",
        f"model.llm_path={world['llm']}",
        f"data.meta_path={world['meta']}",
        f"log.output_dir={tmp_path / 'x'}",
    ]
    job = SFTFinetune(load_sft_recipe("tiny_synthetic", base))
    model, tok = job.assemble(torch.float32)
    llm = AutoModelForCausalLM.from_pretrained(world["llm"])
    vit = InternViT.from_pretrained(world["vit"])
    old = llm.get_output_embeddings().weight
    assert len(tok) == old.shape[0] + 9 and tok.convert_tokens_to_ids("<IMG_CONTEXT>") >= old.shape[0]
    head = model.language_model.get_output_embeddings().weight
    torch.testing.assert_close(head[: old.shape[0]], old)
    torch.testing.assert_close(head[old.shape[0] :], old.mean(0, keepdim=True).expand(9, -1))
    for k, v in vit.state_dict().items():
        assert torch.equal(model.vision_model.state_dict()[k], v), k
    assert model.config.llm_config.vocab_size == len(tok)

    projector = tmp_path / "mlp_projector" / "tiny.pth"
    projector.parent.mkdir()
    mlp = {f"mlp1.{k}": torch.randn_like(v) for k, v in model.mlp1.state_dict().items()}
    torch.save(mlp, projector)
    job = SFTFinetune(load_sft_recipe("tiny_synthetic", [*base, f"model.mlp_path={projector}"]))
    with_mlp, _ = job.assemble(torch.float32)
    for k, v in with_mlp.mlp1.state_dict().items():
        assert torch.equal(v, mlp[f"mlp1.{k}"])

    out = tmp_path / "parts"
    assert (
        _train(
            world,
            out,
            f"model.vision_path={world['vit']}",
            f"model.llm_path={world['llm']}",
            f"model.mlp_path={projector}",
            "schedule.max_steps=3",
        )
        == 0
    )
    trained = InternVLChatModel.from_pretrained(out / "final")
    assert trained.config.llm_config.vocab_size == len(tok)
    assert trained.config.img_context_token_id == tok.convert_tokens_to_ids("<IMG_CONTEXT>")
    _chat(capsys, out / "final", "tell me a fact")  # loads and answers (rc 0); untrained: any text


def test_lora_saves_the_adapter_and_a_merged_checkpoint(world, tmp_path, capsys):
    out = tmp_path / "lora"
    assert (
        _train(
            world,
            out,
            f"model.path={world['ckpt']}",
            "method.freeze_vision=true",
            "method.freeze_mlp=true",
            "method.freeze_llm=true",
            "method.llm_lora_rank=4",
            "schedule.max_steps=3",
            "optim.lr=5e-2",
        )
        == 0
    )
    before = InternVLChatModel.from_pretrained(world["ckpt"]).state_dict()
    after = InternVLChatModel.from_pretrained(out / "final").state_dict()
    assert before.keys() == after.keys()  # merged: the plain chat layout, no adapter keys
    adapter = load_file(str(out / "final" / "adapter" / "model.safetensors"))
    assert adapter and all(".lora_A." in k or ".lora_B." in k for k in adapter)
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith("language_model.") and "_proj." in k for k in changed)
    key = "language_model.model.layers.0.self_attn.q_proj"
    a = next(v for k, v in adapter.items() if k.startswith(f"{key}.lora_A."))
    b = next(v for k, v in adapter.items() if k.startswith(f"{key}.lora_B."))
    torch.testing.assert_close(after[f"{key}.weight"], before[f"{key}.weight"] + 2.0 * b @ a)
    _chat(capsys, out / "final", "tell me a fact")  # loads and answers (rc 0); untrained: any text


def test_dry_run_reports_parts_batch_and_memory(world, capsys):
    rc = main(
        [
            "train",
            "sft",
            "tiny_synthetic",
            "--set",
            f"model.path={world['ckpt']}",
            "--set",
            f"data.meta_path={world['meta']}",
            "--set",
            "method.freeze_vision=true",
            "--set",
            "schedule.global_batch_size=8",
            "--set",
            "schedule.per_device_batch_size=2",
            "--dry-run",
        ]
    )
    assert rc == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    p = report["parameters"]
    assert p["vision_model"]["trainable"] == 0 < p["vision_model"]["total"]
    assert p["total"]["trainable"] == p["mlp1"]["total"] + p["language_model"]["total"]
    assert report["batch"] == {
        "global_batch_size": 8,
        "per_device_batch_size": 2,
        "world_size": 1,
        "gradient_accumulation_steps": 4,
    }
    assert report["memory_per_device_gib"]["total"] > 0


def test_dry_run_of_the_v1_2_recipe_at_full_size(world, tmp_path, monkeypatch, capsys):
    """The guide's layout with the real configs (InternViT-6B-448px-V1-2 + a Yi-34B-shaped LLaMA): the
    parameter counts of the 40B model and the ZeRO-3 memory per device on 64 GPUs, from config files only."""
    import shutil

    from internvl.inference.chat import load_tokenizer
    from internvl.models.intern_vit import PRESETS

    vit, llm = tmp_path / "pretrained" / "InternViT-6B-448px-V1-2", tmp_path / "pretrained" / "Nous-Hermes-2-Yi-34B"
    vit.mkdir(parents=True)
    (vit / "config.json").write_text(json.dumps(PRESETS["intern_vit_6b_448_v1_2"].to_dict()))
    shutil.copytree(world["llm"], llm)
    (llm / "config.json").write_text(
        json.dumps(
            {
                "architectures": ["LlamaForCausalLM"],
                "model_type": "llama",
                "hidden_size": 7168,
                "intermediate_size": 20480,
                "num_hidden_layers": 60,
                "num_attention_heads": 56,
                "num_key_value_heads": 8,
                "vocab_size": 64000,
                "max_position_embeddings": 4096,
                "rms_norm_eps": 1e-5,
                "tie_word_embeddings": False,
            }
        )
    )
    monkeypatch.setenv("WORLD_SIZE", "64")
    rc = main(
        [
            "train",
            "sft",
            "v1_2_finetune",
            "--set",
            f"model.vision_path={vit}",
            "--set",
            f"model.llm_path={llm}",
            "--set",
            "model.mlp_path=",
            "--set",
            f"data.meta_path={world['meta']}",
            "--dry-run",
        ]
    )
    assert rc == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    p = report["parameters"]
    # ViT 5.54B (45 blocks of 3200), projector 12800 -> 7168 -> 7168, Yi-34B 34.39B (+ the 9 new token rows)
    assert 5.5e9 < p["vision_model"]["total"] < 5.6e9
    assert p["mlp1"]["total"] == 2 * 12800 + 12800 * 7168 + 7168 + 7168 * 7168 + 7168
    vocab = len(load_tokenizer(world["llm"])) + 9  # this test's small vocabulary + the chat tokens
    layer = 2 * 7168 * 7168 + 2 * 7168 * 1024 + 3 * 7168 * 20480 + 2 * 7168
    assert p["language_model"]["total"] == 60 * layer + 2 * vocab * 7168 + 7168  # 34.39B with Yi's 64000 rows
    assert p["total"]["trainable"] == p["total"]["total"]  # the V1-2 SFT trains everything
    assert report["batch"] == {
        "global_batch_size": 512,
        "per_device_batch_size": 8,
        "world_size": 64,
        "gradient_accumulation_steps": 1,
    }
    mem = report["memory_per_device_gib"]
    total = p["total"]["total"]
    assert mem["zero_stage"] == 3 and mem["precision"] == "bf16"
    # ZeRO-3 over 64 devices: bf16 weights and gradients, fp32 master + two moments, all sharded
    assert abs(mem["weights"] - total * 2 / 64 / 2**30) < 2e-3
    assert abs(mem["optimizer"] - total * 12 / 64 / 2**30) < 2e-3
    assert mem["activations"] > 0 and mem["total"] < 80  # fits an 80 GB A100, as the guide's run does


def test_a_bad_record_stops_training_with_file_and_line(world, tmp_path, capsys):
    data = tmp_path / "data"
    meta = make_mixture(data)
    lines = (data / "colours.jsonl").read_text().splitlines()
    lines[2] = json.dumps(
        {"image": "missing.png", "conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "x"}]}
    )
    (data / "colours.jsonl").write_text("\n".join(lines) + "\n")
    args = [
        "train",
        "sft",
        "tiny_synthetic",
        "--set",
        f"model.path={world['ckpt']}",
        "--set",
        f"data.meta_path={meta}",
        "--set",
        f"log.output_dir={tmp_path / 'out'}",
        "--set",
        "engine.backend=ddp",
    ]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert f"{data / 'colours.jsonl'}:3" in err and "missing.png" in err and "[image]" in err
    assert not (tmp_path / "out" / "checkpoint-1").exists()
    assert main([*args, "--set", "data.skip_bad_samples=true", "--set", "schedule.max_steps=2"]) == 0


def test_an_existing_run_needs_resume_with_the_same_recipe(world, tmp_path, capsys):
    out = tmp_path / "run"
    common = (f"model.path={world['ckpt']}", "schedule.max_steps=2", "log.save_steps=2")
    assert _train(world, out, *common) == 0
    assert (out / "checkpoint-2" / "trainer_state.json").is_file()
    capsys.readouterr()
    assert _train(world, out, *common) == 2
    assert "pass --resume" in capsys.readouterr().err
    assert _train(world, out, *common, "optim.lr=0.5", resume=True) == 2
    err = capsys.readouterr().err
    assert "another recipe" in err and "optim: checkpoint" in err and "'lr': 0.5" in err
