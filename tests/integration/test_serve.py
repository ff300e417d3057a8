"""The OpenAI-compatible server, started for real (uvicorn on a loopback port) and driven with the official
`openai` client: chat with images (streamed and not), multi-turn, stop sequences, embeddings, every error
path, queueing (429), timeouts, disconnects and the Prometheus metrics.

Answers are checked against the pipeline called directly with the equivalent `ChatRequest`, embeddings
against `embed_texts` / `embed_images`: the server must add nothing and lose nothing.
"""

from __future__ import annotations

import base64
import http.server
import io
import threading
import time

import numpy as np
import pytest
import torch
from PIL import Image

from internvl.core.compat import supports_cache_continuation
from internvl.data.synthetic import synthetic_image
from internvl.data.transforms import build_transform
from internvl.inference.embedding import embed_images, embed_texts
from internvl.inference.requests import ChatRequest, GenerationOptions
from tests.integration.serve_support import SYSTEM, data_url, httpx, running_server, tiny_chat_pipeline, tiny_embedder

openai = pytest.importorskip("openai")
from internvl.serving.app import ServeSettings, create_app  # noqa: E402
from internvl.serving.schemas import Limits  # noqa: E402

pytestmark = pytest.mark.integration
KEY = "test-key"
LIMITS = Limits(
    max_body_bytes=400_000,
    max_image_bytes=100_000,
    max_image_pixels=160 * 160,
    max_images=3,
    max_messages=12,
    max_tokens=64,
    default_max_tokens=16,
)


def greedy(n: int) -> GenerationOptions:
    return GenerationOptions(max_new_tokens=n, do_sample=False)


@pytest.fixture(scope="module")
def pipe(tmp_path_factory):
    return tiny_chat_pipeline(tmp_path_factory.mktemp("tok"))


@pytest.fixture(scope="module")
def server(pipe):
    app = create_app(pipe, ServeSettings(model_name="tiny-chat", api_key=KEY, limits=LIMITS))
    with running_server(app) as url:
        yield url


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server + "/v1", api_key=KEY, max_retries=0, timeout=60)


def user(text: str, *images) -> dict:
    parts = [{"type": "text", "text": text}]
    parts += [{"type": "image_url", "image_url": {"url": im if isinstance(im, str) else data_url(im)}} for im in images]
    return {"role": "user", "content": parts}


def stream_text(client, **kw) -> tuple[str, list]:
    chunks = list(client.chat.completions.create(stream=True, **kw))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    return text, chunks


def assert_healthy(server: str, client) -> None:
    assert httpx.get(server + "/health").json()["status"] == "ok"
    r = client.chat.completions.create(model="tiny-chat", messages=[user("still there?")], max_tokens=3, temperature=0)
    assert r.choices[0].finish_reason in ("stop", "length") and r.usage.completion_tokens >= 1


# -- chat -------------------------------------------------------------------------------------------
def test_chat_with_an_image_streamed_and_not_equals_the_pipeline(client, pipe):
    image = synthetic_image(1)
    kw = dict(model="tiny-chat", messages=[user("what is in the image?", image)], max_tokens=12, temperature=0)
    r = client.chat.completions.create(**kw)
    expected = pipe.answer(ChatRequest("what is in the image?", images=(image,), options=greedy(12)))
    assert r.choices[0].message.content == expected.text and expected.text
    assert r.choices[0].finish_reason == expected.finish_reason == "length"
    assert (r.usage.prompt_tokens, r.usage.completion_tokens) == (expected.prompt_tokens, 12)
    assert r.usage.total_tokens == expected.prompt_tokens + 12 and r.model == "tiny-chat"

    text, chunks = stream_text(client, **kw, stream_options={"include_usage": True})
    assert text == expected.text
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) >= 2  # really streamed in pieces
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 12
    assert len({c.id for c in chunks}) == 1


