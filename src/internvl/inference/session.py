"""`ChatSession`: multi-turn chat that only computes what is new in each turn.

The reference's ``chat(history=...)`` rebuilds the whole prompt every turn: it re-encodes every image
with the ViT and prefills the system message, all earlier turns and all image tokens again. A session
keeps, for one conversation,

* the language model's KV cache and the token ids it holds (the last prompt and the answer generated
  to it), and
* the visual features of the images it has seen (keyed by the content of their tiles, a few at most).

Each turn renders the prompt exactly as `ChatPipeline` does, finds the longest prefix the cache already
holds (same ids, and the same image behind every image-token run in it), crops the cache to that
prefix and prefills only the rest, encoding only images whose tokens fall in the rest and are not
already cached. So answers are the from-scratch path's: the same prompt ids and the same decoding,
only computed in pieces. A history edited by the caller, another system message or another image
shortens the shared prefix, down to a full rebuild. Memory is bounded: the cache is dropped once it
would hold more than ``max_cached_tokens`` tokens, and at most ``max_cached_images`` feature sets are kept.
Beam search (which reorders and expands the cache) and a request the cache cannot serve run through
the pipeline from scratch.

A session is one conversation used by one caller at a time (like the CLI's interactive chat).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from internvl.core.compat import (
    cache_kwargs,
    crop_cache,
    new_dynamic_cache,
    split_generation_kwargs,
    supports_cache_continuation,
)
from internvl.core.errors import RequestError
from internvl.inference.requests import ChatRequest, ChatResponse

if TYPE_CHECKING:
    from internvl.inference.pipeline import ChatPipeline, ChatStream, _Prepared


@dataclass(frozen=True)
class TurnStats:
    """What the last turn computed: prompt tokens taken from the cache, prefilled, and images encoded."""

    prompt_tokens: int
    reused_tokens: int
    prefilled_tokens: int
    encoded_images: int
    from_scratch: bool


@dataclass(frozen=True)
class _Span:
    """One image's run of ``<IMG_CONTEXT>`` ids in a prompt: [start, end) and the key of its tiles."""

    start: int
    end: int
    key: str


