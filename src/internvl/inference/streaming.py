"""Streaming text out of ``generate``: pieces that always join to exactly the non-streamed answer.

That join is a product guarantee (the server streams these pieces to clients), so it does not depend on
transformers' ``TextIteratorStreamer``, whose chunking rules change between releases (5.24 emits
partial decodes of byte-fallback tokens that a later token rewrites). Here the whole generated id list
is decoded at every step, exactly as the final answer is decoded, and only text that no later token
can change is released:

* the text of a trailing run of byte-fallback tokens (``<0xNN>``): SentencePiece decodes such a run as
  a unit, so a byte that decoded to "0" on its own becomes U+FFFD once an invalid byte follows it
  (a skipped special token between two byte tokens does not end the run: the bytes still join);
* trailing U+FFFD: an incomplete UTF-8 sequence (a multi-byte character split over byte-level BPE
  tokens) decodes to replacement characters until its last byte arrives;
* trailing whitespace: a following token may be merged with it by the tokenizer's clean-up rules.

Whatever is held back is released when generation ends, so lone invalid bytes still appear as U+FFFD
exactly where the non-streamed decode puts them.
"""

from __future__ import annotations

import logging
import queue
import re
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch

log = logging.getLogger(__name__)

REPLACEMENT_CHARACTER = "\ufffd"
BYTE_TOKEN = re.compile(r"<0x[0-9A-Fa-f]{2}>")


class IncrementalDecoder:
    """Growing token ids -> text pieces whose concatenation equals ``tokenizer.decode(all ids)``."""

    def __init__(self, tokenizer: Any, skip_special_tokens: bool = True) -> None:
        self.tokenizer = tokenizer
        self.skip_special_tokens = skip_special_tokens
        self.ids: list[int] = []
        self.byte_run_start = 0  # ids[byte_run_start:] are byte-fallback tokens whose text may still change
        self.emitted = ""
        self._transparent_cache: dict[int, bool] = {}

    def _transparent(self, token_id: int) -> bool:
        """A token that decodes to nothing (a skipped special token): byte runs continue across it."""
        if token_id not in self._transparent_cache:
            self._transparent_cache[token_id] = self._decode([token_id]) == ""
        return self._transparent_cache[token_id]

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=self.skip_special_tokens)

    def _release(self, text: str) -> str:
        if not text.startswith(self.emitted):
            # A tokenizer whose decode of a prefix is not a prefix of the full decode: hold everything
            # until it agrees again (never send text that a later token would contradict).
            log.debug("decoded text no longer extends the streamed text; holding back")
            return ""
        piece = text[len(self.emitted) :]
        self.emitted = text
        return piece

    def push(self, ids: Iterable[int]) -> str:
        """Add new ids; return the newly stable text ('' while it is held back)."""
        new = [int(i) for i in ids]
        for offset, (i, token) in enumerate(zip(new, self.tokenizer.convert_ids_to_tokens(new), strict=True)):
            if not (isinstance(token, str) and BYTE_TOKEN.fullmatch(token)) and not self._transparent(i):
                self.byte_run_start = len(self.ids) + offset + 1
        self.ids.extend(new)
        stable = self._decode(self.ids[: self.byte_run_start]).rstrip(REPLACEMENT_CHARACTER).rstrip()
        return self._release(stable) if len(stable) > len(self.emitted) else ""

    def finish(self) -> str:
        """All remaining text, including held-back whitespace and replacement characters."""
        return self._release(self._decode(self.ids))


