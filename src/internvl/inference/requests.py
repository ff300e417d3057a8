"""Chat requests, generation options and responses: small validated types shared by the CLI, the server
and the benchmark harness (what `internvl.inference.pipeline.ChatPipeline` consumes and returns).

Validation happens when a value is built, so a bad request fails with a `RequestError` (an
`InternVLError` and a ``ValueError``) naming the field, before any image is decoded or token generated.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from PIL import Image

from internvl.core.errors import DataFormatError, RequestError

ImageInput = Image.Image | str | os.PathLike
History = tuple[tuple[str, str], ...]
FINISH_REASONS = ("stop", "length")


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise RequestError(message)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass(frozen=True)
class GenerationOptions:
    """Decoding settings of one request; a field left None keeps the checkpoint's generation config.

    ``extra`` carries any other ``generate`` keyword under its transformers name (``stopping_criteria``,
    ``streamer``, ``no_repeat_ngram_size``, ...) and ``base`` a transformers ``GenerationConfig`` to start
    from, so the card's ``generation_config`` (a dict or a GenerationConfig) converts losslessly
    (`from_value`). The end-of-turn ``eos_token_id`` is always set by the pipeline.
    """

    max_new_tokens: int | None = None
    min_new_tokens: int | None = None
    do_sample: bool | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    num_beams: int | None = None
    repetition_penalty: float | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)
    base: Any = None

    def __post_init__(self) -> None:
        for name in ("max_new_tokens", "min_new_tokens", "top_k", "num_beams"):
            value = getattr(self, name)
            _check(value is None or _is_int(value), f"{name} must be an integer, got {value!r}")
        for name in ("temperature", "top_p", "repetition_penalty"):
            value = getattr(self, name)
            _check(value is None or _is_number(value), f"{name} must be a number, got {value!r}")
        _check(
            self.do_sample is None or isinstance(self.do_sample, bool),
            f"do_sample must be true/false, got {self.do_sample!r}",
        )
        _check(
            self.max_new_tokens is None or self.max_new_tokens >= 1,
            f"max_new_tokens={self.max_new_tokens}; expected >= 1",
        )
        _check(
            self.min_new_tokens is None or self.min_new_tokens >= 0,
            f"min_new_tokens={self.min_new_tokens}; expected >= 0",
        )
        if self.max_new_tokens is not None and self.min_new_tokens is not None:
            _check(
                self.min_new_tokens <= self.max_new_tokens,
                f"min_new_tokens={self.min_new_tokens} exceeds max_new_tokens={self.max_new_tokens}",
            )
        _check(
            self.temperature is None or self.temperature > 0,
            f"temperature={self.temperature}; expected > 0 (use do_sample=False for greedy decoding)",
        )
        _check(self.top_p is None or 0 < self.top_p <= 1, f"top_p={self.top_p}; expected 0 < top_p <= 1")
        _check(self.top_k is None or self.top_k >= 0, f"top_k={self.top_k}; expected >= 0")
        _check(self.num_beams is None or self.num_beams >= 1, f"num_beams={self.num_beams}; expected >= 1")
        _check(
            self.repetition_penalty is None or self.repetition_penalty > 0,
            f"repetition_penalty={self.repetition_penalty}; expected > 0",
        )
        _check(
            isinstance(self.extra, Mapping),
            f"extra must be a mapping of generate() keywords, got {type(self.extra).__name__}",
        )
        clash = sorted(
            k for k in self.extra if k in {f.name for f in dataclasses.fields(self)} and getattr(self, k) is not None
        )
        _check(not clash, f"extra repeats the named option(s) {clash}, which are already set")
        object.__setattr__(self, "extra", dict(self.extra))

    @classmethod
    def from_value(cls, value: GenerationOptions | Mapping[str, Any] | Any | None) -> GenerationOptions:
        """From the card's ``generation_config``: None, a dict of ``generate`` kwargs or a GenerationConfig.

        Dict keys that are not named fields, and named ones whose value is None, go to ``extra`` unchanged,
        so ``to_generate_kwargs()`` passes exactly what the caller passed.
        """
        if value is None:
            return cls()
        if isinstance(value, GenerationOptions):
            return value
        if isinstance(value, Mapping):
            named = {f.name for f in dataclasses.fields(cls)} - {"extra", "base"}
            fields = {k: v for k, v in value.items() if k in named and v is not None}
            return cls(**fields, extra={k: v for k, v in value.items() if k not in fields})
        if type(value).__name__ == "GenerationConfig" or hasattr(value, "to_diff_dict"):
            return cls(base=value)
        raise RequestError(f"generation options must be a dict or a GenerationConfig, got {type(value).__name__}")

    def to_generate_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``generate`` (a fresh dict; the options stay unchanged)."""
        out: dict[str, Any] = {} if self.base is None else {"generation_config": self.base}
        for f in dataclasses.fields(self):
            if f.name not in ("extra", "base") and getattr(self, f.name) is not None:
                out[f.name] = getattr(self, f.name)
        out.update(self.extra)
        return out


