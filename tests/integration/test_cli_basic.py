"""`internvl info` and `internvl demo` run in-process through main(argv)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from internvl.cli.main import main
from internvl.models.intern_vit import PRESETS, build_intern_vit


def test_info_json(tmp_path, capsys):
    build_intern_vit(PRESETS["intern_vit_tiny"]).save_pretrained(tmp_path, max_shard_size=30_000)
    assert main(["info", str(tmp_path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["model_type"] == "intern_vit_6b"
    assert out["parameters"] == sum(p.numel() for p in build_intern_vit(PRESETS["intern_vit_tiny"]).parameters())
    assert out["image_size"] == 56 and out["weight_files"] > 1


def test_info_on_missing_dir_is_a_clear_error(tmp_path, capsys):
    assert main(["info", str(tmp_path / "nope")]) == 2
    assert f"MODEL_DIR {tmp_path / 'nope'}: no such folder" in capsys.readouterr().err  # as every verb says it
    assert main(["info", str(tmp_path)]) == 2
    assert "no config.json" in capsys.readouterr().err


def test_help_lists_commands(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "info" in out and "demo" in out


@pytest.mark.slow
@pytest.mark.training
def test_demo_trains_through_the_public_entry_points(tmp_path, capsys):
    """A small-budget `internvl demo`: world files in the real formats, the shipped recipes run through
    `internvl train retrieval|sft`, the evaluators' outputs, metrics above chance, checkpoints that the
    other commands load."""
    from internvl.data.datasets import read_coco_captions, read_flickr_captions
    from internvl.data.datasets.sft_meta import read_sft_meta
    from internvl.inference.loading import load_pretrained

    out = tmp_path / "demo"
    assert (
        main(
            [
                "demo",
                "--output",
                str(out),
                "--budget",
                "40",
                "--train-images",
                "600",
                "--test-images",
                "60",
                "--eval-questions",
                "120",
                "--mme-limit",
                "8",
                "--stage1-steps",
                "100",
                "--stage2-steps",
                "30",
            ]
        )
        == 0
    )  # bounded by steps: the same work on a loaded machine
    world = out / "world"
    test = read_flickr_captions(world / "flickr" / "world_test_karpathy.txt", world / "images")
    assert len(test) == 60 and all(len(r.captions) == 3 for r in test)
    assert len(read_coco_captions(world / "coco" / "world_karpathy_test.json", world / "images")) == 60
    assert list(read_sft_meta(world / "sft" / "world_sft_train.json"))
    # The shipped recipes ran through the training CLI (their resolved recipe and logs are in the run dirs).
    c_recipe = json.loads((out / "internvl_c" / "recipe.json").read_text())
    assert c_recipe["name"] == "world_contrastive" and c_recipe["method"]["objective"] == "itc_c"
    assert json.loads((out / "internvl_chat" / "recipe.json").read_text())["name"] == "world_chat"
    results = json.loads((out / "results.json").read_text())
    # internvl eval retrieval wrote clip_benchmark's schema; R@1 far above chance (1/60) after ~14 s.
    ret = json.loads((out / "retrieval.json").read_text())["metrics"]
    assert ret["image_retrieval_recall@1"] == results["retrieval"]["image_retrieval_recall@1"]
    assert results["retrieval"]["chance_r1"] == round(1 / 60, 4)
    assert ret["image_retrieval_recall@1"] > 3 * results["retrieval"]["chance_r1"]
    losses = [v for _, v in results["training"]["stage1"]["loss"]]
    assert losses[-1] < losses[0]
    chat = results["chat"]
    assert chat["questions"] == 120 and set(chat["per_type"]) >= {"count", "colour", "exists"}
    # asked as trained (the world writes the question before <image>), and in the model card's layout too
    assert chat["prompt_layout"] == "question, then image" and 0.0 <= chat["mean_accuracy_image_first"] <= 1.0
    assert all(0.0 <= v["accuracy"] <= 1.0 and 0.0 < v["chance"] <= 1.0 for v in chat["per_type"].values())
    # Chance = the majority answer's share per type, recomputed here from the world's QA file. (Chat
    # accuracy itself is not asserted: ~10 s of SFT does not reliably beat it; the default run's does on count.)
    from collections import Counter

    rows = [json.loads(line) for line in (world / "qa" / "world_test.jsonl").read_text().splitlines()[:120]]
    for t, v in chat["per_type"].items():
        answers = Counter(r["answer"].lower() for r in rows if r["type"] == t)
        assert v["chance"] == round(answers.most_common(1)[0][1] / sum(answers.values()), 4)
    s2 = [v for _, v in results["training"]["stage2"]["loss"]]
    vocab = len(load_pretrained(results["checkpoints"]["internvl_chat"]).tokenizer)
    assert s2 and s2[-1] < math.log(vocab)  # below a uniform guess over the vocabulary after a few steps
    assert results["mme"]  # internvl eval bench scored the world's MME files
    for png in results["plots"]:
        assert Path(png).stat().st_size > 10_000
    # The checkpoints are in the standard layout: the other commands load them.
    final_c, final_chat = results["checkpoints"]["internvl_c"], results["checkpoints"]["internvl_chat"]
    capsys.readouterr()
    assert main(["info", final_c, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["model_type"] == "internvl"
    image = str(test[0].image_path)
    assert main(["chat", final_chat, "--image", image, "How many objects are there?"]) == 0  # may be empty this early
    emb = tmp_path / "text.npy"
    assert main(["embed", final_c, "--text", "a big red circle at the top left", "--output", str(emb)]) == 0
    import numpy as np

    vec = np.load(emb)
    assert vec.shape == (1, 64) and abs(float(np.linalg.norm(vec)) - 1.0) < 1e-4  # 64-d, L2-normalised
    from internvl.models.internvl_chat import InternVLChatModel

    chat_model = InternVLChatModel.from_pretrained(final_chat)
    assert chat_model.config.template == "Hermes-2" and chat_model.num_image_token == 9  # one token per cell


def test_usage_errors_print_usage_and_return_2(capsys):
    assert main(["info", "--bogus"]) == 2
    assert "No such option" in capsys.readouterr().err
    assert main(["nonexistent-command"]) == 2


def test_demo_never_removes_a_folder_it_did_not_write(tmp_path, capsys):
    (tmp_path / "keep.txt").write_text("mine")
    assert main(["demo", "--output", str(tmp_path)]) == 2
    assert "not an earlier demo's output" in capsys.readouterr().err
    assert (tmp_path / "keep.txt").read_text() == "mine"
