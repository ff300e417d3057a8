"""Every ```python block of README.md runs as written (issue 16), on CPU, on the demo-style checkpoints of
the session fixture `demo_checkpoints`.

Blocks are found by their section (``## Section / ### Subsection``), so a block added later is collected
automatically, and the test fails until it is listed in `BLOCKS` (how to run it) or `SKIPPED` (why not).
The only edits made before running a block are the ones listed: a published checkpoint's name becomes the
test's tiny checkpoint, CUDA becomes the CPU (`CPU`), and long generations are shortened. Each listed edit
must still match the README, so a reworded block is noticed.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

README = Path(__file__).resolve().parents[2] / "README.md"

# Applied wherever they occur: the README's GPU spellings on a CPU-only test machine.
CPU = (
    ('device="cuda"', 'device="cpu"'),
    ('.to("cuda", torch.bfloat16)', '.to("cpu", torch.bfloat16)'),
    (".cuda().half()", ""),
    (".cuda()", ""),
    ('dtype="fp16"', 'dtype="fp32"'),  # fp16 matmuls on a CPU are slow or missing; the code path is the same
)


@dataclass(frozen=True)
class Block:
    subs: tuple[tuple[str, str], ...] = ()  # (README text, replacement); {cg}, {chat}, ... name fixture paths
    continues: str | None = None  # run in the namespace the block of this section left behind
    needs: tuple[str, ...] = ()  # "java": pycocoevalcap; "servers": a chat and a C/G server on loopback
    expect: tuple[str, ...] = field(default=())  # names the block must define


CG, CHAT = '"InternVL-14B-224px"', '"InternVL-Chat-V1-2"'
BLOCKS: dict[str, Block] = {
    "InternViT": Block(
        subs=(('"path/to/InternViT-6B-448px-V1-2"', '"{vit}"'),),
        expect=("out",),
    ),
    "InternVL-C and InternVL-G (InternVL 1.0, `InternVL-14B-224px`) / Python API": Block(
        subs=((CG, '"{cg}"'),),
        expect=("scores", "top", "new_tokens"),
    ),
    "InternVL-Chat-V1-2 / Python API (mirrors the model card)": Block(
        subs=((CHAT, '"{chat}"'), ("max_new_tokens=1024", "max_new_tokens=6")),
        expect=("responses", "response", "history"),
    ),
    "InternVL-Chat-V1-2 / ChatPipeline: one object for the CLI, the server and the benchmark harness": Block(
        subs=((CHAT, '"{chat}"'), ("max_new_tokens=256", "max_new_tokens=6")),
        expect=("answers", "req", "stream"),
    ),
    "InternVL-Chat-V1-2 / Multi-turn chat that reuses its cache (`ChatSession`)": Block(
        continues="InternVL-Chat-V1-2 / ChatPipeline: one object for the CLI, the server and the benchmark harness",
        expect=("r1", "r2"),
    ),
    "Evaluation: retrieval and zero-shot captioning / Python API": Block(needs=("java",), expect=("scores",)),
    "SFT data (supervised fine-tuning of InternVL-Chat) / Meta JSON, JSONL records, dataset and collator": Block(
        subs=((CHAT, '"{chat}"'), ('"internvl_1_2_finetune.json"', '"{meta}"')),
        expect=("batch",),
    ),
    "Loading and numerics": Block(subs=((CG, '"{cg}"'), (CHAT, '"{chat}"')), expect=("model",)),
    "Serving: an OpenAI-compatible API and a chat page": Block(
        subs=(('"http://127.0.0.1:8000/v1"', '"{chat_url}/v1"'), ('"http://127.0.0.1:8001/v1"', '"{cg_url}/v1"')),
        needs=("servers",),
        expect=("emb",),
    ),
}
SKIPPED: dict[str, str] = {}  # section -> why it cannot run in a test


def readme_blocks(text: str) -> list[tuple[str, int, str]]:
    """(section, line number, code) of every ```python block; the section is "## title" or
    "## title / ### title" (a deeper heading counts as part of its ### section)."""
    blocks, h2, h3, code, start = [], "", "", None, 0
    counts: dict[str, int] = {}
    for n, line in enumerate(text.splitlines(), 1):
        if code is not None:
            if line.startswith("```"):
                section = f"{h2} / {h3}" if h3 else h2
                counts[section] = counts.get(section, 0) + 1
                key = section if counts[section] == 1 else f"{section} #{counts[section]}"
                blocks.append((key, start, "\n".join(code) + "\n"))
                code = None
            else:
                code.append(line)
        elif re.match(r"```(python|py|python3)\s*$", line):
            code, start = [], n
        elif line.startswith("## "):
            h2, h3 = line[3:].strip(), ""
        elif line.startswith("### "):
            h3 = line[4:].strip()
    return blocks


