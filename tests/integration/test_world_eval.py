"""The world's registry drives the real retrieval evaluation: a world checkpoint is scored on its test split."""

from __future__ import annotations

import json
import shutil

import pytest

from internvl.cli.main import main
from internvl.data.synthetic.world import write_world
from internvl.data.tokenization import InternVLTextTokenizer
from internvl.models.internvl_cg import build_internvl, internvl_cg_world


@pytest.mark.integration
def test_eval_retrieval_on_the_world(tmp_path):
    world = tmp_path / "world"
    write_world(world, seed=3, sizes={"train": 8, "val": 2, "test": 12})
    ckpt = tmp_path / "ckpt"
    vocab = InternVLTextTokenizer.from_pretrained(world / "tokenizer").vocab_size
    build_internvl(internvl_cg_world(vocab)).save_pretrained(ckpt)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(world / "tokenizer" / name, ckpt)
    out = tmp_path / "r.json"
    code = main(
        [
            "eval",
            "retrieval",
            "--model",
            str(ckpt),
            "--registry",
            str(world / "registry.yaml"),
            "--dataset",
            "world_flickr_format_test",
            "--output",
            str(out),
        ]
    )
    assert code == 0
    result = json.loads(out.read_text())
    assert (result["num_images"], result["num_texts"], result["image_size"]) == (12, 36, 48)
    assert 0.0 <= result["metrics"]["image_retrieval_recall@1"] <= result["metrics"]["image_retrieval_recall@5"] <= 1.0