@dataclass(frozen=True, eq=False)  # identity equality: comparing tensors elementwise has no single truth value
class Visuals:
    """Preprocessed images of one request: float32[sum tiles, 3, S, S], tiles per image, prompt prefix.

    ``prefix`` (``"Image-1: <image>\\n..."`` for several images, ``"Frame1: <image>\\n..."`` for video,
    "" otherwise) is put before the question of the first turn (no history), where the placeholders belong.
    """

    pixel_values: torch.Tensor
    num_patches_list: tuple[int, ...]
    prefix: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.pixel_values, torch.Tensor) or self.pixel_values.ndim != 4:
            raise DataFormatError(
                f"pixel_values must be a float[tiles, 3, S, S] tensor, got "
                f"{getattr(self.pixel_values, 'shape', type(self.pixel_values).__name__)}"
            )
        patches = tuple(int(n) for n in self.num_patches_list)
        if sum(patches) != self.pixel_values.shape[0]:
            raise DataFormatError(
                f"pixel_values has {self.pixel_values.shape[0]} tiles but num_patches_list={list(patches)} "
                f"sums to {sum(patches)}"
            )
        object.__setattr__(self, "num_patches_list", patches)

    @classmethod
    def from_tiles(
        cls, pixel_values: torch.Tensor | None, num_patches_list: Sequence[int] | None = None
    ) -> Visuals | None:
        """The card's ``(pixel_values, num_patches_list)``: None means all tiles form one image."""
        if pixel_values is None:
            if num_patches_list:
                raise DataFormatError(f"num_patches_list={list(num_patches_list)} given without pixel_values")
            return None
        patches = list(num_patches_list) if num_patches_list is not None else [pixel_values.shape[0]]
        return cls(pixel_values, tuple(patches))


def _history(value: Iterable[Sequence[str]] | None) -> History | None:
    if value is None:
        return None
    pairs = []
    for i, turn in enumerate(value):
        _check(
            isinstance(turn, (tuple, list)) and len(turn) == 2 and all(isinstance(t, str) for t in turn),
            f"history[{i}] must be a (question, answer) pair of strings, got {turn!r}",
        )
        pairs.append((turn[0], turn[1]))
    return tuple(pairs)