ALL = readme_blocks(README.read_text(encoding="utf-8"))


def test_every_readme_python_block_is_run_or_skipped_with_a_reason():
    sections = [key for key, _, _ in ALL]
    unlisted = [f"{key} (README.md:{line})" for key, line, _ in ALL if key not in BLOCKS and key not in SKIPPED]
    assert not unlisted, f"README python blocks not covered: add them to BLOCKS or SKIPPED: {unlisted}"
    stale = sorted((set(BLOCKS) | set(SKIPPED)) - set(sections))
    assert not stale, f"listed but no longer in README.md: {stale}"
    assert all(reason.strip() for reason in SKIPPED.values())


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, demo_checkpoints):
    """The files the blocks name, made in an empty folder that is the current directory while they run."""
    import av
    import numpy as np
    from PIL import Image

    d = demo_checkpoints
    root = tmp_path_factory.mktemp("readme")
    images = sorted(d["images"].glob("*.jpg"))
    for name, src in (("cat.jpg", images[0]), ("a.jpg", images[1]), ("b.jpg", images[2])):
        shutil.copy(src, root / name)
    Image.open(images[0]).save(root / "cat.png")
    (root / "examples").mkdir()
    shutil.copy(images[1], root / "examples" / "image1.jpg")
    shutil.copy(images[2], root / "examples" / "image2.jpg")
    with av.open(str(root / "examples" / "red-panda.mp4"), "w") as container:  # 16 frames of colour
        stream = container.add_stream("mpeg4", rate=8)
        stream.width = stream.height = 64
        stream.pix_fmt = "yuv420p"
        for i in range(16):
            frame = np.full((64, 64, 3), (i * 16, 255 - i * 16, 128), dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return root


@pytest.fixture(scope="module")
def servers(demo_checkpoints):
    """`internvl serve` of the chat checkpoint and of the C/G checkpoint, as the serving block expects them."""
    from internvl.cli.serve import build_server_app
    from internvl.serving.schemas import Limits
    from tests.integration.serve_support import running_server

    d = demo_checkpoints
    chat = build_server_app(d["chat"], model_name="InternVL-Chat-V1-2", limits=Limits(default_max_tokens=6))
    cg = build_server_app(d["cg"], model_name="InternVL-14B-224px")
    with running_server(chat) as chat_url, running_server(cg) as cg_url:
        yield {"chat_url": chat_url, "cg_url": cg_url}
    chat.state.worker.close()
    cg.state.worker.close()


_namespaces: dict[str, dict] = {}


@pytest.mark.parametrize("key,line,code", ALL, ids=[f"README.md:{line}" for _, line, _ in ALL])
def test_readme_python_block_runs(key, line, code, demo_checkpoints, workdir, request, monkeypatch):
    if key in SKIPPED:
        pytest.skip(SKIPPED[key])
    if key not in BLOCKS:
        pytest.fail(f"{key} (README.md:{line}) is not in BLOCKS or SKIPPED")
    spec = BLOCKS[key]
    if "java" in spec.needs and shutil.which("java") is None:
        pytest.skip("pycocoevalcap needs Java")
    d = demo_checkpoints
    paths = {"cg": d["cg"], "chat": d["chat"], "vit": d["vit"], "meta": d["world"] / "sft" / "world_sft_train.json"}
    if "servers" in spec.needs:
        paths.update(request.getfixturevalue("servers"))
    for old, new in spec.subs:
        assert old in code, f"README.md:{line} no longer contains {old!r}: update BLOCKS[{key!r}]"
        code = code.replace(old, new.format(**{k: str(v) for k, v in paths.items()}))
    for old, new in CPU:
        code = code.replace(old, new)
    if spec.continues is not None:
        assert spec.continues in _namespaces, f"{key} continues {spec.continues!r}, which has not run"
        namespace = _namespaces[spec.continues]
    else:
        namespace = {"__name__": "__readme__"}
    monkeypatch.chdir(workdir)
    exec(compile(code, f"README.md:{line} ({key})", "exec"), namespace)
    _namespaces[key] = namespace
    missing = [name for name in spec.expect if name not in namespace]
    assert not missing, missing
