"""`internvl train retrieval` in-process: --dry-run report, errors before any model loads, resume refusal,
pre-flight data checks. (The multi-process runs are in tests/integration/slow/test_train_torchrun.py.)"""

from __future__ import annotations

import json

import pytest

from internvl.cli.main import main
from internvl.core.errors import DataFormatError
from internvl.training.config import load_recipe
from internvl.training.recipes.retrieval import RECIPE_FILE, RetrievalFinetune
from tests.unit.training.helpers import make_checkpoint, make_flickr_set

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("train_cli")
    return {
        "root": root,
        "ckpt": make_checkpoint(root / "ckpt"),
        "train": make_flickr_set(root / "data", "tiny_flickr_format_train", 4),
    }


@pytest.fixture(autouse=True)
def _clean_dist_env(monkeypatch):
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(key, raising=False)


def _sets(world, *extra):
    args = [
        "--set",
        f"model.path={world['ckpt']}",
        "--set",
        f"data.registry=[{world['train']}]",
        "--set",
        f"log.output_dir={world['root'] / 'out'}",
    ]
    for e in extra:
        args += ["--set", e]
    return args


def test_dry_run_reports_plan_parameters_and_memory(world, capsys):
    assert (
        main(["train", "retrieval", "flickr30k_head", *_sets(world, "schedule.per_device_batch_size=16"), "--dry-run"])
        == 0
    )
    out = capsys.readouterr().out
    report = json.loads(out.strip().splitlines()[-1])
    assert report["batch"] == {
        "global_batch_size": 128,
        "per_device_batch_size": 16,
        "world_size": 1,
        "gradient_accumulation_steps": 8,
    }
    params = report["parameters"]
    assert params["total"]["trainable"] == params["text_projection"]["trainable"] == params["text_projection"]["total"]
    assert params["vision_model"]["trainable"] == 0 and params["vision_model"]["total"] > 0
    mem = report["memory_per_device_gib"]
    assert mem["zero_stage"] == 3 and mem["total"] > 0
    assert "16 per device x 1 device(s) x 8 accumulation = 128 global" in out
    assert not (world["root"] / "out").exists()  # nothing was trained or written


def test_inconsistent_batch_is_an_error_before_loading(world, capsys):
    rc = main(
        [
            "train",
            "retrieval",
            "flickr30k_head",
            *_sets(world, "schedule.per_device_batch_size=24"),
            "--dry-run",
        ]
    )
    assert rc == 2
    err = capsys.readouterr().err
    assert "global batch 128 is not a multiple of per-device batch 24" in err


def test_resume_refuses_another_recipe(world, capsys):
    out = world["root"] / "refuse"
    out.mkdir()
    old = load_recipe("tiny_synthetic", [f"model.path={world['ckpt']}", "optim.lr=0.5", "method.name=head"])
    (out / RECIPE_FILE).write_text(json.dumps(old.to_dict()))
    rc = main(["train", "retrieval", "tiny_synthetic", *_sets(world, f"log.output_dir={out}"), "--resume"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "optim.lr: checkpoint 0.5 vs now 0.001" in err and "method.name: checkpoint 'head' vs now 'full'" in err


def test_print_config(world, capsys):
    assert main(["train", "retrieval", "flickr30k_lora", "--set", "method.lora_rank=8", "--print-config"]) == 0
    import yaml

    cfg = yaml.safe_load(capsys.readouterr().out)
    assert cfg["method"] == {**cfg["method"], "name": "lora", "lora_rank": 8} and cfg["engine"]["zero_stage"] == 3


def test_preflight_names_file_line_and_field(world, tmp_path):
    registry = make_flickr_set(tmp_path, "bad_flickr_format_train", 3)
    (tmp_path / "images" / "1001.jpg").unlink()
    with open(tmp_path / "bad_flickr_format_train.txt", "a") as f:
        f.write("1000.jpg,...\n")  # empty after cleaning
    recipe = load_recipe(
        "tiny_synthetic",
        [f"model.path={world['ckpt']}", f"data.registry=[{registry}]", "data.train=bad_flickr_format_train"],
    )
    with pytest.raises(DataFormatError, match=r"bad_flickr_format_train.txt:8: field 'caption': empty after cleaning"):
        RetrievalFinetune(recipe).prepare_data()
    lines = (tmp_path / "bad_flickr_format_train.txt").read_text().splitlines()
    (tmp_path / "bad_flickr_format_train.txt").write_text("\n".join(lines[:-1]) + "\n")
    (tmp_path / "images" / "1002.jpg").write_bytes(b"not a jpeg at all")
    with pytest.raises(
        DataFormatError, match=r"\.txt:4: field 'image': \S+1001.jpg not found; also \S+1002.jpg; "
    ) as e:
        RetrievalFinetune(recipe).prepare_data()
    assert "2 image file(s) (4 of 6 samples) are missing or unreadable" in str(e.value)
    assert "\n" not in str(e.value)  # one line, whatever the number of bad files
    recipe.data.skip_bad_samples = True
    plan = RetrievalFinetune(recipe).prepare_data()
    assert len(plan.pairs) == 2 and len(plan.skipped) == 4
    assert {p.image_id for p in plan.pairs} == {1000}


def test_coco_format_dataset_from_a_registry_file(world, tmp_path):
    """A user's coco_format (LAVIS train list) dataset is trained on through the registry, no code edits."""
    from PIL import Image

    (tmp_path / "imgs" / "train2014").mkdir(parents=True)
    entries = []
    for i, caption in enumerate(["A red square.", "A blue bar!", "A red square on the left", "a green bar"]):
        rel = f"train2014/COCO_train2014_{i // 2:012d}.jpg"
        Image.new("RGB", (8, 8), (40 * i, 9, 9)).save(tmp_path / "imgs" / rel)
        entries.append({"image": rel, "caption": caption, "image_id": f"coco_{i // 2}"})
    (tmp_path / "train.json").write_text(json.dumps(entries))
    (tmp_path / "reg.yaml").write_text(
        "datasets:\n  - {name: my_coco_format_train, root: imgs, annotation: train.json}\n"
    )
    recipe = load_recipe(
        "tiny_synthetic",
        [f"model.path={world['ckpt']}", f"data.registry=[{tmp_path / 'reg.yaml'}]", "data.train=my_coco_format_train"],
    )
    plan = RetrievalFinetune(recipe).prepare_data()
    assert [(p.image_id, p.caption) for p in plan.pairs] == [
        (0, "a red square"),
        (0, "a blue bar"),
        (1, "a red square on the left"),
        (1, "a green bar"),
    ]
    assert plan.skipped == []