@dataclass(frozen=True)
class ChatRequest:
    """One assistant turn to generate.

    Attributes:
        question: the user turn. With images, no history and no ``<image>``, ``"<image>\\n"`` is prepended
            (the reference's rule); several ``images`` get ``"Image-1: <image>\\n..."`` instead.
        images: PIL images or paths, preprocessed with the checkpoint's settings (exclusive with ``visuals``);
            their numbered prefix is added only when the question has no ``<image>`` of its own.
        visuals: already preprocessed tiles (`ChatPipeline.prepare_images` / ``prepare_video``, or the
            card's ``pixel_values`` via `Visuals.from_tiles`); their ``prefix`` is always used on the first
            turn (the card's video_chat), so set it to "" to place the placeholders yourself.
        history: earlier (question, answer) pairs; their ``<image>`` placeholders take the first images.
            None and () differ as in the reference: only None allows the automatic ``<image>`` insertion.
        system_message: overrides the pipeline's system message for this request.
        options: decoding settings (a dict is converted with `GenerationOptions.from_value`).
    """

    question: str
    images: tuple[ImageInput, ...] = ()
    visuals: Visuals | None = None
    history: History | None = None
    system_message: str | None = None
    options: GenerationOptions = field(default_factory=GenerationOptions)

    def __post_init__(self) -> None:
        _check(isinstance(self.question, str), f"question must be a string, got {type(self.question).__name__}")
        images = (self.images,) if isinstance(self.images, (str, os.PathLike, Image.Image)) else tuple(self.images)
        for i, im in enumerate(images):
            _check(
                isinstance(im, (str, os.PathLike, Image.Image)),
                f"images[{i}] must be a path or a PIL image, got {type(im).__name__}",
            )
        _check(not (images and self.visuals is not None), "give images or visuals, not both")
        _check(
            self.visuals is None or isinstance(self.visuals, Visuals),
            f"visuals must be Visuals, got {type(self.visuals).__name__}",
        )
        _check(
            self.system_message is None or isinstance(self.system_message, str),
            f"system_message must be a string, got {type(self.system_message).__name__}",
        )
        object.__setattr__(self, "images", images)
        object.__setattr__(self, "history", _history(self.history))
        if not isinstance(self.options, GenerationOptions):
            object.__setattr__(self, "options", GenerationOptions.from_value(self.options))

    @classmethod
    def from_messages(
        cls,
        messages: Sequence[Message | Mapping[str, Any]],
        options: GenerationOptions | Mapping[str, Any] | None = None,
    ) -> ChatRequest:
        """From chat-completions style messages: optional system first, then user/assistant turns ending
        with a user turn. A user turn's images without ``<image>`` placeholders get them prepended."""
        msgs = [m if isinstance(m, Message) else Message(**dict(m)) for m in messages]
        system = None
        if msgs and msgs[0].role == "system":
            system, msgs = msgs[0].content, msgs[1:]
        _check(bool(msgs) and msgs[-1].role == "user", "messages must end with a user message")
        images: list[ImageInput] = []
        turns: list[str] = []
        for i, m in enumerate(msgs):
            expected = "user" if i % 2 == 0 else "assistant"
            _check(
                m.role == expected,
                f"message {i + (system is not None)}: role {m.role!r}, expected {expected!r} "
                "(one optional system message, then alternating user/assistant)",
            )
            _check(
                not (m.images and m.role != "user"),
                f"message {i + (system is not None)}: only user messages carry images",
            )
            text = m.content
            if m.images and "<image>" not in text:
                if len(m.images) == 1:
                    text = "<image>\n" + text
                else:
                    first = len(images) + 1
                    text = "".join(f"Image-{first + k}: <image>\n" for k in range(len(m.images))) + text
            images.extend(m.images)
            turns.append(text)
        history = tuple(zip(turns[:-1:2], turns[1:-1:2], strict=True)) or None
        return cls(
            turns[-1],
            images=tuple(images),
            history=history,
            system_message=system,
            options=GenerationOptions.from_value(options),
        )


@dataclass(frozen=True)
class Message:
    """One chat message: ``role`` is system / user / assistant; user messages may carry images."""

    role: str
    content: str
    images: tuple[ImageInput, ...] = ()

    def __post_init__(self) -> None:
        _check(self.role in ("system", "user", "assistant"), f"role {self.role!r}; expected system, user or assistant")
        _check(isinstance(self.content, str), f"content must be a string, got {type(self.content).__name__}")
        object.__setattr__(self, "images", tuple(self.images))


@dataclass(frozen=True)
class ChatResponse:
    """The answer to one `ChatRequest`.

    ``finish_reason`` is "stop" when the model ended its turn (the end-of-turn token) and "length" when
    ``max_new_tokens`` (or another limit) cut it; ``completion_tokens`` counts generated ids up to and
    including the end-of-turn token; ``history`` is the request's history plus this turn.
    """

    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    history: History

    def __post_init__(self) -> None:
        if self.finish_reason not in FINISH_REASONS:
            raise ValueError(f"finish_reason {self.finish_reason!r}; expected one of {FINISH_REASONS}")

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens
