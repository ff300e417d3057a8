"""Shared set-up of the serving tests: tiny real models and a real uvicorn server on a loopback port."""

from __future__ import annotations

import base64
import contextlib
import io
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from PIL import Image

from internvl.data.synthetic import CHAT_SPECIAL_TOKENS, build_tokenizer, synthetic_image
from internvl.inference.loading import load_tokenizer
from internvl.inference.pipeline import ChatPipeline
from internvl.models.internvl_chat import build_internvl_chat, tiny_chat_config

SYSTEM = "Answer the questions."


def tiny_chat_pipeline(tok_dir: Path) -> ChatPipeline:
    """A random tiny InternVL-Chat with a real SentencePiece tokenizer (as test_pipeline.py builds it).

    Its generation config suppresses the byte-fallback and special tokens, so answers are readable word
    pieces instead of U+FFFD runs (a real generation-config setting, applied by transformers' generate).
    """
    build_tokenizer(tok_dir, special_tokens=CHAT_SPECIAL_TOKENS, chat_template_tokens=["<|im_start|>", "<|im_end|>"],
                    add_bos_token=False)
    tokenizer = load_tokenizer(tok_dir)
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    model = build_internvl_chat(tiny_chat_config(len(tokenizer), system_message=SYSTEM, eos_token_id=im_end), seed=0)
    junk = [i for tok, i in tokenizer.get_vocab().items()
            if (tok.startswith("<") and tok.endswith(">") and i != im_end) or not tok.strip("▁")]
    model.generation_config.suppress_tokens = sorted(junk)
    return ChatPipeline(model, tokenizer)


def tiny_embedder(root: Path):
    """A random tiny InternVL-C/G with its text tokenizer, wrapped for the server."""
    from internvl.data.tokenization import InternVLTextTokenizer
    from internvl.models.internvl_cg import build_internvl, internvl_cg_tiny
    from internvl.serving.worker import Embedder

    build_tokenizer(root)
    tokenizer = InternVLTextTokenizer.from_pretrained(root)
    model = build_internvl(internvl_cg_tiny(vocab_size=len(tokenizer.tokenizer)), seed=0).eval()
    return Embedder(model, tokenizer)


def data_url(image: Image.Image | int, fmt: str = "PNG") -> str:
    if isinstance(image, int):
        image = synthetic_image(image)
    buf = io.BytesIO()
    image.save(buf, fmt)
    return f"data:image/{fmt.lower()};base64," + base64.b64encode(buf.getvalue()).decode()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running_server(app, port: int | None = None) -> Iterator[str]:
    """Serve ``app`` with uvicorn in a thread on 127.0.0.1; yields the base URL and stops the server after."""
    import uvicorn

    port = port or free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                           timeout_graceful_shutdown=5))
    thread = threading.Thread(target=server.run, name="uvicorn-test", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(15)
