"""`create_app`: the OpenAI-compatible FastAPI app over one `ChatPipeline` (chat) or `Embedder` (InternVL-C/G).

Routes: ``POST /v1/chat/completions`` (``stream: true`` as SSE chunks ending with ``data: [DONE]``),
``POST /v1/embeddings``, ``GET /v1/models``, ``GET /health``, ``GET /metrics`` (Prometheus text) and the
chat page at ``/``. Request bodies are read and validated here (size limit, JSON, schema, limits, images
decoded in a thread) so that every malformed request is a 4xx with an OpenAI-style error body before it
reaches the queue; the model only ever runs on the `ModelWorker` thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import os
import time
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from internvl.core.errors import InternVLError
from internvl.core.specs import EMBEDDING_MODES
from internvl.inference.pipeline import ChatPipeline
from internvl.serving.images import decode_image_url
from internvl.serving.metrics import Metrics
from internvl.serving.schemas import (
    AssistantMessage,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    Choice,
    ChunkChoice,
    Delta,
    EmbeddingData,
    EmbeddingRequest,
    EmbeddingResponse,
    EmbeddingUsage,
    Limits,
    ModelCard,
    ModelList,
    ServeError,
    Usage,
    encode_embedding,
    error_body,
    generation_options,
    new_completion_id,
    now,
    parse,
    to_chat_request,
)
from internvl.serving.worker import Embedder, Job, ModelWorker

log = logging.getLogger(__name__)

API_KEY_ENV = "INTERNVL_API_KEY"
OPEN_PATHS = ("/health", "/", "/favicon.ico")  # the page itself is static; its API calls carry the key
POLL_S = 0.2  # how often a waiting request checks whether its client is still there


@dataclass
class ServeSettings:
    """Server settings; ``api_key`` None means no key (``internvl serve`` also reads ``INTERNVL_API_KEY``)."""

    model_name: str = "internvl"
    api_key: str | None = None
    limits: Limits = field(default_factory=Limits)
    max_queue: int = 64
    max_batch_size: int = 8
    request_timeout: float = 300.0


class _Guard:
    """Pure ASGI middleware (so streaming and disconnects pass through untouched): API key check on every
    route but `OPEN_PATHS`, and request / error / latency metrics by route and status."""

    def __init__(self, app: Any, settings: ServeSettings, metrics: Metrics, routes: set[str]) -> None:
        self.app, self.settings, self.metrics, self.routes = app, settings, metrics, routes

    def _authorized(self, scope: dict) -> bool:
        key = self.settings.api_key
        if not key or scope["path"] in OPEN_PATHS:
            return True
        headers = dict(scope.get("headers") or [])
        auth = headers.get(b"authorization", b"").decode("latin-1")
        token = auth[7:].strip() if auth[:7].lower() == "bearer " else headers.get(b"x-api-key", b"").decode("latin-1")
        return hmac.compare_digest(token.encode(), key.encode())

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        route = scope["path"] if scope["path"] in self.routes else "other"
        start, status = time.monotonic(), [500]

        async def send_and_record(message: dict) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            if not self._authorized(scope):
                has_key = any(k in (b"authorization", b"x-api-key") for k, _ in scope.get("headers") or [])
                msg = (
                    "Incorrect API key provided"
                    if has_key
                    else "Missing API key: send 'Authorization: Bearer KEY' (the server was started with --api-key)"
                )
                response = JSONResponse(error_body(msg, code="invalid_api_key"), status_code=401)
                await response(scope, receive, send_and_record)
            else:
                await self.app(scope, receive, send_and_record)
        finally:
            self.metrics.requests.labels(route, str(status[0])).inc()
            if status[0] >= 400:
                self.metrics.errors.labels(route, str(status[0])).inc()
            self.metrics.latency.labels(route).observe(time.monotonic() - start)


async def read_json(request: Request, limit: int) -> Any:
    """The request body as JSON, refusing bodies over ``limit`` bytes (413) and invalid JSON (400)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ServeError(
            f"request body of {declared} bytes exceeds the limit of {limit} bytes (--max-body-bytes)",
            status=413,
            code="body_too_large",
        )
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise ServeError(
                f"request body exceeds the limit of {limit} bytes (--max-body-bytes)", status=413, code="body_too_large"
            )
    try:
        payload = json.loads(bytes(body))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ServeError(f"the request body is not valid JSON: {e}", code="invalid_json") from None
    if not isinstance(payload, dict):
        raise ServeError(f"the request body must be a JSON object, got {type(payload).__name__}", code="invalid_json")
    try:  # JSON allows lone surrogate escapes ("\ud800"), which no tokenizer can encode
        json.dumps(payload, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise ServeError(
            "the request body contains invalid Unicode (a lone surrogate escape such as \\ud800)", code="invalid_json"
        ) from None
    return payload


def _sse(payload: Any) -> str:
    data = payload if isinstance(payload, str) else json.dumps(payload, ensure_ascii=False)
    return f"data: {data}\n\n"


def create_app(model: ChatPipeline | Embedder, settings: ServeSettings | None = None) -> FastAPI:
    """The app serving ``model``: a `ChatPipeline` (chat completions) or an `Embedder` (InternVL-C/G embeddings).

    The model worker thread starts here and stops when the app shuts down (uvicorn's lifespan).
    """
    settings = settings or ServeSettings()
    if not isinstance(model, (ChatPipeline, Embedder)):
        raise TypeError(f"create_app serves a ChatPipeline or an Embedder, got {type(model).__name__}")
    pipeline = model if isinstance(model, ChatPipeline) else None
    embedder = model if isinstance(model, Embedder) else None
    limits = settings.limits
    metrics = Metrics(lambda: worker.depth, lambda: worker.busy)  # read at scrape time, once the worker exists
    worker = ModelWorker(
        pipeline,
        embedder,
        max_queue=settings.max_queue,
        max_batch_size=settings.max_batch_size,
        on_batch=metrics.on_batch,
    )
    created = now()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        worker.close()

    app = FastAPI(
        title="InternVL OpenAI-compatible server", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None
    )
    app.state.worker, app.state.metrics, app.state.settings = worker, metrics, settings

    # -- errors: every failure is an OpenAI-style body ------------------------------------------------
    @app.exception_handler(ServeError)
    async def _serve_error(request: Request, e: ServeError) -> JSONResponse:
        return JSONResponse(e.body(), status_code=e.status, headers=e.headers)

    @app.exception_handler(InternVLError)
    async def _request_error(request: Request, e: InternVLError) -> JSONResponse:
        return JSONResponse(error_body(str(e)), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, e: StarletteHTTPException) -> JSONResponse:
        msg = f"no route {request.method} {request.url.path}" if e.status_code in (404, 405) else str(e.detail)
        return JSONResponse(error_body(msg, code=str(e.status_code)), status_code=e.status_code)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, e: RequestValidationError) -> JSONResponse:
        return JSONResponse(error_body(str(e.errors()[0].get("msg", e))), status_code=400)

    @app.exception_handler(Exception)
    async def _bug(request: Request, e: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return JSONResponse(error_body(f"internal error: {type(e).__name__}", type="server_error"), status_code=500)

    # -- helpers ------------------------------------------------------------------------------------------
    def check_model(name: str) -> None:
        if name != settings.model_name:
            raise ServeError(
                f"model {name!r} does not exist on this server; it serves {settings.model_name!r} (GET /v1/models)",
                status=404,
                param="model",
                code="model_not_found",
            )

    async def decode_all(urls: list[tuple[str, str]]) -> list[Any]:
        return await run_in_threadpool(lambda: [decode_image_url(u, limits, where) for where, u in urls])

    async def wait(job: Job, request: Request, first_piece: bool = False) -> None:
        """Until the job resolves (or, with ``first_piece``, streams its first piece); cancels it if the client
        disconnects and answers 504 past its deadline (the worker stops it at its next step)."""
        targets = {job.future, job.started} if first_piece else {job.future}
        while not any(t.done() for t in targets):
            await asyncio.wait(targets, timeout=POLL_S, return_when=asyncio.FIRST_COMPLETED)
            if any(t.done() for t in targets):
                break
            if await request.is_disconnected():
                worker.discard(job)
                metrics.cancelled.inc()
                raise ServeError("client disconnected", status=499, code="client_closed")
            if time.monotonic() > job.deadline + 5:
                worker.discard(job)
                raise ServeError(
                    f"the request did not finish within {job.timeout:g} s (--request-timeout)",
                    status=504,
                    type="timeout_error",
                    code="timeout",
                )

    def submit(kind: str, payload: Any, **kw: Any) -> Job:
        job = Job(kind, payload, asyncio.get_running_loop(), settings.request_timeout, **kw)
        return worker.submit(job)

    # -- routes -----------------------------------------------------------------------------------------
    @app.get("/", include_in_schema=False)
    async def index() -> HTMLResponse:
        return HTMLResponse(resources.files("internvl.serving").joinpath("static/index.html").read_text("utf-8"))

    @app.get("/health")
    async def health() -> JSONResponse:
        ok = worker.alive
        return JSONResponse(
            {
                "status": "ok" if ok else "worker stopped",
                "model": settings.model_name,
                "kind": "chat" if pipeline else "embeddings",
                "queue_depth": worker.depth,
            },
            status_code=200 if ok else 503,
        )

    @app.get("/metrics")
    async def metrics_route() -> Response:
        return Response(metrics.render(), media_type=metrics.content_type)

    @app.get("/v1/models")
    async def models() -> dict:
        return ModelList(data=[ModelCard(id=settings.model_name, created=created)]).model_dump()

    @app.get("/v1/models/{name:path}")
    async def model_info(name: str) -> dict:
        check_model(name)
        return ModelCard(id=settings.model_name, created=created).model_dump()

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        req: ChatCompletionRequest = parse(ChatCompletionRequest, await read_json(request, limits.max_body_bytes))
        check_model(req.model)
        if pipeline is None:
            raise ServeError(
                f"{settings.model_name!r} is an InternVL-C/G checkpoint: it serves /v1/embeddings, "
                "not chat completions",
                code="unsupported_model",
            )
        req.refuse_unsupported()
        stops = req.stops
        options = generation_options(req, limits.check_chat(req))
        urls = [
            (f"messages[{i}].content[{j}].image_url", p.image_url.url)
            for i, m in enumerate(req.messages)
            if isinstance(m.content, list)
            for j, p in enumerate(m.content)
            if getattr(p, "type", None) == "image_url"
        ]
        chat_req = to_chat_request(req, await decode_all(urls), options)
        job = submit("stream" if req.stream else "chat", chat_req, stops=stops, seed=req.seed)
        cid, t0 = new_completion_id(), time.monotonic()
        if not req.stream:
            await wait(job, request)
            resp = job.future.result()
            metrics.prompt_tokens.inc(resp.prompt_tokens)
            return JSONResponse(
                ChatCompletion(
                    id=cid,
                    created=now(),
                    model=settings.model_name,
                    choices=[Choice(message=AssistantMessage(content=resp.text), finish_reason=resp.finish_reason)],
                    usage=Usage(
                        prompt_tokens=resp.prompt_tokens,
                        completion_tokens=resp.completion_tokens,
                        total_tokens=resp.total_tokens,
                    ),
                ).model_dump()
            )
        await wait(job, request, first_piece=True)  # errors before the first piece are still plain 4xx/5xx
        if job.future.done() and job.future.exception() is not None:
            raise job.future.exception()
        metrics.first_token.observe(time.monotonic() - t0)
        include_usage = bool(req.stream_options and req.stream_options.include_usage)

        def chunk(delta: Delta, finish: str | None = None, usage: Usage | None = None, choices: bool = True) -> str:
            c = ChatCompletionChunk(
                id=cid,
                created=now(),
                model=settings.model_name,
                usage=usage,
                choices=[ChunkChoice(delta=delta, finish_reason=finish)] if choices else [],
            )
            return _sse(c.model_dump(exclude_none=True))

        async def events():
            try:
                yield chunk(Delta(role="assistant", content=""))
                while True:
                    getter = asyncio.ensure_future(job.pieces.get())
                    done, _ = await asyncio.wait({getter, job.future}, return_when=asyncio.FIRST_COMPLETED)
                    if getter in done:
                        yield chunk(Delta(content=getter.result()))
                        continue
                    getter.cancel()
                    break
                while not job.pieces.empty():
                    yield chunk(Delta(content=job.pieces.get_nowait()))
                error = job.future.exception()
                if error is not None:
                    body = error.body() if isinstance(error, ServeError) else error_body(str(error), "server_error")
                    yield _sse(body)
                else:
                    resp = job.future.result()
                    metrics.prompt_tokens.inc(resp.prompt_tokens)
                    yield chunk(Delta(), finish=resp.finish_reason)
                    if include_usage:
                        yield chunk(
                            Delta(),
                            usage=Usage(
                                prompt_tokens=resp.prompt_tokens,
                                completion_tokens=resp.completion_tokens,
                                total_tokens=resp.total_tokens,
                            ),
                            choices=False,
                        )
                yield _sse("[DONE]")
            finally:
                if not job.future.done():  # the client went away mid-stream
                    worker.discard(job)
                    metrics.cancelled.inc()

        return StreamingResponse(
            events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        )

    @app.post("/v1/embeddings")
    async def embeddings(request: Request) -> JSONResponse:
        payload = await read_json(request, limits.max_body_bytes)
        EmbeddingRequest.precheck(payload)
        req: EmbeddingRequest = parse(EmbeddingRequest, payload)
        check_model(req.model)
        if embedder is None:
            raise ServeError(
                f"{settings.model_name!r} is a chat model; /v1/embeddings needs an InternVL-C/G checkpoint",
                code="unsupported_model",
            )
        items = req.items()
        if len(items) > limits.max_embedding_inputs:
            raise ServeError(
                f"{len(items)} inputs; at most {limits.max_embedding_inputs} per request (--max-embedding-inputs)",
                param="input",
            )
        if sum(not isinstance(x, str) for x in items) > limits.max_images:
            raise ServeError(
                f"more than {limits.max_images} images in one request (--max-images)",
                param="input",
                code="too_many_images",
            )
        for i, x in enumerate(items):
            if isinstance(x, str) and not x.strip():
                raise ServeError(f"input[{i}] is an empty string", param=f"input.{i}")
        urls = [(f"input[{i}].image_url", x.image_url.url) for i, x in enumerate(items) if not isinstance(x, str)]
        images = iter(await decode_all(urls))
        decoded = [x if isinstance(x, str) else next(images) for x in items]
        job = submit("embed", (decoded, req.mode or embedder.mode))
        await wait(job, request)
        vectors, tokens = job.future.result()
        return JSONResponse(
            EmbeddingResponse(
                data=[
                    EmbeddingData(index=i, embedding=encode_embedding(v, req.encoding_format))
                    for i, v in enumerate(vectors)
                ],
                model=settings.model_name,
                usage=EmbeddingUsage(prompt_tokens=tokens, total_tokens=tokens),
            ).model_dump()
        )

    routes = {r.path for r in app.routes if hasattr(r, "path")} | {"/v1/models/{name}"}
    app.add_middleware(_Guard, settings=settings, metrics=metrics, routes=routes)
    return app


def env_api_key() -> str | None:
    """The API key from ``INTERNVL_API_KEY`` (empty means none)."""
    return os.environ.get(API_KEY_ENV) or None


__all__ = ["EMBEDDING_MODES", "ServeSettings", "create_app", "env_api_key"]
