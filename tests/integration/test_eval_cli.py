"""End to end: `internvl eval retrieval|caption` on a tiny random InternVL-C/G and tiny datasets in the
guides' real layouts (Flickr30K txt, Flickr30K-CN txt, COCO Karpathy LAVIS JSON + COCO ground truth),
with pycocoevalcap really scoring."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch

from internvl.cli.main import main
from internvl.data.datasets import pre_caption
from internvl.data.synthetic import build_tokenizer, synthetic_image
from internvl.data.tokenization import InternVLTextTokenizer
from internvl.data.transforms import build_transform
from internvl.models.internvl_cg import InternVLModel, build_internvl, internvl_cg_tiny

pytestmark = pytest.mark.integration

N_FLICKR, N_COCO = 6, 4


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("eval")
    model_dir = root / "model"
    build_internvl(internvl_cg_tiny(), seed=0).save_pretrained(model_dir)
    build_tokenizer(model_dir)
    data = root / "data"
    images = data / "flickr30k" / "Images"
    images.mkdir(parents=True)
    en, cn = ["image,caption"], ["image,caption"]
    for i in range(N_FLICKR):
        synthetic_image(i, 64).save(images / f"{1000 + i}.jpg")
        for j in range(1 + i % 3):  # 1 to 3 captions per image
            en.append(f'{1000 + i}.jpg,"A dog, number {i}, runs on the green grass ({j})."')
            cn.append(f"{1000 + i}.jpg,一只狗在草地上奔跑 {i}，第{j}句。")
    (data / "flickr30k" / "flickr30k_test_karpathy.txt").write_text("\n".join(en) + "\n", encoding="utf-8")
    (data / "flickr30k" / "flickr30k_cn_test.txt").write_text("\n".join(cn) + "\n", encoding="utf-8")
    (data / "coco" / "annotations").mkdir(parents=True)
    (data / "coco" / "val2014").mkdir(parents=True)
    entries = []
    for i in range(N_COCO):
        name = f"val2014/COCO_val2014_{391895 + i:012d}.jpg"
        synthetic_image(20 + i, 64).save(data / "coco" / name)
        entries.append({"image": name, "caption": [f"a red square {i}", f"two cats sit on a red sofa {i}"]})
    (data / "coco" / "annotations" / "coco_karpathy_test.json").write_text(json.dumps(entries))
    return root


def _load(world: Path):
    return InternVLModel.from_pretrained(world / "model"), InternVLTextTokenizer.from_pretrained(world / "model")


def _oracle_metrics(model, tokenizer, image_files, captions_per_image, mode):
    """Independent path: one image at a time, full score matrix, stable descending sort."""
    transform = build_transform("retrieval", model.image_size)
    with torch.no_grad():
        imgs = torch.cat([model.encode_image(transform(_open(f))[None], mode=mode) for f in image_files])
        texts = [pre_caption(c) for caps in captions_per_image for c in caps]
        txts = model.encode_text(tokenizer(texts))
    imgs = torch.nn.functional.normalize(imgs, dim=-1)
    txts = torch.nn.functional.normalize(txts, dim=-1)
    owner = torch.tensor([i for i, caps in enumerate(captions_per_image) for _ in caps])
    scores = txts @ imgs.T
    t_rank = (torch.sort(scores, dim=1, descending=True, stable=True).indices == owner[:, None]).float().argmax(1)
    pos = owner[None, :] == torch.arange(len(image_files))[:, None]
    order = torch.sort(scores.T, dim=1, descending=True, stable=True).indices
    i_rank = torch.gather(pos, 1, order).float().argmax(1)
    return t_rank, i_rank


def _open(path):
    from PIL import Image

    with Image.open(path) as im:
        return im.convert("RGB")


def _flickr_truth(world: Path, name: str):
    lines = (world / "data" / "flickr30k" / name).read_text(encoding="utf-8").splitlines()[1:]
    caps: dict[str, list[str]] = {}
    for line in lines:
        stem, _, cap = line.partition(".jpg,")
        caps.setdefault(stem, []).append(cap)
    files = [world / "data" / "flickr30k" / "Images" / f"{s}.jpg" for s in caps]
    return files, list(caps.values())


@pytest.mark.parametrize("language, mode", [("en", "InternVL-C"), ("cn", "InternVL-G")])
def test_retrieval_cli_matches_an_independent_full_matrix_computation(world, tmp_path, language, mode):
    out = tmp_path / "result.json"
    rc = main(
        [
            "eval",
            "retrieval",
            "--model",
            str(world / "model"),
            "--dataset",
            "flickr30k",
            "--language",
            language,
            "--mode",
            mode,
            "--data-root",
            str(world / "data"),
            "--batch-size",
            "4",
            "--num-workers",
            "0",
            "--output",
            str(out),
        ]
    )
    assert rc == 0
    result = json.loads(out.read_text())
    assert result["dataset"] == f"flickr30k_{language}_test" and result["language"] == language
    assert result["task"] == "zeroshot_retrieval" and result["mode"] == mode
    assert result["model"] == {"InternVL-C": "internvl_c_retrieval_hf", "InternVL-G": "internvl_g_retrieval_hf"}[mode]
    files, captions = _flickr_truth(
        world, f"flickr30k{'_cn' if language == 'cn' else ''}_test{'_karpathy' if language == 'en' else ''}.txt"
    )
    assert result["num_images"] == N_FLICKR and result["num_texts"] == sum(map(len, captions))

    model, tokenizer = _load(world)
    t_rank, i_rank = _oracle_metrics(model, tokenizer, files, captions, mode)
    m = result["metrics"]
    assert list(m) == [
        "image_retrieval_recall@1",
        "text_retrieval_recall@1",
        "image_retrieval_recall@5",
        "text_retrieval_recall@5",
        "image_retrieval_recall@10",
        "text_retrieval_recall@10",
        "mean_recall",
    ]
    for k in (1, 5, 10):
        assert m[f"image_retrieval_recall@{k}"] == pytest.approx((t_rank < k).float().mean().item())
        assert m[f"text_retrieval_recall@{k}"] == pytest.approx((i_rank < k).float().mean().item())


def test_retrieval_cli_limit_append_and_custom_registry(world, tmp_path):
    reg = tmp_path / "datasets.yaml"
    reg.write_text(
        f"data_root: {world / 'data'}\n"
        "datasets:\n"
        "  - name: my_coco_format_test\n"
        "    root: coco\n"
        "    annotation: coco/annotations/coco_karpathy_test.json\n"
    )
    out = tmp_path / "r.jsonl"
    args = [
        "eval",
        "retrieval",
        "--model",
        str(world / "model"),
        "--dataset",
        "my_coco_format_test",
        "--registry",
        str(reg),
        "--num-workers",
        "0",
        "--output",
        str(out),
        "--append",
    ]
    assert main(args) == 0
    assert main(args + ["--limit", "3"]) == 0
    first, second = (json.loads(line) for line in out.read_text().splitlines())
    assert (first["num_images"], first["num_texts"]) == (N_COCO, 2 * N_COCO)
    assert (second["num_images"], second["limit"]) == (3, 3)
    assert first["dataset"] == "my_coco_format_test"


def test_eval_errors_name_the_missing_file(world, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(world / "data" / "flickr30k", data / "flickr30k")
    (data / "flickr30k" / "Images" / "1003.jpg").unlink()
    base = [
        "eval",
        "retrieval",
        "--model",
        str(world / "model"),
        "--output",
        str(tmp_path / "r.json"),
        "--num-workers",
        "0",
    ]
    assert main(base + ["--data-root", str(data)]) == 2
    err = capsys.readouterr().err
    assert "1 of 6 image files are missing" in err and str(data / "flickr30k" / "Images" / "1003.jpg") in err
    assert main(base + ["--data-root", str(tmp_path / "nowhere")]) == 2
    assert "annotation file not found" in capsys.readouterr().err
    assert main(base + ["--dataset", "flikr30k"]) == 2
    assert "unknown dataset 'flikr30k'" in capsys.readouterr().err
    # A COCO caption dict with an image that has no caption cannot be scored image->text.
    ann = tmp_path / "ann.json"
    ann.write_text(
        json.dumps(
            {
                "images": [{"id": 1, "file_name": "1000.jpg"}, {"id": 2, "file_name": "1001.jpg"}],
                "annotations": [{"image_id": 1, "caption": "a dog", "id": 0}],
            }
        )
    )
    reg = tmp_path / "reg.yaml"
    reg.write_text(f"datasets:\n  - name: odd_coco\n    root: {data / 'flickr30k' / 'Images'}\n    annotation: {ann}\n")
    assert main(base + ["--dataset", "odd_coco", "--registry", str(reg)]) == 2
    assert "1 image(s) have no caption, e.g. image id 2" in capsys.readouterr().err
    assert not (tmp_path / "r.json").exists()


@pytest.mark.slow  # Java (pycocoevalcap) scoring: 25-80 s here
def test_caption_cli_writes_coco_results_and_pycocoevalcap_scores(world, tmp_path):
    if shutil.which("java") is None:
        pytest.skip("pycocoevalcap needs Java")
    from internvl.inference.captioning import generate_captions

    # Ground truth whose only reference per image IS the caption the model generates: if the runner
    # keeps images and ids aligned, BLEU/METEOR/ROUGE-L come out at 1; any misalignment drops them.
    model, tokenizer = _load(world)
    entries = json.loads((world / "data" / "coco" / "annotations" / "coco_karpathy_test.json").read_text())[:3]
    transform = build_transform("caption", model.image_size)
    pixels = torch.stack([transform(_open(world / "data" / "coco" / e["image"])) for e in entries])
    expected = generate_captions(model, tokenizer, pixels[:2]) + generate_captions(model, tokenizer, pixels[2:])
    ids = [391895 + i for i in range(3)]
    gt = {
        "images": [{"id": i} for i in ids] + [{"id": 391898}],
        "annotations": [
            {"image_id": i, "caption": c, "id": n} for n, (i, c) in enumerate(zip(ids, expected, strict=True))
        ]
        + [{"image_id": 391898, "caption": "unused", "id": 9}],
    }
    data = tmp_path / "data"
    shutil.copytree(world / "data" / "coco", data / "coco")
    (data / "coco" / "annotations" / "coco_karpathy_test_gt.json").write_text(json.dumps(gt))

    out = tmp_path / "captions"
    rc = main(
        [
            "eval",
            "caption",
            "--model",
            str(world / "model"),
            "--dataset",
            "coco",
            "--data-root",
            str(data),
            "--limit",
            "3",
            "--batch-size",
            "2",
            "--num-workers",
            "0",
            "--output",
            str(out),
        ]
    )
    assert rc == 0
    results = json.loads((out / "coco_karpathy_test_captions.json").read_text())
    assert results == [{"image_id": i, "caption": c} for i, c in zip(ids, expected, strict=True)]
    summary = json.loads((out / "coco_karpathy_test_metrics.json").read_text())
    assert list(summary["metrics"]) == ["Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr"]
    assert summary["metrics"]["Bleu_1"] == pytest.approx(1.0, abs=1e-6)
    assert summary["metrics"]["METEOR"] == pytest.approx(1.0)
    assert summary["metrics"]["ROUGE_L"] == pytest.approx(1.0)
    assert summary["num_images"] == 3 and summary["prompt"] == "English caption:"
    assert summary["generation"] == {"num_beams": 5, "min_new_tokens": 8, "max_new_tokens": 30, "batch_size": 2}
    assert summary["average_length"] == pytest.approx(sum(len(c.split()) for c in expected) / 3)


# --- Incremental, resumable caption runs -------------------------------------------------------------

PARTIAL = "coco_karpathy_test_captions.partial.jsonl"
SETTINGS = "coco_karpathy_test_captions.partial.settings.json"
COCO_IDS = [391895 + i for i in range(N_COCO)]


def _coco_with_references(world: Path, tmp_path: Path) -> Path:
    """A private copy of the COCO data plus ground truth from its own captions (tests may break images)."""
    data = tmp_path / "data"
    shutil.copytree(world / "data" / "coco", data / "coco")
    entries = json.loads((data / "coco" / "annotations" / "coco_karpathy_test.json").read_text())
    anns = [
        {"image_id": i, "caption": c, "id": 10 * i + j}
        for i, e in zip(COCO_IDS, entries, strict=True)
        for j, c in enumerate(e["caption"])
    ]
    gt = {"images": [{"id": i} for i in COCO_IDS], "annotations": anns}
    (data / "coco" / "annotations" / "coco_karpathy_test_gt.json").write_text(json.dumps(gt))
    return data


def _caption(world: Path, data: Path, out: Path, *extra: str, model: Path | None = None) -> int:
    """One CLI run; tests that do not look at metrics pass --no-score (METEOR's JVM takes ~7 s per run)."""
    model = model or world / "model"
    return main(
        [
            "eval",
            "caption",
            "--model",
            str(model),
            "--dataset",
            "coco",
            "--data-root",
            str(data),
            "--batch-size",
            "1",
            "--num-workers",
            "0",
            "--output",
            str(out),
            *extra,
        ]
    )


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _needs_java() -> None:
    if shutil.which("java") is None:
        pytest.skip("pycocoevalcap needs Java")


@pytest.mark.slow  # Java (pycocoevalcap) scoring: 25-80 s here
def test_caption_run_resumes_after_a_crash_without_regenerating(world, tmp_path, capsys):
    _needs_java()
    data, out = _coco_with_references(world, tmp_path), tmp_path / "out"
    third = data / "coco" / "val2014" / f"COCO_val2014_{COCO_IDS[2]:012d}.jpg"
    good = third.read_bytes()
    third.write_bytes(b"not a jpeg")  # the run dies when it reaches the third image
    assert _caption(world, data, out) == 2
    assert "COCO_val2014_000000391897.jpg" in capsys.readouterr().err
    rows = _lines(out / PARTIAL)
    assert [r["image_id"] for r in rows] == COCO_IDS[:2]  # the two finished batches survived
    assert not (out / "coco_karpathy_test_captions.json").exists()

    # Mark a saved caption: if the resumed run regenerated that image, the marker would be gone.
    rows[0]["caption"] = "caption saved before the crash"
    (out / PARTIAL).write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    third.write_bytes(good)
    assert _caption(world, data, out, "--no-score") == 0
    rows = _lines(out / PARTIAL)
    assert [r["image_id"] for r in rows] == COCO_IDS  # 2 + 2 lines: only the missing images were generated
    results = json.loads((out / "coco_karpathy_test_captions.json").read_text())
    assert results == [{"image_id": r["image_id"], "caption": r["caption"]} for r in rows]
    assert results[0]["caption"] == "caption saved before the crash"
    summary = json.loads((out / "coco_karpathy_test_metrics.json").read_text())
    assert (summary["num_images"], summary["resumed_images"], summary["generated_images"]) == (4, 2, 2)
    assert summary["metrics"] is None

    # The partial file is kept after a finished run: running again with scoring only scores.
    assert _caption(world, data, out) == 0
    assert len(_lines(out / PARTIAL)) == N_COCO
    summary = json.loads((out / "coco_karpathy_test_metrics.json").read_text())
    assert (summary["resumed_images"], summary["generated_images"]) == (4, 0)
    assert list(summary["metrics"]) == ["Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr"]
    assert json.loads((out / "coco_karpathy_test_captions.json").read_text()) == results
    assert sorted(p.name for p in out.iterdir()) == sorted(  # atomic writes leave no temporary files behind
        [PARTIAL, SETTINGS, "coco_karpathy_test_captions.json", "coco_karpathy_test_metrics.json"]
    )


@pytest.mark.slow  # Java (pycocoevalcap) scoring: 25-80 s here
def test_caption_limit_run_is_continued_by_the_full_run_and_matches_a_fresh_one(world, tmp_path):
    data, out = _coco_with_references(world, tmp_path), tmp_path / "out"
    assert _caption(world, data, out, "--no-score", "--limit", "2") == 0
    assert [r["image_id"] for r in _lines(out / PARTIAL)] == COCO_IDS[:2]
    assert json.loads((out / SETTINGS).read_text())["details"]["limit"] == 2
    assert len(json.loads((out / "coco_karpathy_test_captions.json").read_text())) == 2

    assert _caption(world, data, out, "--no-score", "--batch-size", "2") == 0  # batch size may change between runs
    assert [r["image_id"] for r in _lines(out / PARTIAL)] == COCO_IDS  # 2 more lines, not 4
    resumed = json.loads((out / "coco_karpathy_test_captions.json").read_text())
    summary = json.loads((out / "coco_karpathy_test_metrics.json").read_text())
    assert (summary["resumed_images"], summary["generated_images"], summary["limit"]) == (2, 2, None)

    assert _caption(world, data, out, "--no-score", "--overwrite") == 0  # start over: one uninterrupted run
    assert len(_lines(out / PARTIAL)) == N_COCO
    assert json.loads((out / "coco_karpathy_test_captions.json").read_text()) == resumed
    assert json.loads((out / "coco_karpathy_test_metrics.json").read_text())["generated_images"] == N_COCO


def test_caption_truncated_last_line_is_redone_with_a_warning(world, tmp_path, caplog):
    data, out = _coco_with_references(world, tmp_path), tmp_path / "out"
    assert _caption(world, data, out, "--no-score", "--limit", "2") == 0
    text = (out / PARTIAL).read_text(encoding="utf-8")
    first, second = text.splitlines(keepends=True)
    (out / PARTIAL).write_text(first + second[: len(second) // 2], encoding="utf-8")  # crash mid-write

    with caplog.at_level("WARNING", logger="internvl.evaluation.partial_results"):
        assert _caption(world, data, out, "--no-score") == 0
    assert any("last line is incomplete" in r.getMessage() for r in caplog.records)
    lines = (out / PARTIAL).read_text(encoding="utf-8").splitlines(keepends=True)
    assert [json.loads(line)["image_id"] for line in lines] == COCO_IDS  # redone, and on its own line
    assert lines[:2] == [first, second]  # the redone caption equals the lost one (deterministic decoding)
    summary = json.loads((out / "coco_karpathy_test_metrics.json").read_text())
    assert (summary["resumed_images"], summary["generated_images"]) == (1, 3)


def test_caption_resume_refuses_results_of_other_settings(world, tmp_path, capsys):
    data, out = _coco_with_references(world, tmp_path), tmp_path / "out"
    assert _caption(world, data, out, "--no-score", "--limit", "1") == 0
    before = (out / PARTIAL).read_bytes()
    capsys.readouterr()

    assert _caption(world, data, out, "--no-score", "--num-beams", "3") == 2
    err = capsys.readouterr().err
    assert "different settings" in err and "generation: before {'num_beams': 5" in err and "'num_beams': 3" in err
    assert "--overwrite" in err
    capsys.readouterr()

    ann = data / "coco" / "annotations" / "coco_karpathy_test.json"
    ann.write_text(ann.read_text().replace("red square 0", "blue square 0"))  # another dataset version
    assert _caption(world, data, out, "--no-score") == 2
    assert "annotation_sha256: before" in capsys.readouterr().err
    assert (out / PARTIAL).read_bytes() == before  # nothing mixed in

    # A checkpoint folder overwritten in place (same path, new weights) is another model.
    model = tmp_path / "model"
    shutil.copytree(world / "model", model)
    out2 = tmp_path / "out2"
    assert _caption(world, data, out2, "--no-score", "--limit", "1", model=model) == 0
    (model / "model.safetensors").write_bytes((model / "model.safetensors").read_bytes())
    os.utime(model / "model.safetensors", ns=(1, 1))
    assert _caption(world, data, out2, "--no-score", model=model) == 2
    assert "model_files: before" in capsys.readouterr().err

    settings = json.loads((out / SETTINGS).read_text())
    assert settings["settings"]["model"] == str((world / "model").resolve())
    assert settings["settings"]["prompt"] == "English caption:" and settings["settings"]["dtype"] == "fp32"
    (out / SETTINGS).unlink()
    assert _caption(world, data, out, "--no-score") == 2
    err = capsys.readouterr().err
    assert "its settings file" in err and "is missing" in err

    # Only the last line may be incomplete: damage elsewhere is reported with file:line, not skipped.
    assert _caption(world, data, out, "--no-score", "--overwrite", "--limit", "1") == 0
    (out / PARTIAL).write_text('{"image_id": 391895, "capt\n' + (out / PARTIAL).read_text(), encoding="utf-8")
    capsys.readouterr()
    assert _caption(world, data, out, "--no-score") == 2
    assert f"{out / PARTIAL}:1: not valid JSON" in capsys.readouterr().err
