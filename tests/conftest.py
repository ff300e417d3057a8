"""Shared fixtures: the parity fixture root, seeded generators, tiny images."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


def parity_root() -> Path:
    """Golden fixtures of the reference implementation; overridable for other fixture sets of the same layout."""
    return Path(os.environ.get("INTERNVL_PARITY_FIXTURES", REPO.parent / "shared" / "fixtures" / "upstream"))


def load_fixture(name: str) -> dict:
    """Read one fixture folder: config, model weights, inputs, outputs and meta (when present)."""
    from safetensors.torch import load_file

    root = parity_root() / name
    if not root.is_dir():
        pytest.fail(f"parity fixtures not found at {root} (set INTERNVL_PARITY_FIXTURES)")
    out = {"root": root, "config": json.loads((root / "config.json").read_text())}
    for stem in ("inputs", "outputs", "train_inputs", "train_outputs"):
        f = root / f"{stem}.safetensors"
        if f.is_file():
            out[stem] = load_file(str(f))
    meta = root / "meta.json"
    out["meta"] = json.loads(meta.read_text()) if meta.is_file() else {}
    return out


@pytest.fixture(autouse=True)
def _fp32_default():
    torch.set_default_dtype(torch.float32)
    yield


@pytest.fixture
def generator() -> torch.Generator:
    return torch.Generator().manual_seed(0)


class _DeprecationNotices(logging.Handler):
    """Collects transformers' logged deprecation notices (``logger.warning_once(... deprecated ...)``)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if "deprecat" in message.lower():
            self.messages.append(message)


@pytest.fixture(autouse=True)
def _no_transformers_deprecations():
    """transformers announces many renames through its logger rather than `warnings`: fail on those too."""
    handler = _DeprecationNotices()
    hf_logger = logging.getLogger("transformers")
    hf_logger.addHandler(handler)
    try:
        yield
    finally:
        hf_logger.removeHandler(handler)
    assert not handler.messages, f"transformers logged deprecation notices: {handler.messages}"


_DIST_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


@pytest.fixture(autouse=True)
def _no_leaked_distributed_state():
    """A test that leaves a process group or torchrun variables behind makes later single-process tests
    silently run under DDP (HF Trainer wraps the model): clean up, and fail the test that leaked."""
    env = {k: os.environ.get(k) for k in _DIST_ENV}
    yield
    import torch.distributed as dist

    leaked = []
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
        leaked.append("an initialised torch.distributed process group")
    for key, value in env.items():
        if os.environ.get(key) != value:
            leaked.append(f"${key}={os.environ.get(key)!r}")
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    assert not leaked, "test left distributed state behind: " + ", ".join(leaked)


def _needs_training_stack(item: pytest.Item) -> bool:
    parts = Path(str(item.fspath)).relative_to(REPO).parts
    return (
        parts[:3] == ("tests", "unit", "training")
        or Path(str(item.fspath)).name.startswith("test_train_")
        or item.get_closest_marker("training") is not None
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """On a transformers older than the training engine supports (the oldest set, `make test-oldest`), the
    training tests are skipped with the reason; everywhere else they run."""
    from internvl.training import MIN_TRANSFORMERS, training_supported

    if training_supported():
        return
    reason = f"training needs transformers >= {'.'.join(map(str, MIN_TRANSFORMERS))} (the `train` extra)"
    for item in items:
        if _needs_training_stack(item):
            item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(scope="session")
def demo_checkpoints(tmp_path_factory) -> dict[str, Path]:
    """Checkpoints laid out as `make demo` writes them, untrained and small: the built-in world (a few
    scenes, its byte-level BPE tokenizer, SFT meta), an `internvl_cg_world` InternVL-C/G with that tokenizer
    (stage 1's layout), an InternVL-Chat assembled from `world_chat_config` with the tokenizer plus the chat
    tokens (what the SFT recipe saves), and a tiny InternViT. Built once per session (a few seconds)."""
    import shutil

    from internvl.data.synthetic import CHAT_SPECIAL_TOKENS
    from internvl.data.synthetic.world import write_world
    from internvl.data.tokenization import InternVLTextTokenizer
    from internvl.inference.loading import load_tokenizer, save_chat_model
    from internvl.models.internvl_cg import build_internvl, internvl_cg_world
    from internvl.models.internvl_chat import build_internvl_chat, world_chat_config
    from internvl.models.registry import create_model

    root = tmp_path_factory.mktemp("demo_checkpoints")
    world = root / "world"
    write_world(world, seed=3, sizes={"train": 4, "val": 2, "test": 4})
    cg = root / "internvl_c" / "final"
    vocab = InternVLTextTokenizer.from_pretrained(world / "tokenizer").vocab_size
    build_internvl(internvl_cg_world(vocab), seed=0).save_pretrained(cg)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(world / "tokenizer" / name, cg)
    tok = load_tokenizer(world / "tokenizer")
    tok.add_tokens(list(CHAT_SPECIAL_TOKENS), special_tokens=True)
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    chat = save_chat_model(
        build_internvl_chat(world_chat_config(len(tok), eos_token_id=im_end), seed=0),
        tok,
        root / "internvl_chat" / "final",
    )
    vit = root / "intern_vit"
    create_model("intern_vit_tiny").save_pretrained(vit)
    images = sorted((world / "images").glob("*.jpg"))
    return {
        "root": root,
        "world": world,
        "cg": cg,
        "chat": chat,
        "vit": vit,
        "image": images[0],
        "images": world / "images",
    }
