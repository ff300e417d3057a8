"""OpenAI wire formats (chat completions, chunks, embeddings, models, errors) as pydantic models, and their
mapping onto `internvl.inference.requests` (the decode / encode half of the server; the pipeline predicts).

Requests are parsed leniently where OpenAI clients send extra fields (unknown keys are ignored), but every
feature we cannot honour (``n > 1``, tools, logprobs, penalties) is refused with a `ServeError` naming the
field, rather than silently ignored.
"""

from __future__ import annotations

import base64
import re
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from internvl.core.errors import RequestError
from internvl.core.specs import canonical_mode
from internvl.inference.requests import ChatRequest, GenerationOptions, Message


class ServeError(RequestError):
    """A request the server refuses: HTTP ``status`` with an OpenAI-style error body."""

    def __init__(
        self,
        message: str,
        *,
        status: int = 400,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message, self.status, self.type, self.param, self.code = message, status, type, param, code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return error_body(self.message, self.type, self.param, self.code)


def error_body(
    message: str, type: str = "invalid_request_error", param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    """``{"error": {"message", "type", "param", "code"}}``: what OpenAI clients parse into their exceptions."""
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def parse(model: type[BaseModel], payload: Any) -> Any:
    """Validate a decoded JSON body; the first problem becomes a 400 naming its field path."""
    try:
        return model.model_validate(payload)
    except ValidationError as e:
        err = e.errors()[0]
        # Union branches appear in the location as type tags ("stop.str"): keep only the field path.
        loc = [str(p) for p in err["loc"] if isinstance(p, int) or not _TYPE_TAG.search(str(p))]
        where = ".".join(loc) or "body"
        msg = err["msg"].removeprefix("Value error, ")
        if len(loc) < len(err["loc"]):
            msg = f"wrong type ({msg.lower()} or one of the other accepted forms)"
        raise ServeError(f"{where}: {msg} (got {_short(err.get('input'))})", param=where) from None


_TYPE_TAG = re.compile(r"^(str|int|float|bool|list|dict|none|[A-Z]\w*)$|\[|^function-|^json-")


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


# -- chat completions: request -------------------------------------------------------------------
class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore")


class ImageURL(_Lenient):
    url: str
    detail: Literal["auto", "low", "high"] | None = None


class TextPart(_Lenient):
    type: Literal["text"]
    text: str


class ImagePart(_Lenient):
    type: Literal["image_url"]
    image_url: ImageURL


ContentPart = TextPart | ImagePart


class ChatMessage(_Lenient):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[ContentPart] | None = None
    name: str | None = None

    @field_validator("content", mode="before")
    @classmethod
    def _content_parts(cls, value: Any) -> Any:
        """Name the bad part instead of pydantic's union report; accept ``"image_url": "data:..."`` too."""
        if value is None or isinstance(value, str):
            return value
        if not isinstance(value, list):
            raise ValueError("content must be a string, null or a list of parts")
        parts = []
        for j, part in enumerate(value):
            kind = part.get("type") if isinstance(part, dict) else None
            if kind not in ("text", "image_url"):
                raise ValueError(f"content[{j}]: part type {kind!r} is not supported; expected 'text' or 'image_url'")
            if kind == "image_url" and isinstance(part.get("image_url"), str):
                part = {**part, "image_url": {"url": part["image_url"]}}
            parts.append(part)
        return parts

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "\n".join(p.text for p in self.content if isinstance(p, TextPart))

    def image_urls(self) -> list[str]:
        if not isinstance(self.content, list):
            return []
        return [p.image_url.url for p in self.content if isinstance(p, ImagePart)]


class StreamOptions(_Lenient):
    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    n: int | None = Field(None, ge=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logprobs: bool | None = None
    user: str | None = None

    def refuse_unsupported(self) -> None:
        """Fields we would otherwise drop on the floor: refuse them by name."""
        if self.n not in (None, 1):
            raise ServeError(f"n={self.n}: this server returns one choice per request (n=1)", param="n")
        for name in ("presence_penalty", "frequency_penalty"):
            if getattr(self, name) not in (None, 0, 0.0):
                raise ServeError(f"{name} is not supported (only 0)", param=name)
        if self.logprobs:
            raise ServeError("logprobs are not supported", param="logprobs")
        extra = self.model_extra or {}
        for name in (
            "tools",
            "functions",
            "tool_choice",
            "function_call",
            "logit_bias",
            "top_logprobs",
            "audio",
            "prediction",
        ):
            if extra.get(name) not in (None, [], {}, "none", "auto"):
                raise ServeError(f"{name} is not supported by this server", param=name)
        fmt = extra.get("response_format")
        if fmt not in (None, {"type": "text"}):
            raise ServeError("response_format: only {'type': 'text'} is supported", param="response_format")
        if (
            self.max_tokens is not None
            and self.max_completion_tokens is not None
            and self.max_tokens != self.max_completion_tokens
        ):
            raise ServeError(
                f"max_tokens={self.max_tokens} and max_completion_tokens={self.max_completion_tokens} "
                "disagree; send one of them",
                param="max_completion_tokens",
            )

    @property
    def stops(self) -> tuple[str, ...]:
        stops = (self.stop,) if isinstance(self.stop, str) else tuple(self.stop or ())
        if len(stops) > 4:
            raise ServeError(f"stop: at most 4 sequences, got {len(stops)}", param="stop")
        if any(not s for s in stops):
            raise ServeError("stop: sequences must be non-empty strings", param="stop")
        return stops

    @property
    def image_urls(self) -> list[str]:
        return [u for m in self.messages for u in m.image_urls()]

    @property
    def requested_max_tokens(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens


def generation_options(req: ChatCompletionRequest, max_new_tokens: int) -> GenerationOptions:
    """OpenAI sampling fields -> `GenerationOptions`.

    ``temperature=0`` is greedy decoding; ``temperature > 0`` (or ``top_p`` alone, at temperature 1)
    samples; neither keeps the checkpoint's generation config (greedy for the reference's).
    """
    if req.temperature == 0:
        return GenerationOptions(max_new_tokens=max_new_tokens, do_sample=False)
    if req.temperature is None and req.top_p is None:
        return GenerationOptions(max_new_tokens=max_new_tokens)
    return GenerationOptions(
        max_new_tokens=max_new_tokens,
        do_sample=True,
        temperature=req.temperature if req.temperature is not None else 1.0,
        top_p=req.top_p,
    )


def to_chat_request(req: ChatCompletionRequest, images: Sequence[Any], options: GenerationOptions) -> ChatRequest:
    """Messages -> one `ChatRequest` on the checkpoint's template.

    System (and ``developer``) messages must come first and are joined; consecutive messages of one role
    are joined with a newline (the template alternates user/assistant); ``images`` are the decoded
    ``image_url`` parts in message order, and a user turn's images get the reference's ``<image>``
    placeholders (``Image-k`` numbering for several).
    """
    system: list[str] = []
    turns: list[tuple[str, list[str], list[Any]]] = []  # role, texts, images
    it = iter(images)
    for i, m in enumerate(req.messages):
        role = "system" if m.role == "developer" else m.role
        urls = m.image_urls()
        if role == "system":
            if turns:
                raise ServeError(
                    f"messages[{i}]: a system message must come before the conversation", param=f"messages.{i}"
                )
            if urls:
                raise ServeError(f"messages[{i}]: system messages cannot carry images", param=f"messages.{i}")
            system.append(m.text())
            continue
        if urls and role != "user":
            raise ServeError(f"messages[{i}]: only user messages can carry images", param=f"messages.{i}")
        decoded = [next(it) for _ in urls]
        if turns and turns[-1][0] == role:
            turns[-1][1].append(m.text())
            turns[-1][2].extend(decoded)
        else:
            turns.append((role, [m.text()], decoded))
    if not turns or turns[-1][0] != "user":
        raise ServeError("messages must end with a user message", param="messages")
    if turns[0][0] != "user":
        raise ServeError("the conversation must start with a user message (after any system message)", param="messages")
    messages = [Message("system", "\n".join(system))] if system else []
    messages += [Message(role, "\n".join(texts), tuple(ims)) for role, texts, ims in turns]
    return ChatRequest.from_messages(messages, options)


# -- chat completions: responses -----------------------------------------------------------------
class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class Choice(BaseModel):
    index: int = 0
    message: AssistantMessage
    finish_reason: Literal["stop", "length"]
    logprobs: None = None


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: Usage
    system_fingerprint: str | None = None


class Delta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChunkChoice(BaseModel):
    index: int = 0
    delta: Delta
    finish_reason: Literal["stop", "length"] | None = None
    logprobs: None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: Usage | None = None


def new_completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex[:24]}"


def now() -> int:
    return int(time.time())


# -- embeddings -------------------------------------------------------------------------------------
class EmbeddingImage(_Lenient):
    type: Literal["image_url"]
    image_url: ImageURL


class EmbeddingText(_Lenient):
    type: Literal["text"]
    text: str


class EmbeddingRequest(BaseModel):
    """OpenAI's embeddings request plus two extensions: ``input`` items may be
    ``{"type": "image_url", "image_url": {"url": "data:..."}}`` (or ``{"type": "text", "text": ...}``), and
    ``mode`` picks the image embedding (``InternVL-C``: attention-pooled ViT; ``InternVL-G``: + QLLaMA), in any
    case like the CLI's ``--mode`` (``internvl-g``, ``G``)."""

    model_config = ConfigDict(extra="ignore")

    model: str
    input: str | list[str | EmbeddingText | EmbeddingImage] = Field(min_length=1)
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = None
    mode: Literal["InternVL-C", "InternVL-G"] | None = None
    user: str | None = None

    @field_validator("mode", mode="before")
    @classmethod
    def _any_case(cls, value: Any) -> Any:
        return (canonical_mode(value) or value) if isinstance(value, str) else value

    @staticmethod
    def precheck(payload: dict) -> None:
        """Token-id inputs (OpenAI allows them) get their own message instead of a union-validation error."""
        raw = payload.get("input")
        rows = raw if isinstance(raw, list) else [raw]
        for i, x in enumerate(rows):
            if isinstance(x, int) or (isinstance(x, list) and all(isinstance(t, int) for t in x)):
                raise ServeError(
                    f"input[{i}]: token-id inputs are not supported; send text strings or "
                    "{'type': 'image_url', 'image_url': {'url': 'data:...'}} items",
                    param=f"input.{i}",
                )

    def items(self) -> list[str | EmbeddingImage]:
        """Inputs in order: strings are texts, `EmbeddingImage` are images."""
        if self.dimensions is not None:
            raise ServeError(
                "dimensions is not supported: InternVL-C/G embeddings have a fixed size", param="dimensions"
            )
        raw = [self.input] if isinstance(self.input, str) else self.input
        out: list[str | EmbeddingImage] = []
        for x in raw:
            out.append(x.text if isinstance(x, EmbeddingText) else x)
        return out


class EmbeddingData(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class EmbeddingUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[EmbeddingData]
    model: str
    usage: EmbeddingUsage


def encode_embedding(row: np.ndarray, encoding_format: str) -> list[float] | str:
    """float32 row -> a JSON list, or base64 of its little-endian float32 bytes (OpenAI's ``base64``)."""
    row = np.asarray(row, dtype="<f4")
    return base64.b64encode(row.tobytes()).decode("ascii") if encoding_format == "base64" else row.tolist()


# -- models ------------------------------------------------------------------------------------------
class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "internvl"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


@dataclass
class Limits:
    """Request limits (each has an ``internvl serve`` flag of the same name with dashes)."""

    max_body_bytes: int = 32 * 2**20
    max_image_bytes: int = 16 * 2**20
    max_image_pixels: int = 4096 * 4096
    max_images: int = 8
    max_messages: int = 64
    max_tokens: int = 2048
    default_max_tokens: int = 512
    max_embedding_inputs: int = 64
    allow_fetch_hosts: tuple[str, ...] = field(default_factory=tuple)

    def check_chat(self, req: ChatCompletionRequest) -> int:
        """Limit checks before any image is decoded; returns ``max_new_tokens``."""
        if len(req.messages) > self.max_messages:
            raise ServeError(
                f"{len(req.messages)} messages; this server accepts at most {self.max_messages} (--max-messages)",
                param="messages",
            )
        n = len(req.image_urls)
        if n > self.max_images:
            raise ServeError(
                f"{n} images; this server accepts at most {self.max_images} per request (--max-images)",
                param="messages",
                code="too_many_images",
            )
        wanted = req.requested_max_tokens
        if wanted is not None and wanted > self.max_tokens:
            name = "max_completion_tokens" if req.max_completion_tokens is not None else "max_tokens"
            raise ServeError(
                f"{name}={wanted} exceeds this server's limit of {self.max_tokens} (--max-tokens)", param=name
            )
        return wanted if wanted is not None else min(self.default_max_tokens, self.max_tokens)
