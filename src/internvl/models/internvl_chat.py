"""InternVL-Chat (V1-2 layout): InternViT -> pixel shuffle -> ``mlp1`` -> a transformers causal LM.

Chat spec §1-4, §9. The visual tokens of every image tile replace the ``<IMG_CONTEXT>`` placeholder
embeddings of the prompt (``masked_scatter``, as transformers' Llava does); the LLM itself is a stock
transformers model (``LlamaForCausalLM`` for V1-2, ``Qwen2ForCausalLM`` also works) built from
``llm_config``, so KV caching, sampling, streaming, PEFT and accelerate all come from transformers.

State-dict keys equal the official ones (``vision_model.*``, ``mlp1.{0,1,3}.*``, ``language_model.*``), so
``OpenGVLab/InternVL-Chat-V1-2`` loads as stored, without ``trust_remote_code``.

This module is model-only (layering: models never import data or inference). Prompt building, image
loading and the card's ``chat()`` / ``batch_chat()`` API live in ``internvl.inference.chat``, which also
provides ``ChatModel``, a subclass with card-style ``model.chat(...)`` methods (what
``load_chat_model`` returns); ``as_chat_model(model)`` converts a model loaded with this class in
place, and calling ``chat`` on this class raises an error that says so.
"""

from __future__ import annotations

import copy
import logging
import math
import os
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModelForCausalLM, GenerationConfig, PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutputWithPast

from internvl.core.compat import cache_kwargs, model_output, output_cache, pop_cache, split_generation_kwargs
from internvl.core.errors import CheckpointError, ConfigError, DataFormatError, InternVLError
from internvl.core.specs import served_image_size
from internvl.core.tokens import IGNORE_INDEX, IMG_CONTEXT_TOKEN, IMG_END_TOKEN, IMG_START_TOKEN  # noqa: F401
from internvl.models import checkpoint as ckpt
from internvl.models.device_map import infer_device_map, place_model  # noqa: F401 (infer_device_map re-exported)
from internvl.models.intern_vit import PRESETS, InternViT, InternViTConfig
from internvl.models.projector import PS_VERSIONS, build_mlp_projector, pixel_shuffle
from internvl.models.quantization import check_8bit_available, quantize_8bit
from internvl.models.registry import register_preset

logger = logging.getLogger(__name__)

# llm_config.architectures[0] -> transformers model_type. InternLM2 / Phi3 need remote code upstream;
# only architectures that transformers ships natively are accepted.
_LLM_ARCHITECTURES = {
    "LlamaForCausalLM": "llama",
    "Qwen2ForCausalLM": "qwen2",
    "Phi3ForCausalLM": "phi3",
    "MistralForCausalLM": "mistral",
}

# Keys to_dict() (or the checkpoint writer) derives itself, so they are not kept as unknown extras.
_WRITTEN_KEYS = frozenset({"model_type", "architectures", "torch_dtype", "hidden_size"})

_CHAT_FIELDS: dict[str, Any] = {
    "use_backbone_lora": 0,
    "use_llm_lora": 0,
    "pad2square": False,
    "select_layer": -1,
    "force_image_size": None,
    "downsample_ratio": 0.5,
    "template": None,
    "dynamic_image_size": False,
    "use_thumbnail": False,
    "ps_version": "v1",
    "min_dynamic_patch": 1,
    "max_dynamic_patch": 6,
}


def _build_llm_config(llm_config: dict | PretrainedConfig) -> PretrainedConfig:
    """Turn the ``llm_config`` dict of config.json into the transformers config class it names."""
    if isinstance(llm_config, PretrainedConfig):
        return llm_config
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    d = dict(llm_config)
    arch = (d.get("architectures") or [None])[0]
    model_type = d.pop("model_type", None) or _LLM_ARCHITECTURES.get(arch)
    if model_type not in CONFIG_MAPPING:
        raise ConfigError(
            f"llm_config: architecture {arch!r} (model_type {model_type!r}) is not a transformers-native causal LM; "
            f"supported: {sorted(_LLM_ARCHITECTURES)}"
        )
    d.pop("attn_implementation", None)  # chosen at model construction (sdpa by default)
    return CONFIG_MAPPING[model_type](**d)


