"""`internvl embed | classify | caption` end to end on a tiny random InternVL-C/G checkpoint (in-process)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from internvl.cli.main import main
from internvl.data.synthetic import build_tokenizer, synthetic_image
from internvl.data.tokenization import InternVLTextTokenizer
from internvl.data.transforms import build_transform, load_image
from internvl.inference.embedding import embed_images, embed_texts
from internvl.models.internvl_cg import InternVLModel, build_internvl, internvl_cg_tiny

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("internvl_cg_tiny")
    build_tokenizer(root)
    vocab = len(InternVLTextTokenizer.from_pretrained(root).tokenizer)
    build_internvl(internvl_cg_tiny(vocab_size=vocab), seed=0).save_pretrained(root)
    return root


@pytest.fixture(scope="module")
def images_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    for i in range(3):
        synthetic_image(i, size=40 + 8 * i).save(root / f"img{i}.png")
    (root / "notes.txt").write_text("not an image")
    return root


def test_embed_images_and_texts_to_safetensors(model_dir, images_dir, tmp_path):
    out = tmp_path / "emb.safetensors"
    texts = ["a dog runs", "两只猫"]
    argv = [
        "embed",
        str(model_dir),
        "--images-dir",
        str(images_dir),
        "--output",
        str(out),
        "--mode",
        "InternVL-G",
        "--device",
        "cpu",
        "--batch-size",
        "2",
    ]
    for t in texts:
        argv += ["--text", t]
    assert main(argv) == 0
    tensors = load_file(str(out))
    assert tensors["image_embeds"].shape == (3, 32) and tensors["text_embeds"].shape == (2, 32)
    with safe_open(str(out), "pt") as f:
        meta = f.metadata()
    assert json.loads(meta["texts"]) == texts and len(json.loads(meta["images"])) == 3
    # Same numbers as the Python API.
    model = InternVLModel.from_pretrained(model_dir)
    tok = InternVLTextTokenizer.from_pretrained(model_dir)
    files = sorted(images_dir.glob("*.png"))
    expected = embed_images(model, files, build_transform("retrieval", model.image_size), 3, "InternVL-G")
    torch.testing.assert_close(tensors["image_embeds"], expected, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(tensors["text_embeds"], embed_texts(model, tok, texts), atol=1e-6, rtol=1e-6)


def test_embed_npy_and_argument_errors(model_dir, images_dir, tmp_path, capsys):
    out = tmp_path / "img.npy"
    assert (
        main(
            ["embed", str(model_dir), "--image", str(images_dir / "img1.png"), "--output", str(out), "--device", "cpu"]
        )
        == 0
    )
    arr = np.load(out)
    assert arr.shape == (1, 32)
    np.testing.assert_allclose(np.linalg.norm(arr, axis=1), 1.0, rtol=1e-5)
    assert (
        main(
            [
                "embed",
                str(model_dir),
                "--image",
                str(images_dir / "img1.png"),
                "--text",
                "x",
                "--output",
                str(tmp_path / "both.npy"),
            ]
        )
        == 2
    )
    assert "one array" in capsys.readouterr().err
    assert main(["embed", str(model_dir), "--output", str(out)]) == 2
    assert "nothing to embed" in capsys.readouterr().err


def test_classify_writes_ranked_predictions(model_dir, images_dir, tmp_path):
    classes_file = tmp_path / "classes.txt"
    classes_file.write_text("dog\ncat\n\nred square\n")
    out = tmp_path / "pred.json"
    images = [str(images_dir / "img0.png"), str(images_dir / "img2.png")]
    assert (
        main(
            [
                "classify",
                str(model_dir),
                *images,
                "--classes-file",
                str(classes_file),
                "--top-k",
                "2",
                "--templates",
                "a photo of a {}.",
                "--templates",
                "a {}",
                "--output",
                str(out),
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    records = json.loads(out.read_text())
    assert [r["image"] for r in records] == images
    # The same through the Python API (as the embed and caption tests do)
    from internvl.inference.embedding import classify, zero_shot_classifier

    names = ["dog", "cat", "red square"]
    model = InternVLModel.from_pretrained(model_dir)
    tok = InternVLTextTokenizer.from_pretrained(model_dir)
    classifier = zero_shot_classifier(model, tok, names, ["a photo of a {}.", "a {}"])
    emb = embed_images(model, images, build_transform("classification", model.image_size))
    result = classify(emb, classifier, top_k=2)
    for rec, probs, idx in zip(records, result.probs, result.indices, strict=True):
        assert [p["label"] for p in rec["predictions"]] == [names[int(i)] for i in idx]
        assert [p["score"] for p in rec["predictions"]] == [round(float(p), 6) for p in probs]
        assert rec["predictions"][0]["score"] >= rec["predictions"][1]["score"]


def test_classify_needs_classes(model_dir, images_dir, capsys):
    assert main(["classify", str(model_dir), str(images_dir / "img0.png")]) == 2
    assert "--classes" in capsys.readouterr().err


def test_caption_folder(model_dir, images_dir, tmp_path):
    out = tmp_path / "captions.json"
    assert (
        main(
            [
                "caption",
                str(model_dir),
                str(images_dir),
                "--output",
                str(out),
                "--batch-size",
                "2",
                "--num-beams",
                "2",
                "--min-new-tokens",
                "2",
                "--max-new-tokens",
                "4",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    records = json.loads(out.read_text())
    assert [r["image"] for r in records] == ["img0.png", "img1.png", "img2.png"]
    # The CLI's batches of 2 give the same captions as captioning each image alone with the Python API.
    from internvl.inference.captioning import generate_captions

    model = InternVLModel.from_pretrained(model_dir)
    tok = InternVLTextTokenizer.from_pretrained(model_dir)
    transform = build_transform("caption", model.image_size)
    for rec in records:
        pixel_values = transform(load_image(images_dir / rec["image"]))[None]
        assert generate_captions(model, tok, pixel_values, num_beams=2, min_new_tokens=2, max_new_tokens=4) == [
            rec["caption"]
        ]


def test_help_texts(capsys):
    for verb in ("embed", "classify", "caption"):
        assert main([verb, "--help"]) == 0
        assert "MODEL_DIR" in capsys.readouterr().out.upper()


def test_amp_context_only_for_fp16_models_on_cuda():
    """clip_benchmark runs the fp16 reference under CUDA autocast; fp32/bf16 models and the CPU run as they are."""
    import types
    import warnings

    from internvl.inference.embedding import amp_context

    def ctx(device, dtype, amp=True):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "CUDA is not available" on CPU-only machines
            return amp_context(types.SimpleNamespace(device=torch.device(device), dtype=dtype), amp)

    on = ctx("cuda", torch.float16)
    assert isinstance(on, torch.autocast) and on.fast_dtype == torch.float16 and on.device == "cuda"
    for args in (
        ("cuda", torch.float32),
        ("cuda", torch.bfloat16),
        ("cpu", torch.float16),
        ("cuda", torch.float16, False),
    ):
        assert not isinstance(ctx(*args), torch.autocast), args


def test_classifier_and_embeddings_report_progress(model_dir, images_dir):
    from internvl.inference.embedding import zero_shot_classifier

    model = InternVLModel.from_pretrained(model_dir)
    tok = InternVLTextTokenizer.from_pretrained(model_dir)
    done: list[int] = []
    classifier = zero_shot_classifier(
        model, tok, ["dog", "cat", "car"], ["a {}.", "the {}"], batch_size=4, progress=done.append
    )
    assert classifier.shape == (3, 32) and sum(done) == 6 and len(done) == 2
    done.clear()
    files = sorted(images_dir.glob("*.png"))
    embed_images(model, files, build_transform("classification", model.image_size), 2, progress=done.append)
    assert done == [2, 1]


def test_tokenizer_of_another_checkpoint_is_refused(tmp_path, capsys):
    """Token ids past the embedding table would index out of range (a device-side assert on CUDA)."""
    root = tmp_path / "mismatched"
    build_tokenizer(root)  # ~400 tokens
    build_internvl(internvl_cg_tiny(vocab_size=64), seed=0).save_pretrained(root)
    assert main(["embed", str(root), "--text", "a dog", "--output", str(tmp_path / "t.npy"), "--device", "cpu"]) != 0
    assert "do not belong to this checkpoint" in capsys.readouterr().err
