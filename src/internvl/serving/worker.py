"""The one model worker: a bounded queue of jobs and a thread that runs them, batching what it can.

The model is used by this thread only, so requests never race on it. While it generates, new requests
queue; when it is free it takes the oldest job and, for a single-turn non-streamed chat, every queued
job with the same options (up to ``max_batch_size``) and answers them together through
`ChatPipeline.answer_batch` (left-padded). Streams (batch size 1 by construction of the streamer),
multi-turn chats and seeded sampling run alone. Each row of a batch has its own stopping criterion, so a
client that disconnects or times out stops only its row and its slot is freed at once.

Multi-turn chats and streams go through one `ChatSession`: when a request continues the conversation
the previous one ended (the usual chat client), only its new tokens are prefilled and its images are
not re-encoded; any other request shares less of the cached prefix, down to a rebuild, with the same
answers either way. Seeded requests run from scratch, so a seed's answer never depends on earlier requests.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from internvl.core.errors import InternVLError
from internvl.inference.pipeline import ChatPipeline
from internvl.inference.requests import ChatResponse, GenerationOptions
from internvl.serving.schemas import ServeError

log = logging.getLogger(__name__)


def cut_at_stops(text: str, stops: Sequence[str]) -> tuple[str, bool]:
    """``text`` up to the stop sequence that completes first (the OpenAI ``stop`` rule), and whether one did.

    "Completes first" (smallest end position) is what a streaming client can observe, so streamed and
    non-streamed answers cut at the same place.
    """
    best: tuple[int, int] | None = None  # (end, start)
    for s in stops:
        i = text.find(s)
        if i >= 0 and (best is None or (i + len(s), i) < best):
            best = (i + len(s), i)
    return (text, False) if best is None else (text[: best[1]], True)


class StopCutter:
    """Incremental `cut_at_stops`: pieces in, text that no stop sequence can still claim out."""

    def __init__(self, stops: Sequence[str]) -> None:
        self.stops, self.text, self.emitted, self.stopped = tuple(stops), "", 0, False

    def push(self, piece: str) -> str:
        if self.stopped:
            return ""
        self.text += piece
        cut, self.stopped = cut_at_stops(self.text, self.stops)
        if self.stopped:
            return self._emit(len(cut))
        hold = max((k for s in self.stops for k in range(1, len(s)) if self.text.endswith(s[:k])), default=0)
        return self._emit(len(self.text) - hold)

    def finish(self) -> str:
        return "" if self.stopped else self._emit(len(self.text))

    def _emit(self, upto: int) -> str:
        out = self.text[self.emitted : upto]
        self.emitted = max(self.emitted, upto)
        return out


class RowStop:
    """Stopping criterion over a batch: row ``i`` stops once ``jobs[i]`` is cancelled or past its deadline."""

    def __init__(self, jobs: Sequence[Job]) -> None:
        self.jobs = list(jobs)

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        now = time.monotonic()
        flags = [j.cancel.is_set() or now > j.deadline for j in self.jobs]
        return torch.tensor(flags, dtype=torch.bool, device=input_ids.device)


@dataclass(eq=False)
class Job:
    """One queued request; results travel back to the event loop through ``future`` / ``pieces``."""

    kind: str  # "chat" | "stream" | "embed"
    payload: Any  # ChatRequest, or (items, mode) for "embed"
    loop: asyncio.AbstractEventLoop
    timeout: float
    stops: tuple[str, ...] = ()
    seed: int | None = None
    future: asyncio.Future = field(init=False)
    started: asyncio.Future = field(init=False)  # set at the first streamed piece
    pieces: asyncio.Queue | None = field(init=False, default=None)
    cancel: threading.Event = field(default_factory=threading.Event)
    enqueued: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        self.future = self.loop.create_future()
        self.started = self.loop.create_future()
        if self.kind == "stream":
            self.pieces = asyncio.Queue()
        self.deadline = self.enqueued + self.timeout

    @property
    def expired(self) -> bool:
        return time.monotonic() > self.deadline

    def batch_key(self) -> tuple | None:
        """Jobs with equal keys can share one model call; None: this job runs alone."""
        if self.kind == "embed":
            return ("embed", self.payload[1])  # the mode
        req = self.payload
        if self.kind != "chat" or req.history or (self.seed is not None and req.options.do_sample):
            return None
        return (req.options, self.stops)

    def _call(self, fn: Callable, *args: Any) -> None:
        try:
            self.loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:  # the event loop is gone (server shutting down)
            pass

    def resolve(self, value: Any) -> None:
        self._call(lambda: self.future.done() or self.future.set_result(value))

    def fail(self, error: BaseException) -> None:
        self._call(lambda: self.future.done() or self.future.set_exception(error))

    def emit(self, piece: str) -> None:
        assert self.pieces is not None

        def put() -> None:
            self.pieces.put_nowait(piece)
            if not self.started.done():
                self.started.set_result(None)

        self._call(put)


def _timeout_error(job: Job) -> ServeError:
    return ServeError(
        f"the request did not finish within {job.timeout:g} s (--request-timeout)",
        status=504,
        type="timeout_error",
        code="timeout",
    )


class ModelWorker:
    """A bounded job queue and the single thread that runs the model (see the module doc).

    Args:
        pipeline: the chat pipeline (None for an embeddings-only server).
        embedder: the InternVL-C/G embedder (None for a chat server).
        max_queue: queued jobs beyond which `submit` answers 429.
        max_batch_size: most chat requests generated together.
        on_batch: metrics hook, called with (kind, batch size, seconds, generated tokens).
    """

    def __init__(
        self,
        pipeline: ChatPipeline | None = None,
        embedder: Any = None,
        *,
        max_queue: int = 64,
        max_batch_size: int = 8,
        on_batch: Callable[[str, int, float, int], None] | None = None,
    ) -> None:
        self.pipeline, self.embedder = pipeline, embedder
        self.session = pipeline.session() if pipeline is not None else None  # used by this worker thread only
        self.max_queue, self.max_batch_size = max_queue, max_batch_size
        self.on_batch = on_batch
        self._jobs: collections.deque[Job] = collections.deque()
        self._cond = threading.Condition()
        self._running = True
        self._busy = 0
        self._current: list[Job] = []  # the batch now running
        self._job_seconds = 1.0  # running mean of seconds per batch, for Retry-After
        self._thread = threading.Thread(target=self._loop, name="internvl-model-worker", daemon=True)
        self._thread.start()

    # -- event-loop side ---------------------------------------------------------------------------
    @property
    def depth(self) -> int:
        return len(self._jobs)

    @property
    def busy(self) -> int:
        return self._busy

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def submit(self, job: Job) -> Job:
        with self._cond:
            if len(self._jobs) >= self.max_queue:
                wait = max(1, math.ceil(self._job_seconds * (len(self._jobs) / self.max_batch_size + 1)))
                raise ServeError(
                    f"the request queue is full ({self.max_queue} waiting, --max-queue); retry later",
                    status=429,
                    type="rate_limit_error",
                    code="queue_full",
                    headers={"Retry-After": str(wait)},
                )
            self._jobs.append(job)
            self._cond.notify()
        return job

    def discard(self, job: Job) -> None:
        """Cancel a job (its client went away): it leaves the queue now, or stops at its next step."""
        job.cancel.set()
        with self._cond:
            try:
                self._jobs.remove(job)
            except ValueError:
                pass

    def close(self, timeout: float = 10.0) -> None:
        with self._cond:
            self._running = False
            for job in [*self._jobs, *self._current]:
                job.cancel.set()  # a running generation stops at its next step
                job.fail(ServeError("the server is shutting down", status=503, type="server_error"))
            self._jobs.clear()
            self._cond.notify_all()
        self._thread.join(timeout)

    # -- worker side ---------------------------------------------------------------------------------
    def _take(self) -> list[Job] | None:
        with self._cond:
            while self._running and not self._jobs:
                self._cond.wait()
            if not self._running:
                return None
            first = self._jobs.popleft()
            batch = [first]
            key = first.batch_key()
            if key is not None:
                for job in list(self._jobs):
                    if len(batch) >= self.max_batch_size:
                        break
                    if job.batch_key() == key:
                        self._jobs.remove(job)
                        batch.append(job)
            self._busy, self._current = len(batch), batch
            return batch

    def _loop(self) -> None:
        while (batch := self._take()) is not None:
            live = []
            for job in batch:
                if job.cancel.is_set():
                    continue
                if job.expired:
                    job.fail(_timeout_error(job))
                else:
                    live.append(job)
            try:
                if live:
                    self._execute(live)
            finally:
                self._busy, self._current = 0, []

    def _execute(self, jobs: list[Job]) -> None:
        """Run one batch; if it fails, run its jobs one by one so one bad request fails only itself."""
        start = time.monotonic()
        try:
            tokens = self._run(jobs)
        except Exception as e:  # noqa: BLE001 (a bad request, a bug or an OOM must not kill the worker)
            if len(jobs) > 1:
                log.warning(
                    "a batch of %d failed (%s: %s); retrying its requests one by one", len(jobs), type(e).__name__, e
                )
                for job in jobs:
                    if not job.future.done() and not job.cancel.is_set():
                        self._execute([job])
                return
            if isinstance(e, ServeError):
                error = e
            elif isinstance(e, InternVLError):  # a request the pipeline refuses: the client's fault
                error = ServeError(str(e))
            else:
                log.exception("generation failed")
                error = ServeError(f"generation failed: {type(e).__name__}: {e}", status=500, type="server_error")
            jobs[0].fail(error)
            return
        seconds = time.monotonic() - start
        self._job_seconds = 0.8 * self._job_seconds + 0.2 * seconds
        if self.on_batch is not None:
            try:
                self.on_batch(jobs[0].kind, len(jobs), seconds, tokens)
            except Exception:  # noqa: BLE001 (metrics must never stop the worker)
                log.exception("metrics hook failed")

    def _run(self, jobs: list[Job]) -> int:
        kind = jobs[0].kind
        if kind == "embed":
            return self._embed(jobs)
        if self.pipeline is None:
            raise ServeError("this server's model is an InternVL-C/G checkpoint: it serves /v1/embeddings only")
        if jobs[0].seed is not None:
            torch.manual_seed(jobs[0].seed)
        if kind == "stream":
            return self._stream(jobs[0])
        return self._chat(jobs)

    def _options(self, job: Job, stopper: RowStop) -> GenerationOptions:
        """The job's options plus its row stopper and its ``stop`` strings (transformers' stop_strings)."""
        from transformers import StoppingCriteriaList

        options = job.payload.options
        extra = dict(options.extra)
        extra["stopping_criteria"] = StoppingCriteriaList([*(extra.get("stopping_criteria") or []), stopper])
        if job.stops:
            extra.update(stop_strings=list(job.stops), tokenizer=self.pipeline.tokenizer)
        return dataclasses.replace(options, extra=extra)

    def _chatter(self, job: Job) -> Any:
        """The session (reuses the previous turn's cache), or the pipeline for a seeded request."""
        return self.pipeline if job.seed is not None or self.session is None else self.session

    def _chat(self, jobs: list[Job]) -> int:
        options = self._options(jobs[0], RowStop(jobs))
        requests = [dataclasses.replace(j.payload, options=options) for j in jobs]
        if len(jobs) == 1 and jobs[0].payload.history:
            responses = [self._chatter(jobs[0]).answer(requests[0])]
        else:
            responses = self.pipeline.answer_batch(requests)
        for job, resp in zip(jobs, responses, strict=True):
            if job.cancel.is_set():
                continue
            if job.expired:
                job.fail(_timeout_error(job))
                continue
            text, stopped = cut_at_stops(resp.text, job.stops)
            job.resolve(dataclasses.replace(resp, text=text, finish_reason="stop" if stopped else resp.finish_reason))
        return sum(r.completion_tokens for r in responses)

    def _stream(self, job: Job) -> int:
        options = self._options(job, RowStop([job]))
        stream = self._chatter(job).stream(dataclasses.replace(job.payload, options=options))
        cutter = StopCutter(job.stops)
        try:
            for piece in stream:
                if job.cancel.is_set() or job.expired:
                    break
                if out := cutter.push(piece):
                    job.emit(out)
            else:
                if out := cutter.finish():
                    job.emit(out)
        finally:
            stream.close()
        resp: ChatResponse | None = stream.response
        if job.cancel.is_set():
            return resp.completion_tokens if resp else 0
        if resp is None:  # cut short by the deadline
            job.fail(_timeout_error(job))
            return 0
        job.resolve(dataclasses.replace(resp, finish_reason="stop" if cutter.stopped else resp.finish_reason))
        return resp.completion_tokens

    def _embed(self, jobs: list[Job]) -> int:
        """One embedding call for the inputs of all jobs (same mode), split back per job."""
        items = [x for job in jobs for x in job.payload[0]]
        vectors, tokens = self.embedder.embed(items, jobs[0].payload[1])
        start = 0
        for job in jobs:
            n = len(job.payload[0])
            job.resolve((vectors[start : start + n], int(tokens[start : start + n].sum())))
            start += n
        return 0


@dataclass
class Embedder:
    """An InternVL-C/G model with its text tokenizer and image transform, embedding mixed inputs in order."""

    model: Any  # InternVLModel
    tokenizer: Any  # InternVLTextTokenizer
    mode: str = "InternVL-C"
    batch_size: int = 32

    def __post_init__(self) -> None:
        from internvl.data.transforms import build_transform

        self.transform = build_transform("retrieval", self.model.image_size)

    @property
    def dim(self) -> int:
        return int(self.model.config.clip_embed_dim)

    def embed(self, items: Sequence[Any], mode: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Texts (str) and PIL images -> (float32[N, D] L2-normalised rows in input order, tokens per item:
        the text's ids without padding, 0 for images)."""
        from internvl.inference.embedding import embed_images, embed_texts

        out = np.zeros((len(items), self.dim), dtype=np.float32)
        text_rows = [i for i, x in enumerate(items) if isinstance(x, str)]
        image_rows = [i for i, x in enumerate(items) if not isinstance(x, str)]
        tokens = np.zeros(len(items), dtype=np.int64)
        if text_rows:
            texts = [items[i] for i in text_rows]
            out[text_rows] = embed_texts(self.model, self.tokenizer, texts, self.batch_size).numpy()
            tokens[text_rows] = (self.tokenizer(texts) > self.tokenizer.pad_token_id).sum(dim=1).numpy()
        if image_rows:
            out[image_rows] = embed_images(
                self.model, [items[i] for i in image_rows], self.transform, self.batch_size, mode or self.mode
            ).numpy()
        return out, tokens


__all__ = ["Embedder", "Job", "ModelWorker", "StopCutter", "cut_at_stops"]
