"""A bounded loopback load test: 100 concurrent chat requests through the real server all succeed, are
answered in batches (the same answers as one by one), memory stays bounded and throughput beats
sequential requests."""

from __future__ import annotations

import pytest

from tests.integration.serve_support import httpx, load_run, running_server, tiny_chat_pipeline

openai = pytest.importorskip("openai")
psutil = pytest.importorskip("psutil")
from internvl.serving.app import ServeSettings, create_app  # noqa: E402

pytestmark = pytest.mark.integration


def _histogram(text: str, name: str) -> tuple[float, float]:
    total = sum(float(ln.split()[-1]) for ln in text.splitlines() if ln.startswith(f"{name}_sum"))
    count = sum(float(ln.split()[-1]) for ln in text.splitlines() if ln.startswith(f"{name}_count"))
    return total, count


def test_100_concurrent_requests_all_succeed_in_batches(tmp_path):
    pipe = tiny_chat_pipeline(tmp_path)
    app = create_app(pipe, ServeSettings(model_name="m", max_queue=128, max_batch_size=16))
    proc = psutil.Process()
    with running_server(app) as url:
        load_run(url, "m", 4, concurrent=True)  # warm-up
        rss0 = proc.memory_info().rss
        sequential = load_run(url, "m", 20, concurrent=False)
        burst = load_run(url, "m", 100, concurrent=True)
        rss1 = proc.memory_info().rss
        metrics = httpx.get(url + "/metrics").text
    assert len(burst["answers"]) == 100 and burst["tokens"] == 100 * 16
    # Batched answers equal the one-by-one answers of the same greedy requests.
    assert burst["answers"][:20] == sequential["answers"]
    size_sum, batches = _histogram(metrics, "internvl_batch_size")
    assert size_sum / batches > 2, f"mean batch size {size_sum / batches:.2f}: requests were not batched"
    assert rss1 - rss0 < 400 * 2**20, f"memory grew by {(rss1 - rss0) / 2**20:.0f} MiB over 120 requests"
    rate_burst = 100 / burst["wall"]
    rate_seq = 20 / sequential["wall"]
    assert rate_burst > 1.5 * rate_seq, f"batched {rate_burst:.1f} req/s vs sequential {rate_seq:.1f} req/s"
