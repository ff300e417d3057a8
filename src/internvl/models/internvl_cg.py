"""InternVL-C and InternVL-G (InternVL 1.0, "InternVL-14B-224px"): InternViT-6B + QLLaMA.

One set of weights serves three uses (spec §0):

* InternVL-C image embedding: attention pooling (``clip_projector``) over all ViT tokens.
* InternVL-G image embedding: ``l2n(clip_projector(V)) + l2n(clip_projector2(Q))`` where Q are the 96
  QLLaMA query outputs that cross-attended to the ViT tokens.
* Text embedding (C and G): QLLaMA on the text alone (causal), hidden state at the last non-pad
  token (EOS) times ``text_projection``.
* Captioning: QLLaMA ``generate`` from ``[query tokens ; embed(<s> English caption:)]``.

Checkpoints are read in the official layout (``config.json`` + weights with the reference key names),
including those saved with peft LoRA wrappers (``use_backbone_lora`` / ``use_qllama_lora`` > 0),
whose adapters are merged at load time as the reference does.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from internvl.core.compat import cache_kwargs, new_dynamic_cache
from internvl.core.errors import CheckpointError, ConfigError
from internvl.core.specs import EMBEDDING_MODES, served_image_size
from internvl.models import checkpoint as ckpt
from internvl.models import registry
from internvl.models.intern_vit import PRESETS, InternViT, InternViTConfig
from internvl.models.qllama import QLlamaConfig, QLlamaForCausalLM, causal_mask, combine_masks, padding_mask

MODES = EMBEDDING_MODES
# Stored RoPE inv_freq buffers of older checkpoints are not state in this implementation.
IGNORED_KEYS = (r"rotary_emb\.inv_freq$",)
# Keys of the reference's qllama_config that we do not keep as attributes (transformers bookkeeping).
_QLLAMA_DROP = ("architectures", "_name_or_path", "transformers_version", "model_type")


@dataclass(frozen=True)
class InternVLConfig:
    """Composite configuration; reads and writes the official ``config.json`` schema (``model_type: internvl``)."""

    vision_config: InternViTConfig = field(default_factory=InternViTConfig)
    qllama_config: QLlamaConfig = field(default_factory=QLlamaConfig)
    clip_embed_dim: int = 768
    attn_pool_num_heads: int = 16
    num_query_token: int = 96
    label_smoothing: float = 0.0
    use_backbone_lora: int = 0
    use_qllama_lora: int = 0
    force_image_size: int | None = None
    initializer_range: float = 0.02
    extra: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    MODEL_TYPE = "internvl"

    def __post_init__(self) -> None:
        q, v = self.qllama_config, self.vision_config
        if q.num_query_token != self.num_query_token:
            # `from_dict` copies the top-level value into the QLLaMA half (as the reference constructor);
            # a config built in code must say the same thing twice rather than be silently rewritten.
            raise ConfigError(
                f"num_query_token={self.num_query_token} but qllama_config.num_query_token={q.num_query_token}; "
                "set both to the same value (from_dict copies the top-level one into qllama_config)"
            )
        if q.vision_hidden_size != v.hidden_size:
            raise ConfigError(
                f"qllama_config.vision_hidden_size={q.vision_hidden_size} but vision_config.hidden_size="
                f"{v.hidden_size}; QLLaMA cross-attention reads the ViT features, set both to {v.hidden_size}"
            )
        for dim, name in ((v.hidden_size, "vision_config.hidden_size"), (q.hidden_size, "qllama_config.hidden_size")):
            if dim % self.attn_pool_num_heads:
                raise ConfigError(f"{name}={dim} is not divisible by attn_pool_num_heads={self.attn_pool_num_heads}")
        if self.force_image_size is not None and self.force_image_size % v.patch_size:
            raise ConfigError(
                f"force_image_size={self.force_image_size} is not a multiple of patch_size={v.patch_size}"
            )

    @property
    def image_size(self) -> int:
        """``force_image_size`` when set, else ``vision_config.image_size`` (the one rule in core.specs)."""
        return served_image_size({"force_image_size": self.force_image_size, "vision_config": self.vision_config})

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> InternVLConfig:
        """Build from the official dict. ``cross_attention_frequency`` and ``num_query_token`` given at the
        top level override the QLLaMA sub-config (as the reference constructor does)."""
        if "vision_config" not in d or "qllama_config" not in d:
            raise ConfigError(
                f"config has no vision_config/qllama_config (model_type={d.get('model_type')!r}); "
                "expected an InternVL-C/G (InternVL-14B-224px style) config.json"
            )
        vision = InternViTConfig.from_dict(d["vision_config"])
        qd = {k: v for k, v in d["qllama_config"].items() if k not in _QLLAMA_DROP}
        if qd.get("rope_scaling") is None:
            qd.pop("rope_scaling", None)  # ignored by QLLaMA (fixed RoPE); avoids a transformers 5 warning
        for key in ("num_query_token", "cross_attention_frequency"):
            if d.get(key) is not None:
                qd[key] = d[key]
        qd.setdefault("vision_hidden_size", 3200)  # the reference's hard-coded InternViT-6B width
        qllama = QLlamaConfig(**qd)
        names = {f.name for f in dataclasses.fields(cls)} - {"vision_config", "qllama_config", "extra"}
        known = {k: d[k] for k in names if k in d and (d[k] is not None or k == "force_image_size")}
        extra = {k: v for k, v in d.items() if k not in names | {"vision_config", "qllama_config"}}
        known.setdefault("num_query_token", qllama.num_query_token)
        return cls(vision_config=vision, qllama_config=qllama, **known, extra=extra)

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike) -> InternVLConfig:
        return cls.from_dict(ckpt.read_config(path))

    def to_dict(self) -> dict[str, Any]:
        out = dict(self.extra)
        for f in dataclasses.fields(self):
            if f.name not in ("vision_config", "qllama_config", "extra"):
                out[f.name] = getattr(self, f.name)
        out["vision_config"] = self.vision_config.to_dict()
        q = self.qllama_config.to_dict()
        q["model_type"] = "llama"
        q.setdefault("architectures", ["LlamaForCausalLM"])
        out["qllama_config"] = q
        out["model_type"] = self.MODEL_TYPE
        out["hidden_size"] = self.qllama_config.hidden_size
        out.setdefault("architectures", ["InternVLModel"])
        return out


@dataclass
class ContrastiveOutput:
    """``logits_per_image`` float[Bi, Bt] = exp(logit_scale) * cos; ``logits_per_text`` its transpose;
    the (unnormalised) embeddings they came from."""

    logits_per_image: torch.Tensor
    logits_per_text: torch.Tensor
    image_embeds: torch.Tensor
    text_embeds: torch.Tensor


@dataclass
class RetrievalFeatures:
    """What the stage-2 retrieval losses read (spec §7.1), all unnormalised.

    ``backbone_embeds`` float[B, D]: ``clip_projector`` over the ViT tokens (the InternVL-C image
    embedding); ``query_embeds`` float[B, D]: ``clip_projector2`` over the queries of the contrastive
    chunk; ``text_embeds`` float[B, D]: EOS hidden state of the ``summarize:`` text times
    ``text_projection``; ``itm_logits`` float[2B, 2]: negatives first, then positives.
    """

    backbone_embeds: torch.Tensor
    query_embeds: torch.Tensor
    text_embeds: torch.Tensor
    itm_logits: torch.Tensor


class AttentionPoolingCrossAttention(nn.Module):
    """q/k/v linears without bias plus separate bias parameters (the reference's key layout)."""

    def __init__(self, dim: int, num_heads: int, out_dim: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.q = nn.Linear(dim, dim, bias=False)
        self.k = nn.Linear(dim, dim, bias=False)
        self.v = nn.Linear(dim, dim, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(dim))
        self.k_bias = nn.Parameter(torch.zeros(dim))
        self.v_bias = nn.Parameter(torch.zeros(dim))
        self.proj = nn.Linear(dim, out_dim)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        b, nq, c = q.shape
        nk = k.shape[1]
        q = F.linear(q, self.q.weight, self.q_bias).view(b, nq, self.num_heads, self.head_dim).transpose(1, 2)
        k = F.linear(k, self.k.weight, self.k_bias).view(b, nk, self.num_heads, self.head_dim).transpose(1, 2)
        v = F.linear(v, self.v.weight, self.v_bias).view(b, nk, self.num_heads, self.head_dim).transpose(1, 2)
        out = F.scaled_dot_product_attention(q, k, v)  # (B, heads, Nq, hd)
        return self.proj(out.transpose(1, 2).reshape(b, nq, c))


class AttentionPoolingBlock(nn.Module):
    """Pool tokens float[B, L, c] into one vector float[B, out]: the mean token queries all tokens.

    LayerNorms use eps 1e-5 (``nn.LayerNorm`` default, as in the reference).
    """

    def __init__(self, dim: int, num_heads: int, out_dim: int) -> None:
        super().__init__()
        self.norm1_q = nn.LayerNorm(dim)
        self.norm1_k = nn.LayerNorm(dim)
        self.norm1_v = nn.LayerNorm(dim)
        self.cross_attn = AttentionPoolingCrossAttention(dim, num_heads, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x_q = x.mean(1, keepdim=True)  # (B, 1, c); the mean includes the class token
        out = self.cross_attn(self.norm1_q(x_q), self.norm1_k(x), self.norm1_v(x))  # (B, 1, out)
        return out.squeeze(1)


class InternVLModel(nn.Module):
    """InternVL-C / InternVL-G.

    Example:
        >>> model = InternVLModel.from_pretrained("InternVL-14B-224px", dtype="fp16", device="cuda")
        >>> img = model.encode_image(pixel_values, mode="InternVL-G")   # float[B, 768]
        >>> txt = model.encode_text(input_ids)                           # float[B, 768]
    """

    def __init__(self, config: InternVLConfig) -> None:
        super().__init__()
        self.config = config
        vcfg = config.vision_config
        if config.force_image_size and config.force_image_size != vcfg.image_size:
            # The reference resizes the position table before loading, so it has the forced size.
            vcfg = dataclasses.replace(vcfg, image_size=config.force_image_size)
        self.vision_model = InternViT(vcfg)
        q = config.qllama_config
        self.qllama = QLlamaForCausalLM(q)
        self.query_tokens = nn.Parameter(torch.zeros(1, config.num_query_token, q.hidden_size))
        self.text_projection = nn.Parameter(torch.empty(q.hidden_size, config.clip_embed_dim))
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        self.clip_projector = AttentionPoolingBlock(vcfg.hidden_size, config.attn_pool_num_heads, config.clip_embed_dim)
        self.clip_projector2 = AttentionPoolingBlock(q.hidden_size, config.attn_pool_num_heads, config.clip_embed_dim)
        self.itm_head = nn.Linear(q.hidden_size, 2)

    # -- properties -------------------------------------------------------------------------------
    @property
    def dtype(self) -> torch.dtype:
        return self.query_tokens.dtype

    @property
    def device(self) -> torch.device:
        return self.query_tokens.device

    @property
    def image_size(self) -> int:
        """Input size of the evaluation transforms: ``force_image_size`` or the vision ``image_size``."""
        return self.config.image_size

    # -- features ---------------------------------------------------------------------------------
    def get_text_features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """QLLaMA on the text alone (no queries, no vision): causal + padding. Returns float[B, L, h]."""
        embeds = self.qllama.get_input_embeddings()(input_ids)  # (B, L, h)
        out = self.qllama.model(inputs_embeds=embeds, attention_mask=attention_mask, use_cache=False)
        return out.last_hidden_state

    def get_image_features(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (``backbone_embeds`` float[B, N, Dv], ``query_out`` float[B, nq, h]).

        The queries attend to each other bidirectionally (all-zero mask) and cross-attend to the ViT
        tokens in every ``cross_attention_frequency``-th layer.
        """
        vision = self.vision_model(pixel_values).last_hidden_state  # (B, N, Dv)
        b = vision.shape[0]
        queries = self.query_tokens.expand(b, -1, -1)
        zeros = torch.zeros(b, 1, queries.shape[1], queries.shape[1], dtype=queries.dtype, device=queries.device)
        out = self.qllama.model(inputs_embeds=queries, attention_mask=zeros, vision_hidden_states=vision)
        return vision, out.last_hidden_state

    def encode_image(self, pixel_values: torch.Tensor, mode: str = "InternVL-C") -> torch.Tensor:
        """Image embedding float[B, clip_embed_dim]: C is unnormalised, G is the sum of two unit vectors."""
        _check_mode(mode)
        if mode == "InternVL-C":
            return self.clip_projector(self.vision_model(pixel_values).last_hidden_state)
        vision, query_out = self.get_image_features(pixel_values)
        backbone = self.clip_projector(vision)
        queries = self.clip_projector2(query_out)
        # L2 normalisation without eps, as in the reference.
        return backbone / backbone.norm(dim=1, keepdim=True) + queries / queries.norm(dim=1, keepdim=True)

    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Text embedding float[B, clip_embed_dim] from right-padded ids long[B, L].

        ``attention_mask`` (1 = token) defaults to ``input_ids > 0``: the C/G tokenizer pads with id 0, the
        reference's rule; pass it explicitly for a tokenizer with another pad id.
        """
        mask = input_ids > 0 if attention_mask is None else attention_mask.to(torch.bool)
        hidden = self.get_text_features(input_ids, mask)  # (B, L, h)
        last = mask.sum(1) - 1  # index of EOS (the last non-pad token)
        eos_hidden = hidden[torch.arange(hidden.shape[0], device=hidden.device), last]  # (B, h)
        return eos_hidden @ self.text_projection

    def forward(
        self, pixel_values: torch.Tensor, input_ids: torch.Tensor, mode: str = "InternVL-C"
    ) -> ContrastiveOutput:
        """Scaled cosine similarities between every image and every text."""
        image = self.encode_image(pixel_values, mode)
        text = self.encode_text(input_ids)
        image_n = image / image.norm(dim=1, keepdim=True)
        text_n = text / text.norm(dim=1, keepdim=True)
        logits_per_image = self.logit_scale.exp() * image_n @ text_n.t()
        return ContrastiveOutput(logits_per_image, logits_per_image.t(), image, text)

    # -- stage-2 training ---------------------------------------------------------------------------
    def retrieval_features(
        self,
        pixel_values: torch.Tensor,
        positive_input_ids: torch.Tensor,
        positive_attention_mask: torch.Tensor,
        negative_input_ids: torch.Tensor,
        negative_attention_mask: torch.Tensor,
        summarize_input_ids: torch.Tensor,
        summarize_attention_mask: torch.Tensor,
    ) -> RetrievalFeatures:
        """The training forward of the reference's stage-2 retrieval model (spec §7.1-7.2), without the losses.

        One QLLaMA pass over 3B rows ``[negative ; positive ; summarize]`` (row b of each chunk pairs
        with image b through the repeated cross-attention keys), each row ``[queries ; text]``. The two
        ITM chunks attend bidirectionally over queries and non-pad text; in the contrastive chunk the
        queries see only queries and the text is causal over text only, so the text feature does not
        see the image. Text ids: long[B, L]; masks: 0/1 long[B, L] from the tokenizer.
        """
        vision = self.vision_model(pixel_values).last_hidden_state  # (B, N, Dv)
        b = vision.shape[0]
        nq = self.config.num_query_token
        ids = torch.cat([negative_input_ids, positive_input_ids, summarize_input_ids])  # (3B, L)
        text_mask = torch.cat([negative_attention_mask, positive_attention_mask, summarize_attention_mask])
        embeds = torch.cat([self.query_tokens.expand(3 * b, -1, -1), self.qllama.get_input_embeddings()(ids)], dim=1)
        length = ids.shape[1]
        m2d = torch.cat([torch.ones(3 * b, nq, dtype=text_mask.dtype, device=text_mask.device), text_mask], dim=1)
        mask = padding_mask(m2d, embeds.dtype, nq + length)  # (3B, 1, nq+L, nq+L)
        itc = mask[2 * b :].clone()
        low = torch.finfo(embeds.dtype).min
        itc[:, :, :nq, nq:] = low
        itc[:, :, nq:, :nq] = low
        itc[:, :, nq:, nq:] = combine_masks(itc[:, :, nq:, nq:], causal_mask(b, length, 0, embeds.dtype, embeds.device))
        mask = torch.cat([mask[: 2 * b], itc])
        hidden = self.qllama.model(
            inputs_embeds=embeds, attention_mask=mask, vision_hidden_states=vision, repeat_time=3
        ).last_hidden_state  # (3B, nq+L, h)
        queries, text = hidden[:, :nq], hidden[:, nq:]
        itm_logits = self.itm_head(queries[: 2 * b]).mean(dim=1)  # (2B, 2)
        last = summarize_attention_mask.sum(1) - 1
        text_embeds = text[2 * b :][torch.arange(b, device=text.device), last] @ self.text_projection
        return RetrievalFeatures(
            backbone_embeds=self.clip_projector(vision),
            query_embeds=self.clip_projector2(queries[2 * b :]),
            text_embeds=text_embeds,
            itm_logits=itm_logits,
        )

    def layer_id(self, name: str) -> tuple[str, int]:
        """(family, layer id) of a parameter for layer-wise lr decay, the reference's rule (spec §7.5).

        Families ``vit`` (ids 0..num_vit_layers+1) and ``qllama`` (0..num_qllama_layers+1); parameters
        matching no rule are ``other`` with id 0. Embeddings are 0, block i is i+1, and the heads read
        by the losses are the top id. Names may carry LoRA infixes (``...qkv.lora_A.default.weight``).
        """
        top = self.num_layer_ids()
        if name in ("query_tokens", "logit_scale"):
            return "qllama", 0
        if name.startswith("clip_projector."):
            return "vit", top["vit"]
        if name.startswith(("clip_projector2.", "itm_head.")) or name == "text_projection":
            return "qllama", top["qllama"]
        for prefix, family, embed in (("vision_model.", "vit", "embeddings."), ("qllama.", "qllama", "embed_tokens")):
            if name.startswith(prefix):
                if embed in name:
                    return family, 0
                if "layers." in name:
                    return family, int(name.rsplit("layers.", 1)[1].split(".", 1)[0]) + 1
                return (family, top[family]) if family == "qllama" else ("other", 0)
        return "other", 0

    def num_layer_ids(self) -> dict[str, int]:
        """The top layer id per family: number of blocks + 2 (the reference's ``Lv``/``Lq``)."""
        return {
            "vit": self.config.vision_config.num_hidden_layers + 2,
            "qllama": self.config.qllama_config.num_hidden_layers + 2,
        }

    # -- captioning -------------------------------------------------------------------------------
    @torch.no_grad()
    def generate(
        self,
        pixel_values: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        **generation_kwargs,
    ) -> torch.Tensor:
        """Generate text from ``[query tokens ; embed(input_ids)]`` with transformers' ``generate``.

        The queries cross-attend to the image on the first step and attend to each other both ways
        (``use_zero_attention_mask``); the prompt is causal. Returns only the new tokens long[B, T]
        (shorter beams are padded with the pad id).

        Args:
            pixel_values: float[B, 3, S, S].
            input_ids: prompt ids long[B, P] or long[1, P] / long[P] (shared by the batch), e.g.
                ``[<s>] + "English caption:"``.
            attention_mask: prompt mask long[B, P]; default all ones.
            generation_kwargs: forwarded to ``generate`` (num_beams, max_new_tokens, min_new_tokens, ...).
        """
        vision = self.vision_model(pixel_values).last_hidden_state  # (B, N, Dv)
        b = vision.shape[0]
        if input_ids.ndim == 1:
            input_ids = input_ids[None]
        if input_ids.shape[0] == 1 and b > 1:
            input_ids = input_ids.expand(b, -1)
        if input_ids.shape[0] != b:
            raise ValueError(
                f"got {input_ids.shape[0]} prompts for {b} images; pass one shared prompt or one per image"
            )
        input_ids = input_ids.to(self.device)
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        queries = self.query_tokens.expand(b, -1, -1)
        inputs_embeds = torch.cat([queries, self.qllama.get_input_embeddings()(input_ids)], dim=1)  # (B, nq+P, h)
        mask = torch.cat(
            [torch.ones(b, queries.shape[1], dtype=attention_mask.dtype, device=self.device), attention_mask], 1
        )
        q = self.config.qllama_config
        kwargs = {
            "bos_token_id": q.bos_token_id,
            "eos_token_id": q.eos_token_id,
            "pad_token_id": q.pad_token_id if q.pad_token_id is not None else q.eos_token_id,
        }
        kwargs.update(generation_kwargs)
        kwargs.setdefault("do_sample", False)
        if kwargs.get("use_cache", True) and not (set(kwargs) & {"cache", "past_key_values"}):
            kwargs.update(cache_kwargs(new_dynamic_cache()))  # transformers 4.4x builds none for custom models
        return self.qllama.generate(
            inputs_embeds=inputs_embeds,
            attention_mask=mask,
            vision_hidden_states=vision,
            use_zero_attention_mask=True,
            **kwargs,
        )

    # -- construction and I/O ---------------------------------------------------------------------
    @torch.no_grad()
    def init_weights(self, generator: torch.Generator | None = None) -> InternVLModel:
        """Deterministic random initialisation (for tests, demos and training from scratch)."""
        std = self.config.initializer_range
        self.vision_model.init_weights(generator)
        for name, m in self.named_modules():
            if name.startswith("vision_model"):
                continue
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.trunc_normal_(m.weight, std=std, generator=generator)
                if getattr(m, "bias", None) is not None:
                    m.bias.zero_()
            elif isinstance(m, nn.LayerNorm):
                m.weight.fill_(1.0)
                m.bias.zero_()
            elif hasattr(m, "weight") and isinstance(m.weight, nn.Parameter) and m.weight.ndim == 1:
                m.weight.fill_(1.0)  # RMSNorms
        for pool in (self.clip_projector, self.clip_projector2):
            for p in (pool.cross_attn.q_bias, pool.cross_attn.k_bias, pool.cross_attn.v_bias):
                p.zero_()
        nn.init.trunc_normal_(self.query_tokens, std=std, generator=generator)
        nn.init.trunc_normal_(
            self.text_projection, std=self.config.qllama_config.hidden_size**-0.5, generator=generator
        )
        self.logit_scale.fill_(math.log(1 / 0.07))
        return self

    @classmethod
    def from_pretrained(
        cls,
        path: str | os.PathLike,
        dtype: str | torch.dtype | None = None,
        device: str | torch.device = "cpu",
    ) -> InternVLModel:
        """Load an official checkpoint directory (any weight layout; LoRA checkpoints are merged).

        Built on the meta device and filled by assignment, so a 14B checkpoint needs memory for the
        weights only. A 224px checkpoint whose config asks for ``force_image_size`` has its position
        table resized (bicubic, float32) after loading, as the reference fine-tuning script does.

        Raises:
            CheckpointError: unreadable directory or keys that do not match the architecture.
            ConfigError: inconsistent config values.
        """
        dtype = ckpt.resolve_dtype(dtype)
        config = InternVLConfig.from_pretrained(path)
        state = ckpt.read_state_dict(path)
        state = merge_lora_state_dict(state, config, dtype=dtype)
        build_size, resize_to = ckpt.plan_position_table(
            config.force_image_size,
            config.image_size,
            state.get("vision_model.embeddings.position_embedding"),
            config.vision_config.patch_size,
        )
        build_config = config if resize_to is None else dataclasses.replace(config, force_image_size=build_size)
        with torch.device("meta"):
            model = cls(build_config)
        ckpt.load_into(model, state, dtype=dtype, source=str(path), ignore_unexpected=IGNORED_KEYS)
        model.to(device)
        if resize_to is not None:
            model.vision_model.resize_position_embeddings(resize_to)
            model.config = config
        return model.eval()

    def save_pretrained(
        self, path: str | os.PathLike, *, safe_serialization: bool = True, max_shard_size: int | None = None
    ) -> None:
        """Write ``config.json`` (official schema) and weights with the reference key names."""
        # Merged weights carry no adapters any more.
        cfg = {**self.config.to_dict(), "use_backbone_lora": 0, "use_qllama_lora": 0}
        ckpt.save_checkpoint(
            path, cfg, self.state_dict(), safe_serialization=safe_serialization, max_shard_size=max_shard_size
        )


def _check_mode(mode: str) -> None:
    if mode not in MODES:
        raise ConfigError(f"mode={mode!r}; expected one of {MODES}")


# -- LoRA checkpoints -----------------------------------------------------------------------------
_LORA_A = re.compile(r"^(?P<module>.+)\.lora_A\.(?P<adapter>[^.]+)\.weight$")


def merge_lora_state_dict(
    state: dict[str, torch.Tensor], config: InternVLConfig, dtype: torch.dtype | None = None
) -> dict[str, torch.Tensor]:
    """Fold peft LoRA adapters into their base weights and strip the peft key prefixes.

    ``W <- W + (alpha / r) * B @ A`` with alpha = 2 * rank (the reference constructs its LoRA wrappers
    with ``lora_alpha = 2 * use_*_lora``), computed in float32 and rounded once to ``dtype`` (the dtype
    the model is loaded in; default the stored one). Rounding to the stored dtype first would give a
    bf16 checkpoint loaded in fp16/fp32 merged weights of bf16 precision, coarser than the reference's
    fp16 merge. Handles peft >= 0.7 (``...qkv.base_layer.weight``) and older (``...qkv.weight``)
    layouts. A state dict without LoRA keys is returned unchanged apart from the prefix cleanup.
    """
    if not any(".lora_A." in k or ".base_model.model." in k for k in state):
        return state
    ranks = {"vision_model.": config.use_backbone_lora, "qllama.": config.use_qllama_lora}
    merged = dict(state)
    for key in [k for k in state if ".lora_A." in k]:
        m = _LORA_A.match(key)
        if m is None:
            raise CheckpointError(f"unrecognised LoRA key {key!r}; expected <module>.lora_A.<adapter>.weight")
        module, adapter = m["module"], m["adapter"]
        b_key = f"{module}.lora_B.{adapter}.weight"
        base_key = next((k for k in (f"{module}.base_layer.weight", f"{module}.weight") if k in state), None)
        if b_key not in state or base_key is None:
            raise CheckpointError(f"LoRA adapter {module!r} lacks its lora_B or base weight in the checkpoint")
        lora_a, lora_b = state[key], state[b_key]
        prefix = next((p for p in ranks if key.startswith(p)), None)
        config_rank = ranks.get(prefix, 0) if prefix else 0
        rank = lora_a.shape[0]
        if config_rank and config_rank != rank:
            raise CheckpointError(
                f"{key}: LoRA rank {rank} but "
                f"config.{'use_backbone_lora' if prefix == 'vision_model.' else 'use_qllama_lora'}"
                f"={config_rank}"
            )
        scaling = 2.0  # alpha / r with alpha = 2r
        base = state[base_key]
        delta = (lora_b.float() @ lora_a.float()) * scaling
        merged[base_key] = (base.float() + delta).to(dtype or base.dtype)
        del merged[key], merged[b_key]
    cleaned: dict[str, torch.Tensor] = {}
    for key, value in merged.items():
        if ".original_module." in key or ".lora_" in key:
            continue
        new = (
            key.replace(".base_model.model.", ".")
            .replace(".base_layer.", ".")
            .replace(".modules_to_save.default.", ".")
        )
        cleaned[new] = value
    return cleaned


# -- presets ----------------------------------------------------------------------------------------
def build_internvl(config: InternVLConfig, seed: int | None = 0) -> InternVLModel:
    """A randomly initialised model (deterministic for a given seed)."""
    gen = torch.Generator().manual_seed(seed) if seed is not None else None
    return InternVLModel(config).init_weights(gen).eval()


@registry.register_preset("internvl_cg_tiny", "internvl_cg")
def internvl_cg_tiny(vocab_size: int = 400, num_query_token: int = 8) -> InternVLConfig:
    """A tiny config (width 32-64, 2 layers each) that builds in milliseconds, for tests and demos."""
    vision = InternViTConfig(
        hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128, image_size=56, patch_size=14
    )
    qllama = QLlamaConfig(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=256,
        num_query_token=num_query_token,
        vision_hidden_size=64,
    )
    return InternVLConfig(
        vision_config=vision,
        qllama_config=qllama,
        clip_embed_dim=32,
        attn_pool_num_heads=4,
        num_query_token=num_query_token,
    )


@registry.register_preset("internvl_cg_world", "internvl_cg")
def internvl_cg_world(vocab_size: int = 512, num_query_token: int = 8) -> InternVLConfig:
    """InternVL-C/G for the built-in world: the ``intern_vit_world`` ViT and a 2 x 64 QLLaMA (~0.3M parameters).

    Trains contrastively from scratch in about a minute on one CPU thread (README, "The built-in world").
    """
    qllama = QLlamaConfig(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=128,
        num_query_token=num_query_token,
        vision_hidden_size=64,
    )
    return InternVLConfig(
        vision_config=PRESETS["intern_vit_world"],
        qllama_config=qllama,
        clip_embed_dim=64,
        attn_pool_num_heads=4,
        num_query_token=num_query_token,
    )


@registry.register_preset("internvl_cg_14b_224", "internvl_cg")
def internvl_14b_224() -> InternVLConfig:
    """The InternVL-14B-224px layout (spec §8); the official checkpoint's own config.json is authoritative."""
    return InternVLConfig(vision_config=InternViTConfig(), qllama_config=QLlamaConfig())


# Names that say what these are (C/G only; the historical names sound generic). Both spellings are the
# same objects; new code should use these.
InternVLCG = InternVLModel
InternVLCGConfig = InternVLConfig