def test_multi_turn_with_system_message_and_several_images(client, pipe):
    a, b = synthetic_image(2), synthetic_image(3)
    first = pipe.answer(ChatRequest("compare them", images=(a, b), options=greedy(8)))
    messages = [
        {"role": "system", "content": "Be brief."},
        user("compare them", a, b),
        {"role": "assistant", "content": first.text},
        {"role": "user", "content": "and the colours?"},
    ]
    r = client.chat.completions.create(model="tiny-chat", messages=messages, max_completion_tokens=10, temperature=0)
    expected = pipe.answer(
        ChatRequest(
            "and the colours?", images=(a, b), history=first.history, system_message="Be brief.", options=greedy(10)
        )
    )
    assert first.history[0][0] == "Image-1: <image>\nImage-2: <image>\ncompare them"
    assert r.choices[0].message.content == expected.text
    assert r.usage.prompt_tokens == expected.prompt_tokens
    # The default system message is the checkpoint's; a different one changes the prompt.
    assert pipe.prompt(ChatRequest("x")).count(SYSTEM) == 1
    assert stream_text(client, model="tiny-chat", messages=messages, max_tokens=10, temperature=0)[0] == expected.text


@pytest.mark.skipif(not supports_cache_continuation(), reason="cache continuation needs a newer transformers")
def test_a_conversation_continued_turn_by_turn_reuses_the_worker_session(pipe):
    """Each request resends the whole conversation; the worker's session prefills only the new turn."""
    app = create_app(pipe, ServeSettings(model_name="tiny-chat", api_key=KEY, limits=LIMITS))
    image = synthetic_image(4)
    with running_server(app) as url:
        api = openai.OpenAI(base_url=url + "/v1", api_key=KEY, max_retries=0, timeout=60)
        messages, history = [user("what is in the image?", image)], None
        for turn, question in enumerate(["what is in the image?", "and the colour?", "anything else?", "sure?"]):
            if turn:
                messages.append({"role": "user", "content": question})
            stream = turn == 3
            kw = dict(model="tiny-chat", messages=messages, max_tokens=8, temperature=0)
            text = stream_text(api, **kw)[0] if stream else api.chat.completions.create(**kw).choices[0].message.content
            expected = pipe.answer(ChatRequest(question, images=(image,), history=history, options=greedy(8)))
            assert text == expected.text, turn
            session = app.state.worker.session
            # turn 0 has no history (answered in a batch, from scratch); turn 1 fills the session
            if turn == 1:
                assert (session.last.reused_tokens, session.last.encoded_images) == (0, 1)
            elif turn > 1:
                assert session.last.reused_tokens > session.last.prefilled_tokens and session.last.encoded_images == 0
            history = expected.history
            messages.append({"role": "assistant", "content": expected.text})