class TextPieceStreamer:
    """A ``generate(streamer=...)`` target for batch size 1 that yields stable text pieces.

    ``generate`` calls `put` with the prompt first (skipped) and then with each new token; `end` marks
    the end. Iterate it from another thread; ``timeout`` (seconds) bounds each wait for a piece.
    """

    def __init__(self, tokenizer: Any, timeout: float | None = None, skip_special_tokens: bool = True) -> None:
        self.decoder = IncrementalDecoder(tokenizer, skip_special_tokens=skip_special_tokens)
        self.timeout = timeout
        self.pieces: queue.Queue[str | None] = queue.Queue()
        self._prompt_seen = False
        self._ended = False

    def put(self, value: torch.Tensor) -> None:
        if value.ndim > 1:
            if value.shape[0] != 1:
                raise ValueError("streaming supports batch size 1 (use batch_chat for several prompts)")
            value = value[0]
        if not self._prompt_seen:
            self._prompt_seen = True
            return
        piece = self.decoder.push(value.tolist())
        if piece:
            self.pieces.put(piece)

    def end(self) -> None:
        """Release the held-back text and signal the end (idempotent: the worker calls it on errors too)."""
        if self._ended:
            return
        self._ended = True
        piece = self.decoder.finish()
        if piece:
            self.pieces.put(piece)
        self.pieces.put(None)

    def __iter__(self) -> Iterator[str]:
        while (piece := self.pieces.get(timeout=self.timeout)) is not None:
            yield piece

    def drain(self) -> None:
        """Wait for the end signal without a timeout, so the generating thread never blocks on us."""
        while self.pieces.get() is not None:
            pass


class CancelGeneration:
    """Stopping criterion that ends generation at the next step once `event` is set."""

    def __init__(self) -> None:
        self.event = threading.Event()

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device)


def cut_at_stop(chunks: Iterable[str], stop: str) -> Iterator[str]:
    """Re-chunk streamed text so the pieces join to ``full.split(stop)[0].strip()``.

    Leading whitespace is dropped, trailing whitespace and any partial ``stop`` prefix are held back
    until more text shows they belong to the answer.
    """
    full, emitted = "", ""
    for chunk in chunks:
        full += chunk
        done = bool(stop) and stop in full
        text = (full.split(stop)[0] if stop else full).lstrip().rstrip()
        if not done and stop:
            for k in range(min(len(stop) - 1, len(text)), 0, -1):
                if text.endswith(stop[:k]):
                    text = text[:-k].rstrip()
                    break
        if len(text) > len(emitted) and text.startswith(emitted):
            yield text[len(emitted) :]
            emitted = text
        if done:
            return
    final = (full.split(stop)[0] if stop else full).strip()
    if len(final) > len(emitted) and final.startswith(emitted):
        yield final[len(emitted) :]


def stream_generate(
    generate: Callable[[TextPieceStreamer, CancelGeneration], Any], streamer: TextPieceStreamer, stop: str
) -> Iterator[str]:
    """Run ``generate(streamer, cancel)`` in a background thread; yield its text cut at ``stop``.

    ``generate`` must pass ``streamer`` and the ``cancel`` stopping criterion to transformers' generate.
    Closing the iterator early cancels generation at its next step and joins the thread; an exception
    raised by ``generate`` is re-raised in the consumer's thread. ``streamer.decoder.ids`` holds the
    generated ids afterwards.
    """
    cancel = CancelGeneration()
    errors: list[BaseException] = []

    def work() -> None:
        try:
            generate(streamer, cancel)
        except BaseException as e:  # noqa: BLE001 (re-raised in the consumer's thread)
            errors.append(e)
        finally:
            streamer.end()

    exhausted = False

    def pieces() -> Iterator[str]:
        nonlocal exhausted
        yield from streamer
        exhausted = True

    thread = threading.Thread(target=work, name="internvl-generate", daemon=True)
    thread.start()
    try:
        yield from cut_at_stop(pieces(), stop)
    finally:
        cancel.event.set()  # generation stops at its next step
        if not exhausted:
            # Drain to the end signal without the consumer's timeout (the worker always sends it), so
            # an early stop or a consumer-side timeout never leaves the worker blocked.
            streamer.drain()
        thread.join()
    if errors:
        raise errors[0]
