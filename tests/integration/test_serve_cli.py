"""`internvl serve MODEL_DIR`: the real command in a subprocess on a saved tiny chat checkpoint, and the
checkpoint-kind dispatch (chat vs C/G) and argument errors in-process."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from internvl.cli.main import main
from internvl.inference.loading import save_chat_model
from tests.integration.serve_support import (
    data_url,
    free_port,
    httpx,
    running_server,
    tiny_chat_pipeline,
    tiny_embedder,
)

openai = pytest.importorskip("openai")
pytestmark = pytest.mark.integration
SRC = Path(__file__).resolve().parents[2] / "src"


@pytest.fixture(scope="module")
def chat_dir(tmp_path_factory):
    pipe = tiny_chat_pipeline(tmp_path_factory.mktemp("tok"))
    out = tmp_path_factory.mktemp("tiny_chat")
    save_chat_model(pipe.model, pipe.tokenizer, out)
    return out


@pytest.mark.slow
def test_serve_command_answers_with_the_openai_client(chat_dir, tmp_path):
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
        "INTERNVL_API_KEY": "from-env",
    }
    log = open(tmp_path / "server.log", "w")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "internvl.cli.main",
            "serve",
            str(chat_dir),
            "--port",
            str(port),
            "--model-name",
            "tiny",
            "--max-images",
            "1",
            "--max-tokens",
            "32",
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, (tmp_path / "server.log").read_text()
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the server did not come up"
            time.sleep(0.25)
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="from-env", max_retries=0)
        msg = [
            {
                "role": "user",
                "content": [{"type": "text", "text": "hi"}, {"type": "image_url", "image_url": {"url": data_url(0)}}],
            }
        ]
        r = client.chat.completions.create(model="tiny", messages=msg, max_tokens=5, temperature=0)
        assert r.usage.completion_tokens == 5 and r.choices[0].finish_reason == "length"
        with pytest.raises(openai.BadRequestError, match="at most 1 per request"):
            client.chat.completions.create(model="tiny", messages=[{**msg[0], "content": msg[0]["content"] * 2}])
        with pytest.raises(openai.BadRequestError, match="limit of 32"):
            client.chat.completions.create(model="tiny", messages=msg, max_tokens=33)
        assert httpx.get(f"http://127.0.0.1:{port}/v1/models").status_code == 401
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()


def test_build_server_app_dispatches_on_the_checkpoint_kind(chat_dir, tmp_path):
    from internvl.cli.serve import build_server_app

    root = tmp_path / "cg"
    root.mkdir()
    embedder = tiny_embedder(root)
    embedder.model.save_pretrained(root)
    cg = build_server_app(root, mode="InternVL-G")
    assert cg.state.settings.model_name == "cg" and cg.state.worker.embedder.mode == "InternVL-G"
    chat = build_server_app(chat_dir, model_name="c", api_key="k")
    assert chat.state.worker.pipeline is not None and chat.state.settings.api_key == "k"
    with running_server(cg) as url:
        r = openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0).embeddings.create(model="cg", input="a")
        assert len(r.data[0].embedding) == embedder.dim
    chat.state.worker.close()


def test_serve_argument_errors_exit_2(tmp_path, capsys):
    assert main(["serve", str(tmp_path / "missing")]) == 2
    assert "missing" in capsys.readouterr().err
    assert main(["serve", str(tmp_path), "--mode", "InternVL-X"]) == 2
    err = capsys.readouterr().err
    assert "--mode" in err and "'InternVL-X'" in err and "InternVL-C, InternVL-G" in err