def test_stop_sequences_cut_streamed_and_plain_answers_alike(client):
    kw = dict(model="tiny-chat", messages=[user("tell me")], max_tokens=24, temperature=0)
    full = client.chat.completions.create(**kw).choices[0].message.content
    stop = full[5:7]
    cut = full[: full.index(stop)]
    r = client.chat.completions.create(**kw, stop=[stop, "never-appears"])
    assert (r.choices[0].message.content, r.choices[0].finish_reason) == (cut, "stop")
    text, chunks = stream_text(client, **kw, stop=stop)
    assert text == cut and [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"


def test_image_url_as_a_plain_string_is_accepted(client):
    parts = [{"type": "text", "text": "what?"}, {"type": "image_url", "image_url": data_url(1)}]
    r = client.chat.completions.create(
        model="tiny-chat", messages=[{"role": "user", "content": parts}], max_tokens=4, temperature=0
    )
    same = client.chat.completions.create(model="tiny-chat", messages=[user("what?", 1)], max_tokens=4, temperature=0)
    assert r.choices[0].message.content == same.choices[0].message.content


def test_one_failing_request_in_a_batch_fails_only_itself(pipe, tmp_path):
    import asyncio

    from internvl.serving.worker import Job, ModelWorker

    async def run():
        loop = asyncio.get_running_loop()
        worker = ModelWorker(pipe, max_batch_size=8)
        try:
            options = greedy(4)
            # Queued while the worker is busy with a first job, so the three form one batch.
            first = worker.submit(Job("chat", ChatRequest("busy", options=greedy(40)), loop, 60))
            jobs = [
                worker.submit(Job("chat", ChatRequest(q, images=im, options=options), loop, 60))
                for q, im in (("a", ()), ("b", (str(tmp_path / "missing.png"),)), ("c", ()))
            ]
            await first.future
            results = await asyncio.gather(*(j.future for j in jobs), return_exceptions=True)
        finally:
            worker.close()
        return results

    good_a, bad, good_c = asyncio.run(run())
    assert good_a.text == pipe.answer(ChatRequest("a", options=greedy(4))).text
    assert good_c.text == pipe.answer(ChatRequest("c", options=greedy(4))).text
    assert "missing.png" in str(bad) and bad.status == 400  # the client's fault, not a 500


def test_a_cancelled_row_stops_without_disturbing_its_batch(pipe):
    import asyncio

    from internvl.serving.worker import Job, ModelWorker

    async def run():
        loop = asyncio.get_running_loop()
        worker = ModelWorker(pipe, max_batch_size=8)
        try:
            first = worker.submit(Job("chat", ChatRequest("busy", options=greedy(30)), loop, 60))
            jobs = [worker.submit(Job("chat", ChatRequest(q, options=greedy(300)), loop, 60)) for q in "abc"]
            await first.future
            while worker.busy != 3:
                await asyncio.sleep(0.001)
            worker.discard(jobs[1])  # its client went away mid-generation
            done = await asyncio.gather(jobs[0].future, jobs[2].future)
            return done, jobs[1].future.done()
        finally:
            worker.close()

    (a, c), cancelled_resolved = asyncio.run(run())
    assert not cancelled_resolved
    assert (a.completion_tokens, c.completion_tokens) == (300, 300)
    assert a.text == pipe.answer(ChatRequest("a", options=greedy(300))).text


def test_shutdown_stops_a_running_generation(pipe):
    import asyncio

    from internvl.serving.schemas import ServeError
    from internvl.serving.worker import Job, ModelWorker

    async def run():
        worker = ModelWorker(pipe)
        job = worker.submit(Job("chat", ChatRequest("go on", options=greedy(50_000)), asyncio.get_running_loop(), 600))
        while worker.busy != 1:
            await asyncio.sleep(0.001)
        start = time.monotonic()
        worker.close()
        closed_in = time.monotonic() - start
        with pytest.raises(ServeError, match="shutting down"):
            await job.future
        return closed_in, worker.alive

    closed_in, alive = asyncio.run(run())
    assert closed_in < 5 and not alive


def test_seeded_sampling_is_reproducible(client):
    kw = dict(model="tiny-chat", messages=[user("sample")], max_tokens=12, temperature=1.5, top_p=0.95)
    one = client.chat.completions.create(**kw, seed=7).choices[0].message.content
    assert client.chat.completions.create(**kw, seed=7).choices[0].message.content == one
    others = {client.chat.completions.create(**kw, seed=s).choices[0].message.content for s in (8, 9, 10)}
    assert others != {one}


def test_models_health_and_metrics(server, client):
    assert [m.id for m in client.models.list().data] == ["tiny-chat"]
    assert client.models.retrieve("tiny-chat").id == "tiny-chat"
    health = httpx.get(server + "/health")  # no key needed
    assert health.status_code == 200 and health.json()["kind"] == "chat"
    client.chat.completions.create(model="tiny-chat", messages=[user("count me")], max_tokens=4, temperature=0)
    text = httpx.get(server + "/metrics", headers={"Authorization": f"Bearer {KEY}"}).text
    assert 'internvl_requests_total{route="/v1/chat/completions",status="200"}' in text
    assert "internvl_queue_depth 0.0" in text
    assert 'internvl_request_latency_seconds_bucket{le="+Inf",route="/v1/chat/completions"}' in text
    tokens = float(next(ln.split()[-1] for ln in text.splitlines() if ln.startswith("internvl_generated_tokens_total")))
    assert tokens >= 4
    assert "internvl_tokens_per_second" in text and "internvl_batch_size_bucket" in text


# -- every error path: a 4xx with a clear message, and the server healthy afterwards ----------------
def _bytes_url(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64," + base64.b64encode(data).decode()


def _noise(size: int) -> Image.Image:
    return Image.fromarray(np.random.default_rng(0).integers(0, 255, (size, size, 3), dtype=np.uint8))


ERRORS = [
    ("not base64", dict(messages=[user("x", "data:image/png;base64,@@@not-base64@@@")]), 400, "not valid base64"),
    ("not an image", dict(messages=[user("x", _bytes_url(b"hello, I am text"))]), 400, "not a decodable image"),
    (
        "truncated png",
        dict(messages=[user("x", _bytes_url(base64.b64decode(data_url(1).split(",")[1])[:60]))]),
        400,
        "corrupt or truncated",
    ),
    ("image bytes", dict(messages=[user("x", data_url(_noise(200)))]), 413, "exceeds the image limit"),
    (
        "image pixels (bomb)",
        dict(messages=[user("x", data_url(Image.new("RGB", (4000, 4000))))]),
        413,
        "pixels exceeds the limit",
    ),
    ("too many images", dict(messages=[user("x", 1, 2, 3, 4)]), 400, "at most 3 per request"),
    (
        "too many messages",
        dict(messages=[user("x"), {"role": "assistant", "content": "y"}] * 6 + [user("z")]),
        400,
        "at most 12",
    ),
    ("max_tokens", dict(messages=[user("x")], max_tokens=65), 400, "exceeds this server's limit of 64"),
    ("n", dict(messages=[user("x")], n=2), 400, "n=1"),
    ("unknown model", dict(model="gpt-4o", messages=[user("x")]), 404, "does not exist"),
    ("http fetch", dict(messages=[user("x", "http://127.0.0.1:9/cat.png")]), 400, "--allow-fetch-host"),
    ("file url", dict(messages=[user("x", "file:///etc/passwd")]), 400, "not a data URL"),
    ("not an image type", dict(messages=[user("x", "data:text/plain;base64,aGk=")]), 400, "expected an image"),
    (
        "assistant last",
        dict(messages=[user("x"), {"role": "assistant", "content": "y"}]),
        400,
        "must end with a user message",
    ),
    (
        "late system",
        dict(messages=[user("x"), {"role": "system", "content": "s"}, user("y")]),
        400,
        "system message must come before",
    ),
    ("bad role", dict(messages=[{"role": "robot", "content": "x"}]), 400, "messages.0.role"),
    ("temperature", dict(messages=[user("x")], temperature=3), 400, "temperature"),
    (
        "part type",
        dict(messages=[{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}]),
        400,
        "part type 'input_audio' is not supported",
    ),
    ("content type", dict(messages=[{"role": "user", "content": 5}]), 400, "content must be a string"),
    (
        "tools",
        dict(messages=[user("x")], tools=[{"type": "function", "function": {"name": "f"}}]),
        400,
        "tools is not supported",
    ),
]


@pytest.mark.parametrize("name,kwargs,status,message", ERRORS, ids=[e[0] for e in ERRORS])
def test_error_paths_are_4xx_with_a_clear_message(server, client, name, kwargs, status, message):
    with pytest.raises(openai.APIStatusError) as info:
        client.chat.completions.create(**{"model": "tiny-chat", "max_tokens": 4, **kwargs})
    e = info.value
    assert e.status_code == status, e.message
    assert message in e.message
    assert e.body["type"] in ("invalid_request_error",) and "message" in e.body
    assert_healthy(server, client)


def test_api_key_missing_or_wrong_and_raw_http_errors(server, client):
    for key in (None, "wrong"):
        headers = {} if key is None else {"Authorization": f"Bearer {key}"}
        for path in ("/v1/models", "/metrics"):
            r = httpx.get(server + path, headers=headers)
            assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
        assert ("Missing API key" if key is None else "Incorrect API key") in r.json()["error"]["message"]
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=server + "/v1", api_key="wrong", max_retries=0).models.list()
    auth = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    cases = [
        (b'{"model": "tiny-chat", "messages": [', 400, "not valid JSON"),
        (b"[1, 2]", 400, "must be a JSON object"),
        (b'{"model": "tiny-chat", "messages": [{"role": "user", "content": "\\ud800"}]}', 400, "invalid Unicode"),
        (b'{"model": "tiny-chat"}', 400, "messages: Field required"),
        (
            b'{"model": "tiny-chat", "messages": [{"role": "user", "content": "x"}], "pad": "' + b"x" * 500_000 + b'"}',
            413,
            "exceeds the limit of 400000 bytes",
        ),
    ]
    for body, status, message in cases:
        r = httpx.post(server + "/v1/chat/completions", content=body, headers=auth)
        assert r.status_code == status and message in r.json()["error"]["message"], r.text
    r = httpx.post(server + "/v1/embeddings", json={"model": "tiny-chat", "input": "x"}, headers=auth)
    assert r.status_code == 400 and "needs an InternVL-C/G checkpoint" in r.json()["error"]["message"]
    r = httpx.get(server + "/v1/nothing", headers=auth)
    assert r.status_code == 404 and "no route" in r.json()["error"]["message"]
    metrics = httpx.get(server + "/metrics", headers=auth).text
    assert 'internvl_errors_total{route="/v1/models",status="401"} 3.0' in metrics
    assert 'internvl_errors_total{route="/v1/chat/completions",status="413"}' in metrics
    assert_healthy(server, client)


# -- queueing, timeouts, disconnects ----------------------------------------------------------------------
def _metric(server: str, name: str) -> float:
    text = httpx.get(server + "/metrics").text
    return sum(float(ln.split()[-1]) for ln in text.splitlines() if ln.split("{")[0].split()[0] == name)


def test_queue_full_is_429_with_retry_after_and_disconnects_free_the_worker(pipe):
    settings = ServeSettings(model_name="m", max_queue=1, limits=Limits(max_tokens=100_000))
    with running_server(create_app(pipe, settings)) as url:
        client = openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0, timeout=60)
        long = dict(model="m", messages=[user("go on")], max_tokens=50_000, temperature=0)
        running = client.chat.completions.create(stream=True, **long)
        next(iter(running))  # the worker is now generating for a long time
        queued_result: list = []
        waiter = threading.Thread(
            target=lambda: queued_result.append(
                client.chat.completions.create(model="m", messages=[user("wait")], max_tokens=3, temperature=0)
            )
        )
        waiter.start()
        deadline = time.monotonic() + 10
        while httpx.get(url + "/health").json()["queue_depth"] < 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        with pytest.raises(openai.RateLimitError) as info:
            client.chat.completions.create(model="m", messages=[user("no room")], max_tokens=3)
        assert int(info.value.response.headers["retry-after"]) >= 1 and "queue is full" in info.value.message
        start = time.monotonic()
        running.close()  # the client disconnects: its generation is cancelled and the queued request runs
        waiter.join(30)
        assert queued_result and queued_result[0].usage.completion_tokens == 3
        assert time.monotonic() - start < 10  # 50k tokens would take minutes
        assert _metric(url, "internvl_cancelled_total") == 1
        # A disconnected non-streamed request is cancelled as well.
        with pytest.raises(openai.APITimeoutError):
            impatient = openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0, timeout=1)
            impatient.chat.completions.create(**long)
        deadline = time.monotonic() + 10
        while _metric(url, "internvl_cancelled_total") < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _metric(url, "internvl_cancelled_total") == 2
        r = client.chat.completions.create(model="m", messages=[user("free?")], max_tokens=2, temperature=0)
        assert r.usage.completion_tokens == 2


