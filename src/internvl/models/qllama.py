"""QLLaMA: the LLaMA of InternVL-G whose query tokens cross-attend to InternViT features.

It is a plain LLaMA-7B layout (no GQA, no biases, RoPE base 10000) in which every layer with
``idx % cross_attention_frequency == 0`` also owns a ``cross_attn`` block. That block runs only on
the first ``num_query_token`` positions, and only when the current input is at least that long and
vision features are given. So it runs for ``get_image_features`` and on the first step of
captioning, never on cached decoding steps (one token) or on text-only inputs.

Parameter names equal the official ones (``model.layers.N.{self_attn,cross_attn,mlp,...}``,
``model.embed_tokens``, ``model.norm``, ``lm_head``) so the ``qllama.*`` keys of a checkpoint load
as stored. The class subclasses transformers' `PreTrainedModel` and `GenerationMixin`, so captioning
uses transformers' ``generate`` (greedy, beam search, KV cache in a `DynamicCache`) exactly as the
reference did.

Masks follow the reference (HF 4.28 style): additive, in the dtype of the embeddings, with
``finfo.min`` for blocked positions. A 4D mask passed in is used as given (the reference's
``forward_train``); a 2D key-padding mask (or None) is turned into causal + padding, and
``use_zero_attention_mask`` opens the query-query block (queries attend to each other both ways).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint
from transformers import GenerationMixin, PretrainedConfig, PreTrainedModel
from transformers.activations import ACT2FN
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast

from internvl.core.compat import model_output, output_cache, pop_cache
from internvl.core.errors import ConfigError
from internvl.core.tokens import IGNORE_INDEX

ROPE_BASE = 10000.0  # hard-coded in the reference; config rope_theta / rope_scaling are ignored


class QLlamaConfig(PretrainedConfig):
    """LLaMA config plus the three QLLaMA fields.

    ``model_type`` stays ``"llama"`` because that is what the official ``qllama_config`` records.
    ``vision_hidden_size`` (input width of the cross-attention keys/values) is 3200 in the reference,
    where it is hard-coded to InternViT-6B's width.
    """

    model_type = "llama"

    def __init__(
        self,
        vocab_size: int = 49954,
        hidden_size: int = 4096,
        intermediate_size: int = 11008,
        num_hidden_layers: int = 32,
        num_attention_heads: int = 32,
        hidden_act: str = "silu",
        max_position_embeddings: int = 2048,
        initializer_range: float = 0.02,
        rms_norm_eps: float = 1e-6,
        use_cache: bool = True,
        pad_token_id: int | None = 0,
        bos_token_id: int = 1,
        eos_token_id: int = 2,
        tie_word_embeddings: bool = False,
        cross_attention_frequency: int = 2,
        num_query_token: int = 96,
        vision_hidden_size: int = 3200,
        **kwargs,
    ) -> None:
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.intermediate_size = intermediate_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.hidden_act = hidden_act
        self.max_position_embeddings = max_position_embeddings
        self.initializer_range = initializer_range
        self.rms_norm_eps = rms_norm_eps
        self.use_cache = use_cache
        self.cross_attention_frequency = cross_attention_frequency
        self.num_query_token = num_query_token
        self.vision_hidden_size = vision_hidden_size
        if hidden_size % num_attention_heads:
            raise ConfigError(
                f"qllama_config.hidden_size={hidden_size} is not divisible by num_attention_heads={num_attention_heads}"
            )
        if cross_attention_frequency < 1:
            raise ConfigError(f"qllama_config.cross_attention_frequency={cross_attention_frequency}; expected >= 1")
        if hidden_act not in ACT2FN:
            raise ConfigError(f"qllama_config.hidden_act={hidden_act!r} is not a known activation")
        super().__init__(
            pad_token_id=pad_token_id,
            bos_token_id=bos_token_id,
            eos_token_id=eos_token_id,
            tie_word_embeddings=tie_word_embeddings,
            **kwargs,
        )

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    def has_cross_attention(self, layer_idx: int) -> bool:
        return layer_idx % self.cross_attention_frequency == 0


# -- masks ------------------------------------------------------------------------------------------
def causal_mask(
    batch_size: int, length: int, past_length: int, dtype: torch.dtype, device: torch.device
) -> torch.Tensor:
    """Additive causal mask float[B, 1, L, past+L]: row i sees past columns and columns <= past+i."""
    rows = torch.arange(length, device=device)[:, None] + past_length
    cols = torch.arange(past_length + length, device=device)[None, :]
    mask = torch.zeros(length, past_length + length, dtype=dtype, device=device)
    mask.masked_fill_(cols > rows, torch.finfo(dtype).min)
    return mask[None, None].expand(batch_size, 1, length, past_length + length)


def padding_mask(mask_2d: torch.Tensor, dtype: torch.dtype, target_length: int) -> torch.Tensor:
    """Key-padding mask float[B, 1, T, S] from a 0/1 (or bool) mask[B, S]; every query row is the same."""
    b, s = mask_2d.shape
    blocked = (mask_2d == 0)[:, None, None, :].expand(b, 1, target_length, s)
    return torch.zeros(blocked.shape, dtype=dtype, device=mask_2d.device).masked_fill(blocked, torch.finfo(dtype).min)


def combine_masks(*masks: torch.Tensor) -> torch.Tensor:
    """Sum of additive masks, saturated at ``finfo.min``.

    The reference adds the masks (min + min overflows to -inf) and clamps the attention scores at
    ``finfo.min``; saturating the mask gives the same softmax and keeps SDPA free of -inf rows.
    """
    out = masks[0]
    for m in masks[1:]:
        out = out + m
    return out.clamp(min=torch.finfo(out.dtype).min)


# -- layers -----------------------------------------------------------------------------------------
class QLlamaRMSNorm(nn.Module):
    """LLaMA RMSNorm: statistics in float32; cast to the weight dtype only for half weights (reference order)."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        if self.weight.dtype in (torch.float16, torch.bfloat16):
            h = h.to(self.weight.dtype)
        return self.weight * h


