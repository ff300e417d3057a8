"""`ChatPipeline`: an InternVL-Chat model made ready to answer requests, once.

API (shared by the CLI, the OpenAI-compatible server and the benchmark harness)::

    pipe = ChatPipeline.load(path, dtype="bf16", device_map="auto")   # or ChatPipeline(model, tokenizer)
    resp = pipe.answer(ChatRequest("What is shown?", images=("cat.jpg",), options={"max_new_tokens": 64}))
    resp.text, resp.finish_reason, resp.prompt_tokens, resp.completion_tokens, resp.history
    pipe.answer_batch([req, ...], batch_size=8)  # single-turn requests in left-padded batches
    stream = pipe.stream(req)                    # iterate text pieces; "".join(...) == pipe.answer(req).text
    stream.response                              # the ChatResponse once the stream is exhausted
    pipe.prepare_images(paths) / pipe.prepare_video(path, num_segments=8) -> Visuals (reuse across turns)
    pipe.prompt(req)                             # the exact prompt string the model sees
    session = pipe.session()                     # multi-turn from the KV cache (internvl.inference.session)

Everything request-independent is resolved here at construction: the template, its system message
(checkpoint config > template default; a request may override it), the end-of-turn id that ends
generation, the checkpoint's image settings and tokens per tile, and the tokenizer's ``<IMG_CONTEXT>``
id, bound into the model once (`bind_tokenizer`). Requests never mutate the pipeline, the model or the
tokenizer. Decoding matches the reference ``chat()`` (chat spec §4), so greedy answers equal the card's;
the card-compatible functions of `internvl.inference.chat` are thin wrappers over this class.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from internvl.core.errors import ConfigError, RequestError
from internvl.data.conversation import (
    IMAGE_PLACEHOLDER,
    Conversation,
    add_image_placeholder,
    build_query,
    get_conv_template,
    resolve_system_message,
)
from internvl.data.image_processing import ChatImageSettings, card_preprocess_image, preprocess_image
from internvl.data.video import load_video, video_prompt_prefix
from internvl.inference.loading import bind_tokenizer, end_of_turn_id, image_settings, template_name
from internvl.inference.requests import ChatRequest, ChatResponse, GenerationOptions, ImageInput, Visuals
from internvl.inference.streaming import TextPieceStreamer, stream_generate
from internvl.models.internvl_chat import InternVLChatModel

if TYPE_CHECKING:
    from internvl.inference.session import ChatSession

log = logging.getLogger(__name__)


def load_tiles(
    settings: ChatImageSettings, images: Sequence[ImageInput], max_num: int | None = None, card: bool = False
) -> tuple[torch.Tensor, list[int]]:
    """Paths or PIL images -> (float32[tiles, 3, S, S], tiles per image).

    ``card=True`` uses the V1-2 card's exact path (resize before RGB conversion: NEAREST for palette
    images), see `card_preprocess_image`; the default is the reference's eval/training transform.
    """
    if card:
        if settings.dynamic_image_size:
            raise ConfigError("card=True is the single-tile V1-2 card path; this checkpoint uses dynamic tiling")
        tiles = [card_preprocess_image(im, settings) for im in images]
    else:
        tiles = [preprocess_image(im, settings, max_num=max_num) for im in images]
    return torch.cat(tiles), [t.shape[0] for t in tiles]


def multi_image_prefix(num_images: int) -> str:
    """``"Image-1: <image>\\nImage-2: <image>\\n"`` for several images (the card's separate-images prompt)."""
    if num_images < 2:
        return ""
    return "".join(f"Image-{k + 1}: {IMAGE_PLACEHOLDER}\n" for k in range(num_images))


@dataclass(frozen=True)
class _Prepared:
    """A request rendered for the model: the prompt, its ids and the tiles (still on the CPU)."""

    query: str
    stored_question: str
    input_ids: torch.Tensor  # (1, N)
    pixel_values: torch.Tensor | None
    request: ChatRequest


class ChatStream:
    """Text pieces of one streamed answer; ``response`` is set once the stream is exhausted.

    ``close()`` (or leaving a ``for`` loop early and dropping the stream) cancels generation and joins
    the generating thread; ``response`` then stays None.
    """

    def __init__(self, pieces: Iterator[str]) -> None:
        self._pieces = pieces
        self.response: ChatResponse | None = None

    def __iter__(self) -> ChatStream:
        return self

    def __next__(self) -> str:
        return next(self._pieces)

    def close(self) -> None:
        self._pieces.close()  # type: ignore[attr-defined]


class ChatPipeline:
    """One loaded InternVL-Chat model with its tokenizer and everything resolved once (see the module doc).

    Calls do not share per-request state, but they share the model: a server runs one generation at a
    time per pipeline (or one pipeline per device).

    Args:
        model: an `InternVLChatModel` (any device / device map / dtype).
        tokenizer: its tokenizer (must contain ``<IMG_CONTEXT>`` and the template's end-of-turn token).
        template: conversation template name; default the checkpoint's.
        system_message: default system message; default the checkpoint's, else the template's.
    """

    def __init__(
        self,
        model: InternVLChatModel,
        tokenizer: Any,
        *,
        template: str | None = None,
        system_message: str | None = None,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.template = template_name(model, template)
        self.system_message = resolve_system_message(self.template, model.system_message, system_message)
        self.stop = get_conv_template(self.template).stop_sep
        self.end_of_turn_id = end_of_turn_id(tokenizer, self.stop)
        self.image_settings = image_settings(model)
        self.num_image_token = model.num_image_token
        self.img_context_token_id = bind_tokenizer(model, tokenizer)
        pad = tokenizer.pad_token_id
        if pad is None:  # the Yi tokenizer's pad is <unk>
            pad = tokenizer.unk_token_id if tokenizer.unk_token_id is not None else 0
        self._batch_pad_id = int(pad)

    @classmethod
    def load(
        cls,
        path: str | os.PathLike,
        *,
        dtype: str | torch.dtype | None = None,
        device: str | torch.device | None = None,
        device_map: str | dict | None = None,
        template: str | None = None,
        system_message: str | None = None,
        **load_kwargs: Any,
    ) -> ChatPipeline:
        """Load a chat checkpoint with `internvl.inference.loading.load_pretrained` and wrap it.

        ``load_kwargs`` go to `InternVLChatModel.from_pretrained` (``load_in_8bit``, ``max_memory``, ...).
        """
        from internvl.inference.loading import load_pretrained

        loaded = load_pretrained(
            path, dtype=dtype, device=device, device_map=device_map, model_types=("internvl_chat",), **load_kwargs
        )
        return cls(loaded.model, loaded.tokenizer, template=template, system_message=system_message)

    @property
    def conversation(self) -> Conversation:
        """A fresh copy of the template with the pipeline's system message."""
        conv = get_conv_template(self.template)
        conv.set_system_message(self.system_message)
        return conv

    # -- images ----------------------------------------------------------------------------------
    def prepare_images(
        self, images: Sequence[ImageInput], *, max_num: int | None = None, card: bool = False
    ) -> Visuals:
        """Preprocess images once (to reuse over several turns); several get the ``Image-k`` prefix."""
        images = list(images)
        if not images:
            raise RequestError("prepare_images needs at least one image")
        pixel_values, patches = load_tiles(self.image_settings, images, max_num=max_num, card=card)
        return Visuals(pixel_values, tuple(patches), multi_image_prefix(len(images)))

    def prepare_video(
        self, path: str | os.PathLike, *, num_segments: int = 8, bound: Sequence[float] | None = None
    ) -> Visuals:
        """The card's video input: ``num_segments`` frames, prefix ``"Frame1: <image>\\n..."``."""
        pixel_values, patches = load_video(path, bound=bound, num_segments=num_segments, settings=self.image_settings)
        return Visuals(pixel_values, tuple(patches), video_prompt_prefix(len(patches)))

    # -- prompts ---------------------------------------------------------------------------------
    def _render(self, req: ChatRequest) -> tuple[str, str, torch.Tensor | None]:
        """(prompt, question as stored in history, tiles) of a request."""
        visuals, question = req.visuals, req.question
        if req.images:
            visuals = self.prepare_images(req.images)
            if IMAGE_PLACEHOLDER in question:
                visuals = Visuals(visuals.pixel_values, visuals.num_patches_list)
        patches = list(visuals.num_patches_list) if visuals is not None else []
        if visuals is not None and visuals.prefix and req.history is None:
            question = visuals.prefix + question
        system = req.system_message if req.system_message is not None else self.system_message
        query, _ = build_query(
            self.template,
            question,
            history=req.history,
            num_patches_list=patches,
            num_image_token=self.num_image_token,
            system_message=system,
        )
        stored = add_image_placeholder(question, bool(patches), req.history)
        return query, stored, visuals.pixel_values if visuals is not None else None

    def prompt(self, req: ChatRequest) -> str:
        """The exact prompt string of ``req`` (image blocks expanded to ``<IMG_CONTEXT>`` runs)."""
        return self._render(req)[0]

    def _prepare(self, req: ChatRequest) -> _Prepared:
        query, stored, pixel_values = self._render(req)
        input_ids = self.tokenizer(query, return_tensors="pt")["input_ids"]
        return _Prepared(query, stored, input_ids, pixel_values, req)

    def _generate_kwargs(self, options: GenerationOptions) -> dict[str, Any]:
        """The request's settings with the end-of-turn token as eos (as the reference's chat())."""
        gen = options.to_generate_kwargs()
        gen["eos_token_id"] = self.end_of_turn_id
        if "pad_token_id" not in gen and self.model.generation_config.pad_token_id is None:
            pad = self.tokenizer.pad_token_id
            gen["pad_token_id"] = pad if pad is not None else self.end_of_turn_id
        return gen

    def _decode(self, ids: torch.Tensor) -> list[str]:
        return [t.split(self.stop)[0].strip() for t in self.tokenizer.batch_decode(ids, skip_special_tokens=True)]

    def _finish(self, ids: Sequence[int]) -> tuple[str, int]:
        """("stop" | "length", generated ids counted up to and including the end-of-turn id)."""
        ids = list(ids)
        if self.end_of_turn_id in ids:
            return "stop", ids.index(self.end_of_turn_id) + 1
        return "length", len(ids)

    def _response(self, p: _Prepared, text: str, generated: Sequence[int], prompt_tokens: int) -> ChatResponse:
        finish, count = self._finish(generated)
        history = (*(p.request.history or ()), (p.stored_question, text))
        return ChatResponse(text, finish, prompt_tokens, count, history)

    # -- answering -------------------------------------------------------------------------------
    def answer(self, req: ChatRequest) -> ChatResponse:
        """Generate one assistant turn."""
        p = self._prepare(req)
        gen = self._generate_kwargs(req.options)
        log.debug("prompt: %s", p.query)
        out = self.model.generate(
            pixel_values=p.pixel_values, input_ids=p.input_ids, attention_mask=torch.ones_like(p.input_ids), **gen
        )
        return self._response(p, self._decode(out)[0], out[0].tolist(), p.input_ids.shape[1])

    def answer_batch(self, requests: Sequence[ChatRequest], *, batch_size: int | None = None) -> list[ChatResponse]:
        """Answer independent single-turn requests in left-padded batches (greedy answers equal `answer`'s).

        Requests with different options are generated in separate batches; answers keep the input order.

        Raises:
            RequestError: a request has history (multi-turn requests go through `answer`).
        """
        requests = list(requests)
        if batch_size is not None and batch_size < 1:
            raise RequestError(f"batch_size={batch_size}; expected >= 1")
        for i, req in enumerate(requests):
            if req.history:
                raise RequestError(f"answer_batch answers single-turn requests; request {i} has history (use answer)")
        groups: list[tuple[GenerationOptions, list[int]]] = []
        for i, req in enumerate(requests):
            for options, members in groups:
                if options == req.options:
                    members.append(i)
                    break
            else:
                groups.append((req.options, [i]))
        out: list[ChatResponse | None] = [None] * len(requests)
        for options, members in groups:
            step = batch_size or len(members)
            for start in range(0, len(members), step):
                chunk = members[start : start + step]
                for i, resp in zip(chunk, self._answer_together([requests[i] for i in chunk], options), strict=True):
                    out[i] = resp
        return out  # type: ignore[return-value]

    def _answer_together(self, requests: list[ChatRequest], options: GenerationOptions) -> list[ChatResponse]:
        prepared = [self._prepare(r) for r in requests]
        width = max(p.input_ids.shape[1] for p in prepared)
        # Left padding (what the reference gets from padding_side="left"), without touching the tokenizer.
        input_ids = torch.full((len(prepared), width), self._batch_pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(prepared), width), dtype=torch.long)
        for row, p in enumerate(prepared):
            n = p.input_ids.shape[1]
            input_ids[row, width - n :] = p.input_ids[0]
            attention_mask[row, width - n :] = 1
        tiles = [p.pixel_values for p in prepared if p.pixel_values is not None]
        pixel_values = torch.cat(tiles) if tiles else None
        out = self.model.generate(
            pixel_values=pixel_values,
            input_ids=input_ids,
            attention_mask=attention_mask,
            **self._generate_kwargs(options),
        )
        texts = self._decode(out)
        return [
            self._response(p, text, ids, p.input_ids.shape[1])
            for p, text, ids in zip(prepared, texts, out.tolist(), strict=True)
        ]

    def stream(self, req: ChatRequest, *, timeout: float | None = None) -> ChatStream:
        """Stream one assistant turn; the pieces join to exactly `answer`'s text (see `internvl.inference.streaming`).

        ``timeout`` (seconds) bounds each wait for the next piece. The request is validated and rendered
        here; generation starts in a background thread when the first piece is requested.

        Raises:
            RequestError: the options already contain a ``streamer``.
        """
        p = self._prepare(req)

        def run(**kwargs: Any) -> Any:
            return self.model.generate(
                pixel_values=p.pixel_values,
                input_ids=p.input_ids,
                attention_mask=torch.ones_like(p.input_ids),
                **kwargs,
            )

        return self._stream(p, run, timeout)

    def _stream(self, p: _Prepared, run: Any, timeout: float | None) -> ChatStream:
        """Stream the answer to ``p``; ``run(**generate_kwargs)`` generates (from scratch or from a session's cache)."""
        from transformers import StoppingCriteriaList

        gen = self._generate_kwargs(p.request.options)
        if "streamer" in gen:
            raise RequestError("stream creates its own streamer; remove 'streamer' from the generation options")
        streamer = TextPieceStreamer(self.tokenizer, timeout=timeout)

        def generate(streamer: TextPieceStreamer, cancel: Any) -> None:
            stops = StoppingCriteriaList([*(gen.get("stopping_criteria") or []), cancel])
            run(streamer=streamer, **{**gen, "stopping_criteria": stops})

        stream: ChatStream

        def pieces() -> Iterator[str]:
            parts = []
            for piece in stream_generate(generate, streamer, self.stop):
                parts.append(piece)
                yield piece
            stream.response = self._response(p, "".join(parts), streamer.decoder.ids, p.input_ids.shape[1])

        stream = ChatStream(pieces())
        return stream

    def session(self, **limits: Any) -> ChatSession:
        """A `ChatSession` over this pipeline: multi-turn chat that reuses its KV cache and image features."""
        from internvl.inference.session import ChatSession

        return ChatSession(self, **limits)