def test_request_timeout_is_504_and_the_worker_moves_on(pipe):
    settings = ServeSettings(model_name="m", request_timeout=1.0, limits=Limits(max_tokens=100_000))
    with running_server(create_app(pipe, settings)) as url:
        client = openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0, timeout=60)
        start = time.monotonic()
        with pytest.raises(openai.APIStatusError) as info:
            client.chat.completions.create(model="m", messages=[user("go on")], max_tokens=50_000, temperature=0)
        assert info.value.status_code == 504 and "within 1 s" in info.value.message
        assert time.monotonic() - start < 8
        # Mid-stream, the deadline ends the stream with an OpenAI error event (the client raises it).
        stream = client.chat.completions.create(
            model="m", messages=[user("go on")], max_tokens=50_000, temperature=0, stream=True
        )
        received = []
        with pytest.raises(openai.APIError, match="within 1 s"):
            for chunk in stream:
                received.append(chunk.choices[0].delta.content or "")
        assert "".join(received)  # text had streamed before the deadline
        r = client.chat.completions.create(model="m", messages=[user("next")], max_tokens=2, temperature=0)
        assert r.usage.completion_tokens == 2


def test_http_images_only_from_allowed_hosts(pipe, tmp_path):
    png = base64.b64decode(data_url(4).split(",")[1])

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's name)
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.end_headers()
            self.wfile.write(png)

        def log_message(self, *args):
            pass

    images = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=images.serve_forever, daemon=True).start()
    try:
        image_url = f"http://127.0.0.1:{images.server_address[1]}/cat.png"
        settings = ServeSettings(model_name="m", limits=Limits(allow_fetch_hosts=("127.0.0.1",)))
        with running_server(create_app(pipe, settings)) as url:
            client = openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0, timeout=60)
            kw = dict(model="m", max_tokens=6, temperature=0)
            fetched = client.chat.completions.create(messages=[user("what?", image_url)], **kw)
            inline = client.chat.completions.create(messages=[user("what?", data_url(4))], **kw)
            assert fetched.choices[0].message.content == inline.choices[0].message.content
            with pytest.raises(openai.BadRequestError, match="--allow-fetch-host localhost"):
                client.chat.completions.create(
                    messages=[user("what?", image_url.replace("127.0.0.1", "localhost"))], **kw
                )
    finally:
        images.shutdown()


