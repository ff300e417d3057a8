"""Serving throughput and latency: N concurrent chat requests (batched by the model worker) vs the same N
requests sent one after another, through the real server (uvicorn on 127.0.0.1) and the openai client.

The model is the tiny random InternVL-Chat of the serving tests (real SentencePiece tokenizer, one image
per request, greedy decoding); only the ratios carry over to real checkpoints. Loopback only, bounded.
Run: ``python benchmarks/serve_load.py [--requests 64 --max-tokens 32 --batch 16 --threads 1]``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the tests' tiny-model and load helpers

from tests.integration.serve_support import load_run, percentile, running_server, tiny_chat_pipeline  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--batch", type=int, default=16, help="--max-batch-size of the server")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from internvl.serving.app import ServeSettings, create_app

    with tempfile.TemporaryDirectory() as tmp:
        pipe = tiny_chat_pipeline(Path(tmp))
        app = create_app(
            pipe, ServeSettings(model_name="m", max_queue=max(64, 2 * args.requests), max_batch_size=args.batch)
        )
        with running_server(app) as url:
            load_run(url, "m", 4, concurrent=True, max_tokens=args.max_tokens)  # warm-up
            seq = load_run(url, "m", args.requests, concurrent=False, max_tokens=args.max_tokens)
            con = load_run(url, "m", args.requests, concurrent=True, max_tokens=args.max_tokens)
    assert seq["answers"] == con["answers"], "batched answers differ from sequential ones"
    rows = {}
    for name, r in (("sequential", seq), ("concurrent", con)):
        rows[name] = (
            args.requests / r["wall"],
            r["tokens"] / r["wall"],
            percentile(r["latencies"], 50),
            percentile(r["latencies"], 95),
        )
        print(
            f"{name:>10}: {rows[name][0]:7.2f} req/s  {rows[name][1]:8.1f} tok/s  "
            f"p50 {rows[name][2] * 1000:7.1f} ms  p95 {rows[name][3] * 1000:7.1f} ms"
        )
    s, c = rows["sequential"], rows["concurrent"]
    print(
        f"concurrent / sequential: throughput x{c[0] / s[0]:.2f}, p50 latency x{c[2] / s[2]:.2f}, "
        f"p95 latency x{c[3] / s[3]:.2f}  ({args.requests} requests, {args.max_tokens} tokens each, "
        f"max batch {args.batch})"
    )


if __name__ == "__main__":
    main()
