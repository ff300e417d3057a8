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

try:  # the HTTP client the installed openai uses (openai >= 3 ships httpx2, older releases httpx)
    import httpx2 as httpx
except ImportError:  # pragma: no cover - depends on the openai release
    import httpx  # noqa: F401

from internvl.data.synthetic import build_chat_tokenizer, build_tokenizer, synthetic_image
from internvl.inference.loading import load_tokenizer
from internvl.inference.pipeline import ChatPipeline
from internvl.models.internvl_chat import build_internvl_chat, tiny_chat_config

SYSTEM = "Answer the questions."


def tiny_chat_pipeline(tok_dir: Path) -> ChatPipeline:
    """A random tiny InternVL-Chat with a real SentencePiece tokenizer (as test_pipeline.py builds it).

    Its generation config suppresses the byte-fallback and special tokens, so answers are readable word
    pieces instead of U+FFFD runs (a real generation-config setting, applied by transformers' generate).
    """
    build_chat_tokenizer(tok_dir)
    tokenizer = load_tokenizer(tok_dir)
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    model = build_internvl_chat(tiny_chat_config(len(tokenizer), system_message=SYSTEM, eos_token_id=im_end), seed=0)
    junk = [
        i
        for tok, i in tokenizer.get_vocab().items()
        if (tok.startswith("<") and tok.endswith(">") and i != im_end) or not tok.strip("▁")
    ]
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
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", timeout_graceful_shutdown=5)
    )
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


def load_run(
    base_url: str,
    model: str,
    n: int,
    *,
    concurrent: bool,
    max_tokens: int = 16,
    with_image: bool = True,
    api_key: str = "none",
) -> dict:
    """Send ``n`` greedy chat requests (all at once, or one after another) with the async openai client.

    Returns wall seconds, per-request latencies (sorted), completion tokens and the answers, in order.
    """
    import asyncio

    import openai

    async def run() -> dict:
        client = openai.AsyncOpenAI(base_url=base_url + "/v1", api_key=api_key, max_retries=0, timeout=600)
        image = data_url(0) if with_image else None

        async def one(i: int):
            parts = [{"type": "text", "text": f"question number {i}: what is shown?"}]
            if image:
                parts.append({"type": "image_url", "image_url": {"url": image}})
            t0 = time.perf_counter()
            r = await client.chat.completions.create(
                model=model, messages=[{"role": "user", "content": parts}], max_tokens=max_tokens, temperature=0
            )
            return time.perf_counter() - t0, r

        start = time.perf_counter()
        if concurrent:
            results = await asyncio.gather(*(one(i) for i in range(n)))
        else:
            results = [await one(i) for i in range(n)]
        wall = time.perf_counter() - start
        await client.close()
        return {
            "wall": wall,
            "latencies": sorted(t for t, _ in results),
            "tokens": sum(r.usage.completion_tokens for _, r in results),
            "answers": [r.choices[0].message.content for _, r in results],
        }

    return asyncio.run(run())


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    k = max(0, min(len(sorted_values) - 1, round(q / 100 * len(sorted_values)) - 1))
    return sorted_values[k]
