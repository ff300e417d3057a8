"""Which parameters train: ``full``, ``head`` or ``lora`` (spec §7.4), applied to an `InternVLModel`.

We train what the loss can reach. ``qllama.lm_head`` is outside the ITM/ITC graph (the reference marks it
trainable in head and LoRA mode, "0.2B", yet it never receives a gradient), so no method trains it.

* ``full``: every other parameter.
* ``head``: ``text_projection`` only.
* ``lora``: PEFT LoRA adapters (rank r, alpha 2r, dropout 0.05) on the ViT blocks' ``attn.qkv``,
  ``attn.proj``, ``mlp.fc1``, ``mlp.fc2`` and QLLaMA's ``self_attn.{q,k,v,o}_proj`` and
  ``mlp.{gate,up,down}_proj`` (cross-attention, embeddings and heads untouched), plus ``text_projection``.
  Adapters are injected in place (`peft.inject_adapter_in_model`), so parameter names keep the
  reference layout with peft's ``base_layer``/``lora_A``/``lora_B`` infixes, which
  `internvl.models.internvl_cg.merge_lora_state_dict` merges.

Activation checkpointing is non-reentrant in both towers (models/), so adapters on a frozen base get
gradients; the reference's reentrant checkpointing starved them (spec §9 T3).
"""

from __future__ import annotations

from torch import nn

from internvl.core.errors import ConfigError

# One LoRA implementation for both trainers: the SFT module's injector, targets and counter (the QLLaMA
# decoder names its linears like LLaMA, so the LLM targets are QLLaMA's self-attention + MLP targets).
from internvl.training.chat_methods import LLM_LORA_TARGETS as QLLAMA_LORA_TARGETS
from internvl.training.chat_methods import VISION_LORA_TARGETS
from internvl.training.chat_methods import _inject_lora as inject_lora
from internvl.training.chat_methods import trainable_summary as parameter_counts

NOT_IN_LOSS_GRAPH = ("qllama.lm_head.weight",)
__all__ = [
    "NOT_IN_LOSS_GRAPH",
    "QLLAMA_LORA_TARGETS",
    "VISION_LORA_TARGETS",
    "apply_method",
    "inject_lora",
    "lora_state_dict",
    "parameter_counts",
]


def apply_method(
    model: nn.Module,
    name: str,
    *,
    lora_rank: int = 16,
    lora_dropout: float = 0.05,
    lora_vision: bool = True,
    lora_qllama: bool = True,
) -> None:
    """Set ``requires_grad`` (and inject adapters for ``lora``) in place."""
    if name == "full":
        for n, p in model.named_parameters():
            p.requires_grad_(n not in NOT_IN_LOSS_GRAPH)
        return
    if name not in ("head", "lora"):
        raise ConfigError(f"method {name!r}; expected full, head or lora")
    model.requires_grad_(False)
    if name == "lora":
        if not (lora_vision or lora_qllama):
            raise ConfigError("method lora with neither lora_vision nor lora_qllama: no adapters to train")
        if lora_vision:
            inject_lora(model.vision_model, VISION_LORA_TARGETS, lora_rank, lora_dropout)
        if lora_qllama:
            inject_lora(model.qllama, QLLAMA_LORA_TARGETS, lora_rank, lora_dropout)
        for n, p in model.named_parameters():
            p.requires_grad_(".lora_A." in n or ".lora_B." in n)
    model.text_projection.requires_grad_(True)


def lora_state_dict(model: nn.Module) -> dict:
    """The adapter weights only (names as in the model)."""
    return {n: p.detach() for n, p in model.named_parameters() if ".lora_A." in n or ".lora_B." in n}
