"""Optimizer parameter groups with layer-wise lr decay, and the warm-up + cosine schedule.

Groups follow the reference's custom ``create_optimizer`` (spec §7.5): a layer id per parameter from
the model (`InternVLModel.layer_id`), scale ``decay ** (top - id - 1)`` capped at 1, weight decay 0 for
1-D parameters and biases, groups keyed ``{family}_layer_{id}_{decay|no_decay}``.

The schedule is a `LambdaLR` (transformers' ``get_cosine_schedule_with_warmup``), which multiplies each
group's own initial lr by one factor, so the layer-wise ratios hold at every step. The reference's
DeepSpeed ``WarmupDecayLR`` wrote one scalar lr into every group and flattened the decay after the
first step (spec §7.6, O1); our DeepSpeed configs carry no scheduler block for that reason.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from internvl.core.errors import ConfigError


def no_weight_decay(name: str, param: torch.Tensor) -> bool:
    """1-D tensors (norms, layer scales, biases) and ``*.bias``; 0-dim ``logit_scale`` *is* decayed (O2).

    A parameter flagged ``decay_as_scalar`` (a 0-dim one reshaped to (1,) for DeepSpeed) keeps its 0-dim rule;
    one flagged ``exclude_from_decay`` by a recipe option (e.g. ``optim.no_decay_position_embedding``) gets none.
    """
    if getattr(param, "exclude_from_decay", False):
        return True
    if getattr(param, "decay_as_scalar", False):
        return False
    return param.ndim == 1 or name.endswith(".bias")


def param_groups(
    model: nn.Module,
    lr: float,
    weight_decay: float,
    layer_decay: dict[str, float] | None = None,
    named_parameters: Iterable[tuple[str, nn.Parameter]] | None = None,
) -> list[dict]:
    """Param groups for ``torch.optim.AdamW`` over the trainable parameters of ``model``.

    Args:
        model: an `InternVLModel` (provides ``layer_id``/``num_layer_ids``); any module when
            ``layer_decay`` is None (every scale 1).
        layer_decay: per family (``vit``, ``qllama``); ``other`` uses the ``qllama`` rate and top id, as
            the reference does. None or all 1.0: no decay.
        named_parameters: default ``model.named_parameters()`` with ``requires_grad``.

    Each group has ``params``, ``param_names``, ``lr`` (= scale * lr), ``weight_decay``, ``lr_scale``, ``name``.
    """
    named = (
        list(named_parameters)
        if named_parameters is not None
        else [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    )
    decay = {k: float(v) for k, v in (layer_decay or {}).items()}
    unknown = set(decay) - {"vit", "qllama"}
    if unknown:
        raise ConfigError(f"layer_decay has unknown families {sorted(unknown)}; expected 'vit' and/or 'qllama'")
    use_layers = any(v != 1.0 for v in decay.values())
    if use_layers and not hasattr(model, "layer_id"):
        raise ConfigError(f"layer-wise lr decay needs a model with layer ids; {type(model).__name__} has none")
    top = model.num_layer_ids() if use_layers else {}
    groups: dict[str, dict] = {}
    for name, p in named:
        family, layer = model.layer_id(name) if use_layers else ("all", 0)
        if use_layers:
            rate_family = "vit" if family == "vit" else "qllama"
            scale = min(1.0, decay.get(rate_family, 1.0) ** (top[rate_family] - layer - 1))
        else:
            scale = 1.0
        nd = no_weight_decay(name, p)
        key = f"{family}_layer_{layer}_{'no_decay' if nd else 'decay'}"
        g = groups.setdefault(
            key,
            {
                "name": key,
                "params": [],
                "param_names": [],
                "lr": scale * lr,
                "weight_decay": 0.0 if nd else weight_decay,
                "lr_scale": scale,
            },
        )
        g["params"].append(p)
        g["param_names"].append(name)
    return list(groups.values())


def build_optimizer(groups: list[dict], lr: float, betas=(0.9, 0.999), eps: float = 1e-8) -> torch.optim.AdamW:
    """``torch.optim.AdamW`` (the reference's ``adamw_torch``) over prepared groups."""
    return torch.optim.AdamW(groups, lr=lr, betas=tuple(betas), eps=eps)


def warmup_cosine(optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int):
    """Linear warm-up then cosine to 0, per group relative to its own initial lr (ratios preserved)."""
    from transformers import get_cosine_schedule_with_warmup

    return get_cosine_schedule_with_warmup(optimizer, warmup_steps, max(total_steps, 1))


class WallClock:
    """Seconds since the first call of `elapsed` (the schedule's first lr, i.e. the start of training)."""

    def __init__(self) -> None:
        self.start: float | None = None

    def elapsed(self) -> float:
        import time

        if self.start is None:
            self.start = time.monotonic()
        return time.monotonic() - self.start


def warmup_cosine_timed(
    optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int, max_seconds: float, clock: WallClock
):
    """`warmup_cosine` over a wall-clock budget: progress = max(step / total, elapsed / max_seconds), the
    warm-up the same fraction ``warmup_steps / total_steps`` of it, so a run cut by its time budget still
    ends its cosine at 0 whatever the machine's speed."""
    import math

    total = max(total_steps, 1)
    w = min(max(warmup_steps, 0) / total, 0.999)

    def factor(step: int) -> float:
        p = min(1.0, max(step / total, clock.elapsed() / max_seconds))
        if p < w:
            return max(p / w, 1.0 / total)
        return 0.5 * (1.0 + math.cos(math.pi * (p - w) / (1.0 - w)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