class ChatSession:
    """One conversation over a `ChatPipeline` that reuses its KV cache and image features (module doc).

    Args:
        pipeline: the loaded model, tokenizer and template.
        max_cached_tokens: the cache is dropped rather than grown past this many tokens.
        max_cached_images: visual feature sets kept (least recently used dropped first).
    """

    def __init__(self, pipeline: ChatPipeline, *, max_cached_tokens: int = 16384, max_cached_images: int = 8) -> None:
        if max_cached_tokens < 1 or max_cached_images < 0:
            raise RequestError(
                f"max_cached_tokens={max_cached_tokens}, max_cached_images={max_cached_images}; expected >= 1 and >= 0"
            )
        self.pipeline = pipeline
        self.max_cached_tokens = max_cached_tokens
        self.max_cached_images = max_cached_images
        self._cache: Any = None
        self._ids: list[int] = []  # the ids whose keys/values the cache holds (a prefix of them once generated)
        self._spans: list[_Span] = []
        self._features: OrderedDict[str, torch.Tensor] = OrderedDict()
        self.last: TurnStats | None = None

    def reset(self) -> None:
        """Drop the cache and the image features (a new conversation)."""
        self._cache, self._ids, self._spans = None, [], []
        self._features.clear()

    @property
    def cached_tokens(self) -> int:
        return self._cache.get_seq_length() if self._cache is not None else 0

    # -- turns -----------------------------------------------------------------------------------
    def answer(self, req: ChatRequest) -> ChatResponse:
        """One assistant turn; the same answer as ``pipeline.answer(req)``, computed from the cache."""
        pipe = self.pipeline
        p = pipe._prepare(req)
        run = self._runner(p)
        if run is None:
            return pipe.answer(req)
        out = run(**pipe._generate_kwargs(req.options))
        return pipe._response(p, pipe._decode(out)[0], out[0].tolist(), p.input_ids.shape[1])

    def stream(self, req: ChatRequest, *, timeout: float | None = None) -> ChatStream:
        """Stream one assistant turn (pieces join to `answer`'s text), computed from the cache."""
        pipe = self.pipeline
        p = pipe._prepare(req)
        run = self._runner(p)
        if run is None:
            return pipe.stream(req, timeout=timeout)
        return pipe._stream(p, run, timeout)

    # -- internals -------------------------------------------------------------------------------
    def _runner(self, p: _Prepared) -> Any:
        """A ``run(**generate_kwargs)`` that prefills only the new part of ``p``, or None to go from scratch."""
        pipe = self.pipeline
        n = p.input_ids.shape[1]
        gen = pipe._generate_kwargs(p.request.options)
        base = gen.get("generation_config") or pipe.model.generation_config
        # beam search / several sequences expand and reorder the cache: those run from scratch
        beams = max(int(gen.get(k, getattr(base, k, 1)) or 1) for k in ("num_beams", "num_return_sequences"))
        spans = self._image_spans(p)  # None: placeholders and images disagree (from scratch raises the error)
        if spans is None or beams > 1 or n > self.max_cached_tokens or n < 2 or not supports_cache_continuation():
            self.reset()
            self.last = TurnStats(n, 0, n, len(spans or ()), True)
            return None
        ids = p.input_ids[0].tolist()
        keep = self._shared_prefix(ids, spans, n - 1)  # the last prompt id is fed by generate itself
        encoded = self._prefill(p, ids, spans, keep)
        self.last = TurnStats(n, keep, n - keep, encoded, False)

        def run(**gen: Any) -> torch.Tensor:
            lm = pipe.model.language_model
            embeds = lm.get_input_embeddings()(p.input_ids.to(lm.get_input_embeddings().weight.device))
            # generate feeds only the positions the cache lacks (the last one); the others are never read.
            base_config = gen.pop("generation_config", None) or pipe.model.generation_config
            config, rest = split_generation_kwargs(base_config, {"use_cache": True, **gen})  # as model.generate
            try:
                out = lm.generate(
                    inputs_embeds=embeds,
                    attention_mask=torch.ones(1, n, dtype=torch.long, device=embeds.device),
                    generation_config=config,
                    **cache_kwargs(self._cache),
                    **rest,
                )
            except BaseException:
                self.reset()
                raise
            self._ids = (ids + out[0].tolist())[: self.cached_tokens]
            self._spans = spans
            if self.cached_tokens > self.max_cached_tokens:
                self._cache, self._ids, self._spans = None, [], []
            return out

        return run

    def _image_spans(self, p: _Prepared) -> list[_Span] | None:
        """The ``<IMG_CONTEXT>`` run of each image of the prompt, keyed by a hash of that image's tiles.

        None when the runs do not match the tiles (then the from-scratch path reports the mismatch).
        """
        pipe = self.pipeline
        mask = p.input_ids[0] == pipe.img_context_token_id
        tiles = p.pixel_values
        if not bool(mask.any()):
            return [] if tiles is None else None
        # runs of consecutive image-context ids: one per image (<img> ... </img> around each)
        zero = torch.zeros(1, dtype=torch.int8)
        edges = torch.diff(mask.to(torch.int8), prepend=zero, append=zero)
        starts = (edges == 1).nonzero().flatten().tolist()
        ends = (edges == -1).nonzero().flatten().tolist()
        runs = [e - s for s, e in zip(starts, ends, strict=True)]
        if tiles is None or any(r % pipe.num_image_token for r in runs):
            return None
        if sum(runs) != tiles.shape[0] * pipe.num_image_token:
            return None
        spans, tile = [], 0
        for s, e in zip(starts, ends, strict=True):
            k = (e - s) // pipe.num_image_token
            chunk = tiles[tile : tile + k].detach().cpu().contiguous()
            raw = chunk.reshape(-1).view(torch.uint8).numpy()  # any dtype (bf16 has no numpy type)
            digest = hashlib.sha1(raw.tobytes(), usedforsecurity=False).hexdigest()
            spans.append(_Span(s, e, f"{tuple(chunk.shape)}:{digest}"))
            tile += k
        return spans

    def _shared_prefix(self, ids: list[int], spans: list[_Span], limit: int) -> int:
        """How many leading positions the cache holds for this prompt (same ids, same images); crops to it."""
        if self._cache is None:
            return 0
        keep = 0
        for a, b in zip(self._ids, ids[:limit], strict=False):
            if a != b:
                break
            keep += 1
        # every image run inside the kept prefix must be the same image in both prompts (generated ids
        # may even contain <IMG_CONTEXT> where the new prompt has an image)
        old_runs = {s.start: s for s in self._spans}
        new_runs = {s.start: s for s in spans}
        for start in sorted(set(old_runs) | set(new_runs)):
            if start >= keep:
                break
            old, new = old_runs.get(start), new_runs.get(start)
            if old is None or new is None or new.key != old.key or new.end != old.end:
                keep = start  # another image (or none) behind the same placeholder ids
                break
        if keep == 0:
            self._cache, self._ids, self._spans = None, [], []
        else:
            crop_cache(self._cache, keep)
            self._ids = self._ids[:keep]
        return keep

    def _features_for(self, p: _Prepared, spans: list[_Span], needed: list[int]) -> tuple[dict[str, torch.Tensor], int]:
        """Visual features float[tokens, D] of the images ``needed`` (indices into ``spans``); encodes only new ones."""
        pipe = self.pipeline
        model = pipe.model
        found: dict[str, torch.Tensor] = {}
        missing: list[int] = []
        for i in needed:
            key = spans[i].key
            if key in self._features:
                self._features.move_to_end(key)
                found[key] = self._features[key]
            elif key not in found and i not in missing:
                missing.append(i)
        if missing:
            offsets, tile = [], 0
            for s in spans:
                offsets.append(tile)
                tile += (s.end - s.start) // pipe.num_image_token
            tiles = torch.cat(
                [
                    p.pixel_values[offsets[i] : offsets[i] + (spans[i].end - spans[i].start) // pipe.num_image_token]
                    for i in missing
                ]
            )
            vit = model.extract_feature(tiles.to(model.vision_model.device, model.vision_model.dtype))
            vit = vit.reshape(-1, vit.shape[-1])
            start = 0
            for i in missing:
                size = spans[i].end - spans[i].start
                found[spans[i].key] = vit[start : start + size]
                start += size
                if self.max_cached_images:
                    self._features[spans[i].key] = found[spans[i].key]
            while len(self._features) > self.max_cached_images:
                self._features.popitem(last=False)
        return found, len(missing)

    @torch.no_grad()
    def _prefill(self, p: _Prepared, ids: list[int], spans: list[_Span], keep: int) -> int:
        """Extend the cache with prompt positions [keep, n-1); returns how many images were encoded."""
        n = len(ids)
        stop = n - 1
        if self._cache is None:
            self._cache = new_dynamic_cache(self.pipeline.model.language_model.config)
        if stop <= keep:
            return 0
        lm = self.pipeline.model.language_model
        embedding = lm.get_input_embeddings()
        embeds = embedding(p.input_ids[:, keep:stop].to(embedding.weight.device))  # (1, stop-keep, D)
        needed = [i for i, s in enumerate(spans) if s.end > keep and s.start < stop]
        features, encoded = self._features_for(p, spans, needed)
        if needed:
            embeds = embeds.clone()
        for i in needed:
            s = spans[i]
            lo, hi = max(s.start, keep), min(s.end, stop)
            embeds[0, lo - keep : hi - keep] = features[s.key][lo - s.start : hi - s.start].to(embeds.dtype)
        try:
            lm.base_model(
                inputs_embeds=embeds,
                attention_mask=torch.ones(1, stop, dtype=torch.long, device=embeds.device),
                use_cache=True,
                **cache_kwargs(self._cache),
            )
        except BaseException:
            self.reset()
            raise
        self._ids = ids[:stop]
        self._spans = spans
        return encoded


__all__ = ["ChatSession", "TurnStats"]
