"""Which parameters of an `InternVLChatModel` train in SFT (chat spec §8.1), applied in the reference's order.

1. ``freeze_vision`` (``--freeze_backbone``): the ViT is frozen.
2. ``freeze_llm``: the language model is frozen.
3. LoRA (PEFT adapters, rank r, alpha 2r, dropout 0.05): ``vision_lora_rank`` on the ViT blocks' ``attn.qkv``,
   ``attn.proj``, ``mlp.fc1``, ``mlp.fc2``; ``llm_lora_rank`` on the LLM's ``self_attn.{q,k,v,o}_proj`` and
   ``mlp.{gate,down,up}_proj``. Adding adapters to a part freezes its base weights (the reference wraps it in
   a PEFT model), whatever the freeze flags say.
4. ``freeze_mlp``: the projector ``mlp1`` is frozen.
5. ``unfreeze_vit_layers`` N != 0: ViT blocks ``encoder.layers[N:]`` train again (N > 0: from block N on;
   N < 0: the last |N| blocks), the reference's slice.

The reference's ``unfreeze_lm_head`` does nothing (it sets an attribute on the module), so it is not offered.
Adapters are injected in place (`peft.inject_adapter_in_model`), so parameter names keep the checkpoint
layout with PEFT's ``base_layer`` / ``lora_A`` / ``lora_B`` infixes.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch loads only when parameters are applied, not when a recipe is read
    from torch import nn

from internvl.core.errors import ConfigError

VISION_LORA_TARGETS = ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2")
LLM_LORA_TARGETS = (
    "self_attn.q_proj",
    "self_attn.k_proj",
    "self_attn.v_proj",
    "self_attn.o_proj",
    "mlp.gate_proj",
    "mlp.down_proj",
    "mlp.up_proj",
)


@dataclass(frozen=True)
class ChatTrainable:
    """The trainable-parameter options of an SFT run (the recipe's ``method`` section)."""

    freeze_vision: bool = False
    freeze_mlp: bool = False
    freeze_llm: bool = False
    unfreeze_vit_layers: int = 0
    vision_lora_rank: int = 0
    llm_lora_rank: int = 0
    lora_dropout: float = 0.05

    def __post_init__(self) -> None:
        for name in ("vision_lora_rank", "llm_lora_rank"):
            if getattr(self, name) < 0:
                raise ConfigError(f"method.{name}={getattr(self, name)}; expected 0 (off) or a rank >= 1")
        if not 0.0 <= self.lora_dropout < 1.0:
            raise ConfigError(f"method.lora_dropout={self.lora_dropout}; expected a probability in [0, 1)")

    @classmethod
    def pretraining(cls) -> ChatTrainable:
        """Stage 1 (chat spec §8.4): ViT + MLP train, the LLM is frozen."""
        return cls(freeze_llm=True)

    @classmethod
    def finetuning(cls) -> ChatTrainable:
        """Stage 2 / the V1-2 SFT: ViT + MLP + LLM all train."""
        return cls()


def _inject_lora(module: nn.Module, targets: tuple[str, ...], rank: int, dropout: float) -> None:
    try:
        from peft import LoraConfig, inject_adapter_in_model
    except ImportError:
        raise ImportError("LoRA needs PEFT: pip install 'internvl[lora]'") from None
    config = LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=dropout, target_modules=list(targets), bias="none")
    inject_adapter_in_model(config, module)


def _is_adapter(name: str) -> bool:
    return ".lora_A." in name or ".lora_B." in name


def apply_chat_trainable(model: nn.Module, options: ChatTrainable) -> nn.Module:
    """Set ``requires_grad`` on ``model`` (and inject LoRA adapters) as ``options`` say; returns ``model``.

    Raises:
        ConfigError: ``unfreeze_vit_layers`` beyond the ViT depth, or nothing left to train.
    """
    vision, mlp, llm = model.vision_model, model.mlp1, model.language_model
    layers = vision.encoder.layers
    n = options.unfreeze_vit_layers
    if abs(n) > len(layers) or n == len(layers):
        raise ConfigError(f"method.unfreeze_vit_layers={n}, but the ViT has {len(layers)} blocks")
    model.requires_grad_(True)
    if options.freeze_vision:
        vision.requires_grad_(False)
    if options.freeze_llm:
        llm.requires_grad_(False)
    for part, targets, rank in (
        (vision, VISION_LORA_TARGETS, options.vision_lora_rank),
        (llm, LLM_LORA_TARGETS, options.llm_lora_rank),
    ):
        if rank:
            _inject_lora(part, targets, rank, options.lora_dropout)
            for name, p in part.named_parameters():
                p.requires_grad_(_is_adapter(name))
    if options.freeze_mlp:
        mlp.requires_grad_(False)
    if n:
        layers[n:].requires_grad_(True)  # whole blocks, base weights included (the reference's slice)
    if options.llm_lora_rank and hasattr(llm, "enable_input_require_grads"):
        # Frozen embeddings under activation checkpointing would cut the graph before the adapters.
        llm.enable_input_require_grads()
    if not any(p.requires_grad for p in model.parameters()):
        raise ConfigError("every parameter is frozen: unfreeze a part or add LoRA adapters (method.*_lora_rank)")
    return model


def trainable_summary(model: nn.Module) -> OrderedDict[str, tuple[int, int]]:
    """(trainable, total) parameter counts per part (``vision_model``, ``mlp1``, ``language_model``) + ``total``."""
    out: OrderedDict[str, list[int]] = OrderedDict()
    for name, p in model.named_parameters():
        row = out.setdefault(name.split(".", 1)[0], [0, 0])
        row[0] += p.numel() if p.requires_grad else 0
        row[1] += p.numel()
    total = [sum(v[0] for v in out.values()), sum(v[1] for v in out.values())]
    return OrderedDict([*((k, (v[0], v[1])) for k, v in out.items()), ("total", (total[0], total[1]))])


def merge_lora_state_dict(state: dict, scale: float = 2.0) -> dict:
    """A state dict with PEFT adapters folded in: ``W + scale * B @ A`` under the plain key (``x.weight``
    for ``x.base_layer.weight``), adapter keys dropped; ``scale`` = alpha / r (2 here, as the reference).

    Works on a gathered state dict (ZeRO-3 shards are gathered first), so no module surgery is needed.
    """
    out: dict = {}
    for key, value in state.items():
        if ".lora_A." in key or ".lora_B." in key:
            continue
        if ".base_layer." not in key:
            out[key] = value
            continue
        prefix, _, leaf = key.partition(".base_layer.")
        if leaf == "weight":
            a = [v for k, v in state.items() if k.startswith(prefix + ".lora_A.") and k.endswith(".weight")]
            b = [v for k, v in state.items() if k.startswith(prefix + ".lora_B.") and k.endswith(".weight")]
            if len(a) != 1 or len(b) != 1:
                raise ConfigError(f"{prefix}: expected one LoRA A/B pair, found {len(a)}/{len(b)}")
            value = (value.float() + scale * (b[0].float() @ a[0].float())).to(value.dtype)
        out[f"{prefix}.{leaf}"] = value
    return out