def rope_table(head_dim: int, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """float32 cos/sin [length, d] computed on the CPU, as the reference's cached buffers are.

    The reference builds its table at construction (on the CPU) and moves it with the model, so on a
    GPU its values are the CPU's float32 cos/sin; CUDA's cos/sin may differ in the last bit.
    """
    inv_freq = 1.0 / (ROPE_BASE ** (torch.arange(0, head_dim, 2).float() / head_dim))
    freqs = torch.arange(length, dtype=torch.float32)[:, None] * inv_freq  # (length, d/2)
    emb = torch.cat([freqs, freqs], dim=-1)  # (length, d)
    return emb.cos(), emb.sin()


def rotary_cos_sin(
    position_ids: torch.Tensor,
    head_dim: int,
    dtype: torch.dtype,
    table: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin float[B, 1, L, d] for ``position_ids`` long[B, L], cast to the activation dtype.

    Rows come from ``table`` (a `rope_table` on the positions' device) where the position is inside
    it, else are computed in float32 as ``pos * inv_freq`` (the same single multiply as the table).
    Both are selected without reading the positions on the host (no device sync).
    """
    inv_freq = 1.0 / (ROPE_BASE ** (torch.arange(0, head_dim, 2, device=position_ids.device).float() / head_dim))
    freqs = position_ids.float()[..., None] * inv_freq  # (B, L, d/2)
    emb = torch.cat([freqs, freqs], dim=-1)  # (B, L, d)
    cos, sin = emb.cos(), emb.sin()
    if table is not None:
        length = table[0].shape[0]
        idx = position_ids.clamp(0, length - 1)
        inside = ((position_ids >= 0) & (position_ids < length))[..., None]  # (B, L, 1)
        cos = torch.where(inside, table[0][idx], cos)
        sin = torch.where(inside, table[1][idx], sin)
    return cos.to(dtype)[:, None], sin.to(dtype)[:, None]


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat([-x[..., half:], x[..., :half]], dim=-1)


class QLlamaAttention(nn.Module):
    """Causal self-attention with RoPE applied before the KV cache is extended."""

    def __init__(self, config: QLlamaConfig, layer_idx: int) -> None:
        super().__init__()
        h = config.hidden_size
        self.num_heads = config.num_attention_heads
        self.head_dim = config.head_dim
        self.layer_idx = layer_idx
        self.q_proj = nn.Linear(h, h, bias=False)
        self.k_proj = nn.Linear(h, h, bias=False)
        self.v_proj = nn.Linear(h, h, bias=False)
        self.o_proj = nn.Linear(h, h, bias=False)

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor | None,
        cos_sin: tuple[torch.Tensor, torch.Tensor],
        cache=None,
    ) -> torch.Tensor:
        b, n, _ = x.shape
        q = self.q_proj(x).view(b, n, self.num_heads, self.head_dim).transpose(1, 2)  # (B, H, L, d)
        k = self.k_proj(x).view(b, n, self.num_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, n, self.num_heads, self.head_dim).transpose(1, 2)
        cos, sin = cos_sin
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        if cache is not None:
            k, v = cache.update(k, v, self.layer_idx)  # (B, H, past+L, d)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (B, H, L, d)
        return self.o_proj(out.transpose(1, 2).reshape(b, n, -1))


class QLlamaCrossAttention(nn.Module):
    """Query tokens attend to (RMS-normed) vision features; no mask, no RoPE, no gate."""

    def __init__(self, config: QLlamaConfig) -> None:
        super().__init__()
        h, dv = config.hidden_size, config.vision_hidden_size
        self.num_heads = config.num_attention_heads
        self.head_dim = config.head_dim
        self.norm1 = QLlamaRMSNorm(h, config.rms_norm_eps)
        self.q_proj = nn.Linear(h, h, bias=False)
        self.norm2 = QLlamaRMSNorm(dv, config.rms_norm_eps)
        self.k_proj = nn.Linear(dv, h, bias=False)
        self.v_proj = nn.Linear(dv, h, bias=False)
        self.o_proj = nn.Linear(h, h, bias=False)

    def forward(self, queries: torch.Tensor, vision: torch.Tensor, repeat_time: int = 1) -> torch.Tensor:
        bq, nq, _ = queries.shape
        bv, nv, _ = vision.shape
        q = self.q_proj(self.norm1(queries)).view(bq, nq, self.num_heads, self.head_dim).transpose(1, 2)
        v_in = self.norm2(vision)
        k = self.k_proj(v_in).view(bv, nv, self.num_heads, self.head_dim).transpose(1, 2)  # (Bv, H, Nv, d)
        v = self.v_proj(v_in).view(bv, nv, self.num_heads, self.head_dim).transpose(1, 2)
        if repeat_time > 1:
            # Batch order [img0..imgB-1, img0..imgB-1, ...] matches a query batch of repeat_time chunks.
            k = k.repeat(repeat_time, 1, 1, 1)
            v = v.repeat(repeat_time, 1, 1, 1)
        out = F.scaled_dot_product_attention(q, k, v)  # (Bq, H, Nq, d)
        return self.o_proj(out.transpose(1, 2).reshape(bq, nq, -1))


class QLlamaMLP(nn.Module):
    def __init__(self, config: QLlamaConfig) -> None:
        super().__init__()
        h, i = config.hidden_size, config.intermediate_size
        self.gate_proj = nn.Linear(h, i, bias=False)
        self.up_proj = nn.Linear(h, i, bias=False)
        self.down_proj = nn.Linear(i, h, bias=False)
        self.act_fn = ACT2FN[config.hidden_act]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(self.act_fn(self.gate_proj(x)) * self.up_proj(x))


class QLlamaDecoderLayer(nn.Module):
    def __init__(self, config: QLlamaConfig, layer_idx: int) -> None:
        super().__init__()
        self.num_query_token = config.num_query_token
        self.self_attn = QLlamaAttention(config, layer_idx)
        if config.has_cross_attention(layer_idx):
            self.cross_attn = QLlamaCrossAttention(config)
        else:
            self.cross_attn = None
        self.mlp = QLlamaMLP(config)
        self.input_layernorm = QLlamaRMSNorm(config.hidden_size, config.rms_norm_eps)
        self.post_attention_layernorm = QLlamaRMSNorm(config.hidden_size, config.rms_norm_eps)

    def forward(
        self,
        h: torch.Tensor,
        mask: torch.Tensor | None,
        cos_sin: tuple[torch.Tensor, torch.Tensor],
        vision_hidden_states: torch.Tensor | None = None,
        repeat_time: int = 1,
        cache=None,
    ) -> torch.Tensor:
        h = h + self.self_attn(self.input_layernorm(h), mask, cos_sin, cache)
        nq = self.num_query_token
        if self.cross_attn is not None and vision_hidden_states is not None and h.shape[1] >= nq:
            queries, text = h[:, :nq], h[:, nq:]
            queries = queries + self.cross_attn(queries, vision_hidden_states, repeat_time)
            h = torch.cat([queries, text], dim=1)
        return h + self.mlp(self.post_attention_layernorm(h))


class QLlamaModel(nn.Module):
    """Embeddings, decoder layers and the final norm (``qllama.model.*``)."""

    def __init__(self, config: QLlamaConfig) -> None:
        super().__init__()
        self.config = config
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        self.layers = nn.ModuleList(QLlamaDecoderLayer(config, i) for i in range(config.num_hidden_layers))
        self.norm = QLlamaRMSNorm(config.hidden_size, config.rms_norm_eps)
        self.gradient_checkpointing = False
        self._rope_tables: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}  # not state

    def rope_tables(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """The CPU-computed RoPE table (``max_position_embeddings`` rows) on ``device``, built once per device."""
        if device not in self._rope_tables:
            cos, sin = rope_table(self.config.head_dim, self.config.max_position_embeddings)
            self._rope_tables[device] = (cos.to(device), sin.to(device))
        return self._rope_tables[device]

    def build_mask(
        self,
        attention_mask: torch.Tensor | None,
        batch_size: int,
        length: int,
        past_length: int,
        dtype: torch.dtype,
        device: torch.device,
        use_zero_attention_mask: bool = False,
    ) -> torch.Tensor | None:
        """The additive mask the reference builds (4D masks pass through, saturated at ``finfo.min``)."""
        if attention_mask is not None and attention_mask.ndim == 4:
            return combine_masks(attention_mask.to(dtype))
        if attention_mask is None:
            attention_mask = torch.ones(batch_size, past_length + length, dtype=torch.long, device=device)
        if attention_mask.shape != (batch_size, past_length + length):
            raise ValueError(
                f"attention_mask has shape {tuple(attention_mask.shape)}; "
                f"expected ({batch_size}, {past_length + length})"
                " (past + current length)"
            )
        parts = [padding_mask(attention_mask, dtype, length)]
        if length > 1:
            parts.append(causal_mask(batch_size, length, past_length, dtype, device))
        mask = combine_masks(*parts)
        if use_zero_attention_mask:
            nq = self.config.num_query_token
            mask = mask.clone()
            mask[:, :, :nq, :nq] = 0  # queries see each other both ways; they still cannot see the text
        return mask

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        cache=None,
        use_cache: bool = False,
        vision_hidden_states: torch.Tensor | None = None,
        repeat_time: int = 1,
        use_zero_attention_mask: bool = False,
        past_key_values=None,
    ) -> BaseModelOutputWithPast:
        """Run the decoder.

        Args:
            input_ids / inputs_embeds: long[B, L] or float[B, L, h] (exactly one).
            attention_mask: None (all valid), a 0/1 key mask long[B, past+L] (causal + padding is built),
                or a ready additive float[B, 1, L, past+L] mask used as given (the reference's
                ``forward_train``; pass zeros for fully bidirectional attention).
            position_ids: long[B, L]; default ``past .. past+L-1``.
            cache: a transformers `Cache` (e.g. `DynamicCache`) extended in place; ``past_key_values``
                is accepted as its older name.
            vision_hidden_states: float[Bv, Nv, vision_hidden_size] for the cross-attention layers.
            repeat_time: the query batch is ``repeat_time`` chunks of the Bv images (training).
            use_zero_attention_mask: make the query-query block bidirectional (captioning).

        Returns:
            ``last_hidden_state`` float[B, L, h] after the final norm, and the cache.
        """
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids and inputs_embeds")
        cache = pop_cache({}, past_key_values, cache)
        if inputs_embeds is None:
            inputs_embeds = self.embed_tokens(input_ids)
        b, n, _ = inputs_embeds.shape
        past_length = cache.get_seq_length() if cache is not None else 0
        if position_ids is None:
            position_ids = torch.arange(past_length, past_length + n, device=inputs_embeds.device)[None].expand(b, n)
        mask = self.build_mask(
            attention_mask, b, n, past_length, inputs_embeds.dtype, inputs_embeds.device, use_zero_attention_mask
        )
        table = self.rope_tables(position_ids.device) if position_ids.device.type != "meta" else None
        cos_sin = rotary_cos_sin(position_ids, self.config.head_dim, inputs_embeds.dtype, table)
        h = inputs_embeds
        for layer in self.layers:
            if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
                h = checkpoint(layer, h, mask, cos_sin, vision_hidden_states, repeat_time, None, use_reentrant=False)
            else:
                h = layer(h, mask, cos_sin, vision_hidden_states, repeat_time, cache)
        h = self.norm(h)
        return model_output(BaseModelOutputWithPast, last_hidden_state=h, cache=cache if use_cache else None)


class QLlamaForCausalLM(PreTrainedModel, GenerationMixin):
    """QLLaMA with its (untied) ``lm_head``; ``generate`` comes from transformers.

    Example:
        >>> out = qllama.generate(inputs_embeds=embeds, attention_mask=mask, vision_hidden_states=v,
        ...                       use_zero_attention_mask=True,
        ...                       num_beams=5, max_new_tokens=30, min_new_tokens=8)
    """

    config_class = QLlamaConfig
    base_model_prefix = "model"
    main_input_name = "input_ids"
    _no_split_modules = ["QLlamaDecoderLayer"]
    _supports_cache_class = True  # transformers 4.4x: build a DynamicCache for generate
    _supports_sdpa = True

    def __init__(self, config: QLlamaConfig) -> None:
        super().__init__(config)
        self.model = QLlamaModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    # transformers hooks -------------------------------------------------------------------------
    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=std)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=std)
        elif isinstance(module, QLlamaRMSNorm):
            nn.init.ones_(module.weight)

    def get_input_embeddings(self) -> nn.Embedding:
        return self.model.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.model.embed_tokens = value

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    def set_output_embeddings(self, value: nn.Linear) -> None:
        self.lm_head = value

    def set_gradient_checkpointing(self, enabled: bool = True) -> None:
        """Recompute each decoder layer in backward (non-reentrant) when training."""
        self.model.gradient_checkpointing = enabled

    # forward ------------------------------------------------------------------------------------
    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        cache=None,
        use_cache: bool | None = None,
        vision_hidden_states: torch.Tensor | None = None,
        use_zero_attention_mask: bool = False,
        repeat_time: int = 1,
        labels: torch.Tensor | None = None,
        logits_to_keep: int = 0,
        return_dict: bool | None = None,
        past_key_values=None,
        **kwargs,
    ) -> CausalLMOutputWithPast:
        """Logits float[B, L, V] (only the last ``logits_to_keep`` positions when > 0); shifted CE with ``labels``.

        The KV cache comes as ``cache`` (transformers >= 5.24) or ``past_key_values`` (earlier releases).
        """
        use_cache = self.config.use_cache if use_cache is None else use_cache
        out = self.model(
            input_ids=input_ids,
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=pop_cache(kwargs, past_key_values, cache),
            use_cache=use_cache,
            vision_hidden_states=vision_hidden_states,
            repeat_time=repeat_time,
            use_zero_attention_mask=use_zero_attention_mask,
        )
        h = out.last_hidden_state
        logits = self.lm_head(h[:, -logits_to_keep:] if logits_to_keep > 0 else h)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(
                logits[:, :-1].reshape(-1, logits.shape[-1]).float(),
                labels[:, 1:].reshape(-1),
                ignore_index=IGNORE_INDEX,
            )
        return model_output(CausalLMOutputWithPast, loss=loss, logits=logits, cache=output_cache(out))

    def prepare_inputs_for_generation(
        self,
        input_ids: torch.Tensor,
        past_key_values=None,
        attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        vision_hidden_states: torch.Tensor | None = None,
        use_zero_attention_mask: bool = False,
        use_cache: bool | None = None,
        cache=None,
        **kwargs,
    ) -> dict:
        """Inputs of one decoding step, independent of the transformers version's bookkeeping.

        First step: the prompt embeddings (queries + prompt text), or ``input_ids``. Later steps with
        a cache: only the newest token. Without a cache the prompt embeddings are re-run followed by
        the embedded generated tokens. Position ids are ``cumsum(mask) - 1`` (padded slots 1), as in
        the reference. The cache arrives under the name this transformers release uses (see
        `internvl.core.compat`).
        """
        cache = pop_cache(kwargs, past_key_values, cache)
        past_length = cache.get_seq_length() if cache is not None else 0
        inputs: dict = {}
        if past_length == 0:
            if inputs_embeds is not None:
                if input_ids is not None and input_ids.shape[1] > 0:  # no cache: generated ids follow the prompt
                    inputs_embeds = torch.cat([inputs_embeds, self.get_input_embeddings()(input_ids)], dim=1)
                inputs["inputs_embeds"] = inputs_embeds
                n = inputs_embeds.shape[1]
            else:
                inputs["input_ids"] = input_ids
                n = input_ids.shape[1]
        else:
            inputs["input_ids"] = input_ids[:, -1:]
            n = 1
        b = (inputs_embeds if "inputs_embeds" in inputs else inputs["input_ids"]).shape[0]
        device = (inputs_embeds if "inputs_embeds" in inputs else inputs["input_ids"]).device
        if attention_mask is not None:
            position_ids = attention_mask.long().cumsum(-1) - 1
            position_ids = position_ids.masked_fill(attention_mask == 0, 1)[:, -n:]
        else:
            position_ids = torch.arange(past_length, past_length + n, device=device)[None].expand(b, n)
        inputs.update(
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            use_cache=use_cache if use_cache is not None else cache is not None,
            vision_hidden_states=vision_hidden_states,
            use_zero_attention_mask=use_zero_attention_mask,
            logits_to_keep=1,
        )
        return inputs