# -- embeddings ----------------------------------------------------------------------------------------------
def test_embeddings_texts_and_images_in_both_modes(tmp_path):
    embedder = tiny_embedder(tmp_path)
    with running_server(create_app(embedder, ServeSettings(model_name="tiny-cg", api_key=KEY))) as url:
        client = openai.OpenAI(base_url=url + "/v1", api_key=KEY, max_retries=0, timeout=60)
        texts = ["a red square", "两只猫"]
        r = client.embeddings.create(model="tiny-cg", input=texts)  # the client asks for base64 by default
        got = torch.tensor([d.embedding for d in r.data])
        expected = embed_texts(embedder.model, embedder.tokenizer, texts)
        torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(got.norm(dim=-1), torch.ones(2), atol=1e-5, rtol=0)
        assert r.usage.prompt_tokens == int((embedder.tokenizer(texts) > 0).sum())
        floats = client.embeddings.create(model="tiny-cg", input="a red square", encoding_format="float")
        assert np.allclose(floats.data[0].embedding, expected[0].numpy(), atol=1e-6)

        images = [synthetic_image(5), synthetic_image(6, size=48)]
        mixed = [
            {"type": "image_url", "image_url": {"url": data_url(images[0])}},
            "a red square",
            {"type": "image_url", "image_url": {"url": data_url(images[1])}},
        ]
        transform = build_transform("retrieval", embedder.model.image_size)
        by_mode = {}
        for mode in ("InternVL-C", "InternVL-G"):
            r = client.embeddings.create(model="tiny-cg", input=mixed, extra_body={"mode": mode})
            got = torch.tensor([d.embedding for d in r.data])
            assert [d.index for d in r.data] == [0, 1, 2]
            ref = embed_images(embedder.model, images, transform, mode=mode)
            torch.testing.assert_close(got[[0, 2]], ref, atol=1e-6, rtol=1e-6)
            torch.testing.assert_close(got[1], expected[0], atol=1e-6, rtol=1e-6)
            by_mode[mode] = got[0]
        assert not torch.allclose(by_mode["InternVL-C"], by_mode["InternVL-G"])
        for spelling, mode in (("internvl-g", "InternVL-G"), ("c", "InternVL-C")):  # any case, as the CLI's --mode
            r = client.embeddings.create(model="tiny-cg", input=mixed[:1], extra_body={"mode": spelling})
            torch.testing.assert_close(torch.tensor(r.data[0].embedding), by_mode[mode], atol=1e-6, rtol=1e-6)

        for kwargs, message in [
            (
                dict(input=[{"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]),
                "not a decodable",
            ),
            (dict(input=["ok", ""]), "input[1] is an empty string"),
            (dict(input="x", extra_body={"mode": "InternVL-X"}), "mode"),
            (dict(input="x", dimensions=8), "dimensions is not supported"),
            (dict(input=[[1, 2, 3]]), "input[0]: token-id inputs are not supported"),
        ]:
            with pytest.raises(openai.BadRequestError) as info:
                client.embeddings.create(model="tiny-cg", **kwargs)
            assert message in info.value.message
        with pytest.raises(openai.BadRequestError, match="serves /v1/embeddings"):
            client.chat.completions.create(model="tiny-cg", messages=[user("x")])
        assert httpx.get(url + "/health").json()["kind"] == "embeddings"


def test_queued_embedding_requests_share_one_model_call(tmp_path):
    import asyncio

    from internvl.serving.worker import Job, ModelWorker

    embedder = tiny_embedder(tmp_path)
    images = [synthetic_image(8), synthetic_image(9)]
    inputs = [
        (["a cat", images[0]], "InternVL-G"),
        (["two dogs"], "InternVL-G"),
        ([images[1], "x"], "InternVL-G"),
        (["a cat"], "InternVL-C"),
    ]
    calls: list[tuple[str, int]] = []

    async def run():
        loop = asyncio.get_running_loop()
        worker = ModelWorker(embedder=embedder, on_batch=lambda kind, size, s, t: calls.append((kind, size)))
        try:
            first = worker.submit(Job("embed", ([images[0]] * 8, "InternVL-C"), loop, 60))
            while worker.busy != 1:  # the others queue while it runs
                await asyncio.sleep(0.001)
            jobs = [worker.submit(Job("embed", payload, loop, 60)) for payload in inputs]
            await first.future
            return await asyncio.gather(*(j.future for j in jobs))
        finally:
            worker.close()

    results = asyncio.run(run())
    assert calls == [("embed", 1), ("embed", 3), ("embed", 1)]  # the three G jobs together, the C job alone
    for (items, mode), (vectors, tokens) in zip(inputs, results, strict=True):
        alone, alone_tokens = embedder.embed(items, mode)
        np.testing.assert_allclose(vectors, alone, atol=1e-6, rtol=1e-6)
        assert tokens == alone_tokens.sum() > 0


def test_image_decoding_limits_directly():
    from internvl.serving.images import decode_image_bytes, decode_image_url
    from internvl.serving.schemas import ServeError

    limits = Limits(max_image_pixels=100 * 100, max_image_bytes=50_000)
    ok = decode_image_url(data_url(Image.new("RGBA", (100, 100), (1, 2, 3, 4))), limits)
    assert ok.mode == "RGB" and ok.size == (100, 100)
    buf = io.BytesIO()
    Image.new("L", (101, 100)).save(buf, "PNG")
    with pytest.raises(ServeError, match="101x100 = 10100 pixels") as info:
        decode_image_bytes(buf.getvalue(), limits)
    assert info.value.status == 413