class InternVLChatConfig(PretrainedConfig):
    """Composite configuration (``model_type: internvl_chat``), read from the official ``config.json``.

    Fields and defaults follow the reference ``InternVLChatConfig`` (chat spec §1.1). ``system_message``
    is optional: when config.json has it (V1-2-Plus: "Answer the questions."), it overrides the
    template's default system message; None means "use the template default".
    """

    model_type = "internvl_chat"

    def __init__(
        self,
        vision_config: dict | InternViTConfig | None = None,
        llm_config: dict | PretrainedConfig | None = None,
        system_message: str | None = None,
        extra: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__()
        if isinstance(vision_config, InternViTConfig):
            vision_config = vision_config.to_dict()
        self.vision_config: dict = dict(vision_config or {})
        # None is allowed so that transformers can instantiate a default config; building a model then fails.
        self.llm_config = _build_llm_config(llm_config) if llm_config is not None else None
        if self.llm_config is not None:
            self.llm_config.tie_word_embeddings = False  # the reference forces untied embeddings
        for name, default in _CHAT_FIELDS.items():
            setattr(self, name, kwargs.pop(name, default))
        self.system_message = system_message
        self.img_context_token_id = kwargs.pop("img_context_token_id", None)
        # config.json keys this class does not use (e.g. the remote-code ``auto_map``), written back by to_dict
        self.extra: dict[str, Any] = dict(extra or {})
        self.tie_word_embeddings = False
        if self.ps_version not in PS_VERSIONS:
            raise ConfigError(f"ps_version={self.ps_version!r}; expected one of {PS_VERSIONS}")

    # -- derived values ---------------------------------------------------------------------------
    @property
    def vision(self) -> InternViTConfig:
        """The InternViT configuration, built at the served image size (`served_image_size`)."""
        return InternViTConfig.from_dict({**self.vision_config, "image_size": self.image_size})

    @property
    def image_size(self) -> int:
        """``force_image_size`` when set, else ``vision_config.image_size`` (the one rule in core.specs)."""
        return served_image_size({"force_image_size": self.force_image_size, "vision_config": self.vision_config}, 224)

    @property
    def num_image_token(self) -> int:
        """Visual tokens per 448px tile: (448/14)^2 * 0.5^2 = 256 for V1-2."""
        patch = int(self.vision_config.get("patch_size", 14))
        return int((self.image_size // patch) ** 2 * self.downsample_ratio**2)

    @classmethod
    def from_dict(cls, config_dict: dict[str, Any], **kwargs: Any) -> InternVLChatConfig:  # type: ignore[override]
        d = {**config_dict, **kwargs}
        if d.get("model_type", "internvl_chat") != "internvl_chat":
            raise ConfigError(f"config.json has model_type {d.get('model_type')!r}; expected 'internvl_chat'")
        names = {"vision_config", "llm_config", "system_message", "img_context_token_id", *_CHAT_FIELDS}
        known = {k: d[k] for k in names if k in d}
        extra = {k: v for k, v in d.items() if k not in names and k not in _WRITTEN_KEYS}
        return cls(**known, extra=extra)

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, **kwargs: Any) -> InternVLChatConfig:  # type: ignore[override]
        return cls.from_dict(ckpt.read_config(path), **kwargs)

    def to_dict(self) -> dict[str, Any]:
        """The official config.json layout (loadable by the reference code and by this class)."""
        llm = self.llm_config.to_dict() if self.llm_config is not None else None
        if llm is not None:
            rope = llm.get("rope_parameters") or {}
            if "rope_theta" not in llm and isinstance(rope, dict) and "rope_theta" in rope:
                llm["rope_theta"] = rope["rope_theta"]  # readable by transformers 4.x too
            llm.pop("dtype", None)
        out: dict[str, Any] = {
            **self.extra,
            "architectures": ["InternVLChatModel"],
            "model_type": self.model_type,
            "vision_config": dict(self.vision_config),
            "llm_config": llm,
        }
        out.update({k: getattr(self, k) for k in _CHAT_FIELDS})
        if self.system_message is not None:
            out["system_message"] = self.system_message
        if self.img_context_token_id is not None:
            out["img_context_token_id"] = self.img_context_token_id
        return out

    def to_diff_dict(self) -> dict[str, Any]:
        return self.to_dict()


def _moved_chat_method(name: str) -> Any:
    def method(self: InternVLChatModel, *args: Any, **kwargs: Any) -> Any:
        raise self._chat_api_moved(name)

    method.__name__ = name
    method.__doc__ = f"Card-style {name} lives on `internvl.inference.card.ChatModel`; this raises a pointer to it."
    return method


class InternVLChatModel(PreTrainedModel):
    """InternVL-Chat: vision encoder, pixel-shuffle projector and a transformers causal LM.

    Example:
        >>> model = InternVLChatModel.from_pretrained("InternVL-Chat-V1-2", dtype="bf16", device_map="auto")
        >>> from internvl.inference.chat import chat
        >>> chat(model, tokenizer, pixel_values, "Describe the image.", {"max_new_tokens": 64})
    """

    config_class = InternVLChatConfig
    main_input_name = "pixel_values"
    base_model_prefix = ""
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _supports_flash_attn_2 = True
    # Blocks accelerate must never split across devices (residual adds inside them); the LLM's own
    # decoder-layer class is added in __init__, so any supported LLM is covered.
    _no_split_modules = ["InternViTLayer", "LlamaDecoderLayer", "Qwen2DecoderLayer"]

    def __init__(
        self,
        config: InternVLChatConfig,
        language_model: PreTrainedModel | None = None,
        attn_implementation: str = "sdpa",
    ) -> None:
        super().__init__(config)
        if config.llm_config is None and language_model is None:
            raise ConfigError("InternVLChatConfig.llm_config is missing; config.json must contain llm_config")
        self.vision_model = InternViT(config.vision)
        if config.ps_version == "v1" and config.downsample_ratio != 1:
            # The reference warns on every forward; it is what V1-2 weights expect, so once per model
            # load, at debug level (`internvl -v` shows it), is enough.
            logger.debug(
                "pixel_shuffle ps_version='v1': the merged token grid is transposed (column-major order), "
                "as InternVL-Chat-V1-2 weights were trained; other weights need ps_version 'v2' in config.json"
            )
        llm_width = config.llm_config.hidden_size
        self.mlp1 = build_mlp_projector(config.vision.hidden_size, llm_width, config.downsample_ratio)
        if language_model is None:
            language_model = AutoModelForCausalLM.from_config(
                config.llm_config, attn_implementation=attn_implementation
            )
        self.language_model = language_model
        self._no_split_modules = list(
            dict.fromkeys([*type(self)._no_split_modules, *(getattr(language_model, "_no_split_modules", None) or [])])
        )
        self.img_context_token_id: int | None = config.img_context_token_id
        # PEFT's task_type="CAUSAL_LM" wrapper reads (and swaps) model.prepare_inputs_for_generation;
        # generation itself runs in the LLM's generate, so the LLM's method is the right one. An instance
        # attribute, not a method: a class-level one makes transformers warn that the class "lacks
        # GenerationMixin" on every construction.
        self.prepare_inputs_for_generation = language_model.prepare_inputs_for_generation
        self.post_init()
        self._no_split_modules = sorted(self._no_split_modules)
        self.generation_config = GenerationConfig(
            bos_token_id=config.llm_config.bos_token_id,
            eos_token_id=config.llm_config.eos_token_id,
            pad_token_id=config.llm_config.pad_token_id,
        )

    def _init_weights(self, module: nn.Module) -> None:
        # Each part initialises itself (InternViT.init_weights, the LLM's own init); see build_internvl_chat.
        pass

    # -- properties -------------------------------------------------------------------------------
    @property
    def num_image_token(self) -> int:
        return self.config.num_image_token

    @property
    def template(self) -> str | None:
        return self.config.template

    @property
    def system_message(self) -> str | None:
        """The checkpoint's system message override (None: the template default)."""
        return self.config.system_message

    @system_message.setter
    def system_message(self, value: str | None) -> None:
        # The card's demo worker sets ``model.system_message = ...``; store it in the config so it is
        # used by every later chat call and saved with the checkpoint.
        self.config.system_message = value

    def get_input_embeddings(self) -> nn.Module:
        return self.language_model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.language_model.set_input_embeddings(value)

    def get_output_embeddings(self) -> nn.Module:
        return self.language_model.get_output_embeddings()

    # -- the card's chat methods live one layer up --------------------------------------------------
    def _chat_api_moved(self, name: str) -> InternVLError:
        return InternVLError(
            f"InternVLChatModel.{name}() is not defined on the model-only class (models never import the "
            "inference layer). Load with internvl.inference.chat.load_chat_model(path) or "
            "ChatModel.from_pretrained(path), convert an existing model with "
            f"internvl.inference.chat.as_chat_model(model), or call internvl.inference.chat.{name}(model, ...)"
        )

    chat = _moved_chat_method("chat")
    batch_chat = _moved_chat_method("batch_chat")
    stream_chat = _moved_chat_method("stream_chat")
    video_chat = _moved_chat_method("video_chat")

    # -- vision path ------------------------------------------------------------------------------
    def extract_feature(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Visual tokens for image tiles.

        Args:
            pixel_values: float[T, 3, S, S], one row per tile.

        Returns:
            float[T, num_image_token, llm_hidden] (256 x 7168 per tile for V1-2).
        """
        if self.config.select_layer == -1:
            vit = self.vision_model(pixel_values).last_hidden_state
        else:
            vit = self.vision_model(pixel_values, output_hidden_states=True).hidden_states[self.config.select_layer]
        vit = vit[:, 1:]  # (T, h*w, C): drop the class token
        t, n, c = vit.shape
        side = math.isqrt(n)
        vit = vit.reshape(t, side, side, c)  # (T, h, w, C): axis 1 = patch row, axis 2 = patch column
        vit = pixel_shuffle(vit, self.config.downsample_ratio, self.config.ps_version)  # (T, h/2, w/2, 4C)
        vit = vit.reshape(t, -1, vit.shape[-1])  # (T, num_image_token, 4C)
        mlp_device = self.mlp1[1].weight.device
        return self.mlp1(vit.to(mlp_device))

    def merge_visual_features(
        self, input_ids: torch.Tensor, inputs_embeds: torch.Tensor, vit_embeds: torch.Tensor
    ) -> torch.Tensor:
        """Write visual tokens into the ``<IMG_CONTEXT>`` positions (row-major over the batch, tile order).

        Raises:
            DataFormatError: the prompt's placeholder count differs from the number of visual tokens.
        """
        if self.img_context_token_id is None:
            raise InternVLError(
                "model.img_context_token_id is not set; set it to tokenizer.convert_tokens_to_ids('<IMG_CONTEXT>') "
                "(internvl.inference.chat does this for you)"
            )
        vit = vit_embeds.reshape(-1, vit_embeds.shape[-1])  # (tiles * tokens, D)
        mask = (input_ids == self.img_context_token_id).to(inputs_embeds.device)  # (B, N)
        n_slots = int(mask.sum())
        if n_slots != vit.shape[0]:
            raise DataFormatError(
                f"image token count mismatch: the prompt has {n_slots} {IMG_CONTEXT_TOKEN} tokens but the images "
                f"give {vit.shape[0]} visual tokens ({vit_embeds.shape[0]} tiles x {self.num_image_token}); "
                "check num_patches_list and the number of <image> placeholders"
            )
        mask = mask.unsqueeze(-1).expand_as(inputs_embeds)  # (B, N, D)
        return inputs_embeds.masked_scatter(mask, vit.to(inputs_embeds.device, inputs_embeds.dtype))

    def embed(
        self,
        input_ids: torch.Tensor,
        pixel_values: torch.Tensor | None = None,
        image_flags: torch.Tensor | None = None,
        visual_features: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """LLM input embeddings with the visual tokens spliced in: float[B, N, D]."""
        embedding = self.language_model.get_input_embeddings()
        inputs_embeds = embedding(input_ids.to(embedding.weight.device))
        if pixel_values is None and visual_features is None:
            return inputs_embeds
        vit = visual_features
        if vit is None:
            # The caller's pixels may sit elsewhere (CPU tensors with a GPU / device-mapped model).
            vit = self.extract_feature(pixel_values.to(self.vision_model.device, self.vision_model.dtype))
        if image_flags is not None:
            # Dummy tiles of pure-text samples (image_flags 0) are encoded but discarded, as in training.
            vit = vit[image_flags.reshape(-1).to(vit.device) == 1]
        return self.merge_visual_features(input_ids, inputs_embeds, vit)

    # -- forward / generate -----------------------------------------------------------------------
    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        image_flags: torch.Tensor | None = None,
        cache: Any = None,
        labels: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        use_cache: bool | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs: Any,
    ) -> CausalLMOutputWithPast:
        """Training / scoring forward.

        Args:
            pixel_values: float[T, 3, S, S], all tiles of the batch in sample order.
            input_ids: int[B, N] containing ``num_image_token`` x tiles ``<IMG_CONTEXT>`` ids.
            image_flags: int[T]; tiles with flag 0 are dropped (pure-text samples' dummy tile).
            labels: int[B, N] with IGNORE_INDEX (-100) on ignored positions; the loss is the reference's mean
                next-token cross entropy over the full vocabulary, in float32.
            inputs_embeds: precomputed embeddings (PEFT passes them); then pixels are not used.
            cache: the language model's KV cache (``past_key_values`` is accepted as its older name).
        """
        cache = pop_cache(kwargs, cache=cache)
        if inputs_embeds is None:
            if input_ids is None:
                raise ValueError("forward needs input_ids or inputs_embeds")
            inputs_embeds = self.embed(input_ids, pixel_values, image_flags)
        outputs = self.language_model(
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            position_ids=position_ids,
            **cache_kwargs(cache),
            use_cache=use_cache,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            return_dict=True,
        )
        logits = outputs.logits
        loss = None
        if labels is not None:
            shift_logits = logits[..., :-1, :].float()  # (B, N-1, V): position i predicts token i+1
            shift_labels = labels[..., 1:].to(shift_logits.device)
            loss = F.cross_entropy(
                shift_logits.reshape(-1, shift_logits.shape[-1]), shift_labels.reshape(-1), ignore_index=IGNORE_INDEX
            )
        return model_output(
            CausalLMOutputWithPast,
            loss=loss,
            logits=logits,
            cache=output_cache(outputs),
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )

    @torch.no_grad()
    def generate(
        self,
        pixel_values: torch.Tensor | None = None,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        visual_features: torch.Tensor | None = None,
        generation_config: GenerationConfig | None = None,
        **kwargs: Any,
    ) -> torch.Tensor:
        """Decode with transformers' ``generate`` (KV cache, sampling, streamers) from spliced embeddings.

        Returns only the new tokens, int[B, new] (generation starts from ``inputs_embeds``); keyword
        arguments (``max_new_tokens``, ``do_sample``, ``eos_token_id``, ``streamer``, ...) are passed on.
        """
        if input_ids is None:
            raise ValueError("generate needs input_ids")
        inputs_embeds = self.embed(input_ids, pixel_values, visual_features=visual_features)
        if attention_mask is not None:
            attention_mask = attention_mask.to(inputs_embeds.device)
        # Fold generation settings into one config object (transformers deprecates mixing both styles).
        config, rest = split_generation_kwargs(
            generation_config or self.generation_config, {"use_cache": True, **kwargs}
        )
        return self.language_model.generate(
            inputs_embeds=inputs_embeds, attention_mask=attention_mask, generation_config=config, **rest
        )

    # -- gradient checkpointing -------------------------------------------------------------------
    def set_gradient_checkpointing(self, enabled: bool = True) -> None:
        """Recompute ViT blocks and LLM decoder layers in backward."""
        self.vision_model.set_gradient_checkpointing(enabled)
        llm = self.language_model
        # transformers >= 5.x renames gradient_checkpointing_* to activation_checkpointing_* (old names warn).
        enable = getattr(llm, "activation_checkpointing_enable", None) or llm.gradient_checkpointing_enable
        disable = getattr(llm, "activation_checkpointing_disable", None) or llm.gradient_checkpointing_disable
        if enabled:
            new_api = enable.__name__.startswith("activation")
            key = "activation_checkpointing_kwargs" if new_api else "gradient_checkpointing_kwargs"
            enable(**{key: {"use_reentrant": False}})
        else:
            disable()

    # -- construction and I/O ---------------------------------------------------------------------
    @classmethod
    def from_pretrained(  # type: ignore[override]
        cls,
        path: str | os.PathLike,
        *,
        dtype: str | torch.dtype | None = None,
        device_map: str | dict[str, Any] | None = None,
        device: str | torch.device | None = None,
        load_in_8bit: bool = False,
        max_memory: dict[Any, Any] | None = None,
        attn_implementation: str = "sdpa",
        torch_dtype: str | torch.dtype | None = None,
        use_flash_attn: bool | None = None,
        low_cpu_mem_usage: bool | None = None,
        trust_remote_code: bool | None = None,
        **config_overrides: Any,
    ) -> InternVLChatModel:
        """Load an official (or our) InternVL-Chat checkpoint directory.

        Args:
            path: directory with ``config.json`` (model_type internvl_chat) and weights in any official layout.
            dtype: "bf16" / "fp16" / "fp32" (or a torch dtype); None keeps the stored dtype.
            device_map: None (everything on ``device``), ``"auto"`` (accelerate splits over the visible
                GPUs, never inside a ViT block or decoder layer; see `infer_device_map`), or an explicit
                ``{module_name: device}`` dict.
            device: target device when ``device_map`` is None (default CPU).
            load_in_8bit: int8 weights via bitsandbytes (CUDA only); ``lm_head`` and ``mlp1`` stay in ``dtype``.
            max_memory: per-device budgets for ``device_map="auto"`` (accelerate's format).
            attn_implementation: attention of the LLM ("sdpa", "eager" or "flash_attention_2").
            use_flash_attn: the card's switch: True selects "flash_attention_2" for the LLM when flash-attn
                is importable and CUDA is visible (otherwise ``attn_implementation`` stays), like the reference.
            low_cpu_mem_usage, trust_remote_code: accepted so the card's call works unchanged; loading is
                always low-memory (meta-device construction) and never runs remote code.
            **config_overrides: config fields to replace (e.g. ``ps_version="v1"``, ``system_message=...``);
                a name that is not a config field is an error (a typo must not be silently ignored).

        Raises:
            CheckpointError: unreadable directory or keys that do not match the config.
            ConfigError: an unknown keyword argument.
            InternVLError: 8-bit requested without CUDA or without bitsandbytes.
        """
        from accelerate import init_empty_weights

        unknown = sorted(set(config_overrides) - set(_CHAT_FIELDS) - {"system_message", "img_context_token_id"})
        if unknown:
            raise ConfigError(
                f"InternVLChatModel.from_pretrained got unknown argument(s) {unknown}; config overrides must be one "
                f"of {sorted([*_CHAT_FIELDS, 'system_message', 'img_context_token_id'])}"
            )
        if use_flash_attn and _flash_attn_usable():
            attn_implementation = "flash_attention_2"
        dtype = ckpt.resolve_dtype(dtype if dtype is not None else torch_dtype)
        if load_in_8bit:
            check_8bit_available()
            dtype = dtype or torch.float16
        config = InternVLChatConfig.from_dict(ckpt.read_config(path), **config_overrides)
        with init_empty_weights():  # parameters on meta (no random init of 40B weights); buffers real
            model = cls(config, attn_implementation=attn_implementation)
        state = ckpt.read_state_dict(path)
        if any(k.startswith("base_model.model.") for k in state):
            raise CheckpointError(
                f"{path}: keys start with 'base_model.model.' (an unmerged PEFT model); merge the adapters first"
            )
        ckpt.load_into(model, state, dtype=dtype, source=str(path), ignore_unexpected=[r"rotary_emb\.inv_freq$"])
        del state
        gen_file = Path(path) / "generation_config.json"
        if gen_file.is_file():
            model.generation_config = GenerationConfig.from_pretrained(str(path))
        model.eval()
        if load_in_8bit:
            quantize_8bit(model)
            device_map = device_map if device_map is not None else {"": 0}
        return place_model(model, device_map=device_map, device=device, max_memory=max_memory, dtype=dtype)

    def save_pretrained(  # type: ignore[override]
        self,
        path: str | os.PathLike,
        *,
        safe_serialization: bool = True,
        max_shard_size: int | None = None,
        stop_token_ids: list[int] | None = None,
    ) -> None:
        """Write config.json, weights (official key names) and generation_config.json.

        ``stop_token_ids`` (e.g. the id of ``<|im_end|>``) become the generation config's
        ``eos_token_id`` so that other tools stop at the end of the assistant turn;
        `internvl.inference.chat.save_chat_model` fills them from the tokenizer and template.
        """
        if any(type(m).__name__ == "Linear8bitLt" for m in self.modules()):
            raise InternVLError("saving an 8-bit quantised model is not supported; load it in bf16/fp16 to save")
        root = Path(path)
        state = {k: v.detach().cpu() for k, v in self.state_dict().items()}  # a device-mapped model too
        ckpt.save_checkpoint(
            root, self.config.to_dict(), state, safe_serialization=safe_serialization, max_shard_size=max_shard_size
        )
        gen = copy.deepcopy(self.generation_config)
        if stop_token_ids:
            gen.eos_token_id = list(dict.fromkeys(stop_token_ids))
        gen.save_pretrained(str(root))


def _flash_attn_usable() -> bool:
    import importlib.util

    return torch.cuda.is_available() and importlib.util.find_spec("flash_attn") is not None


def build_internvl_chat(
    config: InternVLChatConfig, seed: int | None = 0, attn_implementation: str = "sdpa"
) -> InternVLChatModel:
    """A randomly initialised model (deterministic for a seed): InternViT init, default LLM/LayerNorm init."""
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        model = InternVLChatModel(config, attn_implementation=attn_implementation)
        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        model.vision_model.init_weights(gen)
        with torch.no_grad():
            for m in model.mlp1:
                if isinstance(m, nn.Linear):
                    nn.init.trunc_normal_(m.weight, std=0.02, generator=gen)
                    m.bias.zero_()
    return model.eval()


def tiny_chat_config(
    vocab_size: int,
    *,
    llm_arch: str = "LlamaForCausalLM",
    image_size: int = 56,
    vit_width: int = 64,
    vit_layers: int = 2,
    llm_width: int = 64,
    llm_layers: int = 2,
    llm_kv_heads: int = 2,
    llm_intermediate_size: int | None = None,
    template: str = "Hermes-2",
    ps_version: str = "v1",
    system_message: str | None = None,
    bos_token_id: int = 1,
    eos_token_id: int = 2,
    pad_token_id: int = 0,
) -> InternVLChatConfig:
    """A few-hundred-thousand-parameter config with the V1-2 layout, for tests, demos and benchmarks."""
    if llm_arch not in _LLM_ARCHITECTURES:
        raise ConfigError(f"llm_arch {llm_arch!r}; expected one of {sorted(_LLM_ARCHITECTURES)}")
    llm = {
        "architectures": [llm_arch],
        "model_type": _LLM_ARCHITECTURES[llm_arch],
        "vocab_size": vocab_size,
        "hidden_size": llm_width,
        "intermediate_size": llm_intermediate_size or llm_width * 5 // 2,
        "num_hidden_layers": llm_layers,
        "num_attention_heads": 4,
        "num_key_value_heads": llm_kv_heads,
        "max_position_embeddings": 2048,
        "rms_norm_eps": 1e-5,
        "rope_theta": 5_000_000.0,
        "bos_token_id": bos_token_id,
        "eos_token_id": eos_token_id,
        "pad_token_id": pad_token_id,
        "tie_word_embeddings": False,
    }
    vision = InternViTConfig(
        hidden_size=vit_width,
        num_hidden_layers=vit_layers,
        num_attention_heads=4,
        intermediate_size=vit_width * 2,
        image_size=image_size,
    ).to_dict()
    return InternVLChatConfig(
        vision_config=vision,
        llm_config=llm,
        template=template,
        ps_version=ps_version,
        force_image_size=image_size,
        system_message=system_message,
    )


@register_preset("internvl_chat_tiny", "internvl_chat")
def internvl_chat_tiny(vocab_size: int = 512, **kwargs: Any) -> InternVLChatConfig:
    """Tiny V1-2-layout chat model (56px, 4 visual tokens per tile); pass the tokenizer's ``len()`` as vocab_size."""
    return tiny_chat_config(vocab_size, **kwargs)


@register_preset("internvl_chat_world", "internvl_chat")
def world_chat_config(
    vocab_size: int = 512, *, llm_width: int = 64, llm_layers: int = 4, eos_token_id: int = 2, pad_token_id: int = 0
) -> InternVLChatConfig:
    """InternVL-Chat for the built-in world: ``intern_vit_world`` -> mlp1 -> a small LLaMA (Hermes-2 template).

    ``downsample_ratio`` 1 (no pixel shuffle): the ViT grid is 3x3, one token per grid cell, so the
    9 visual tokens line up with the objects. The system message is the short V1-2-Plus one, which
    keeps prompts short for a CPU. The LLM (width 64, 4 layers, 4 full heads, FFN 4x) is the calibrated
    one: on a CPU budget a narrower LLM takes more steps and learns more per second than width 128
    (README, calibration).
    """
    config = tiny_chat_config(
        vocab_size,
        llm_width=llm_width,
        llm_layers=llm_layers,
        eos_token_id=eos_token_id,
        pad_token_id=pad_token_id,
        system_message="Answer the questions.",
        ps_version="v2",
        llm_kv_heads=4,  # full heads: one key/value head per attention head
        llm_intermediate_size=4 * llm_width,
    )
    # transformers' 0.02 init suits widths near 1,000-2,500; at width 64 it leaves attention near uniform and
    # a from-scratch LLM slow to route a question word to a visual token (README, calibration, fourth round).
    config.llm_config.initializer_range = llm_width**-0.5
    config.vision_config = PRESETS["intern_vit_world"].to_dict()
    config.force_image_size = PRESETS["intern_vit_world"].image_size
    config.downsample_ratio = 1.0
    return config


@register_preset("internvl_chat_v1_2", "internvl_chat")
def internvl_chat_v1_2(vocab_size: int = 64007) -> InternVLChatConfig:
    """InternVL-Chat-V1-2: InternViT-6B-448px-V1-2 (45 layers) + Nous-Hermes-2-Yi-34B (chat spec §1); the
    official checkpoint's config.json is authoritative."""
    from internvl.models.intern_vit import PRESETS

    llm = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": vocab_size,
        "hidden_size": 7168,
        "intermediate_size": 20480,
        "num_hidden_layers": 60,
        "num_attention_heads": 56,
        "num_key_value_heads": 8,
        "max_position_embeddings": 4096,
        "rms_norm_eps": 1e-5,
        "rope_theta": 5_000_000.0,
        "attention_bias": False,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "pad_token_id": 0,
        "tie_word_embeddings": False,
    }
    return InternVLChatConfig(
        vision_config=PRESETS["intern_vit_6b_448_v1_2"].to_dict(),
        llm_config=llm,
        template="Hermes-2",
        ps_version="v1",
        force_image_size=448,
        downsample_ratio=0.5,
        select_layer=-1,
    )


def register_auto_classes() -> None:
    """Let transformers' Auto classes resolve ``model_type: internvl_chat`` to our config (no remote code).

    Without it, ``AutoTokenizer.from_pretrained(checkpoint)`` falls back to a generic config and warns
    that the checkpoint's model type is unknown; `internvl.inference.loading.load_tokenizer` calls this
    before loading. Idempotent (a second call, or a transformers that ships the type, is a no-op).
    """
    from transformers import AutoConfig

    try:
        AutoConfig.register(InternVLChatConfig.model_type, InternVLChatConfig)
    except ValueError:  # already registered or shipped by a future transformers
        pass
