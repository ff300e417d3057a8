"""InternVL-Chat SFT recipes as data: ``configs/sft/*.yaml`` -> a typed, validated `SFTRecipe`.

The shipped recipes are the reference's (chat spec §8.2-8.3): ``v1_2_finetune`` (InternVL-Chat-V1-2 from
InternViT-6B-448px-V1-2 + Nous-Hermes-2-Yi-34B + the released projector, everything trainable) and the
"2nd fine-tune" of a released checkpoint on custom data, ``v1_2_2nd_finetune_full`` (LLM + MLP) and
``v1_2_2nd_finetune_lora`` (LoRA rank 16 on the LLM). Unknown keys and wrong types are errors naming the
key; ``overrides`` are ``section.key=value`` strings parsed as YAML scalars.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from internvl.core.errors import ConfigError
from internvl.data.conversation import list_conv_templates
from internvl.training.chat_methods import ChatTrainable
from internvl.training.config import EngineSection

SFT_CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs" / "sft"


@dataclass
class SFTModelSection:
    path: str = ""  # a full InternVL-Chat checkpoint (2nd fine-tune) ...
    vision_path: str = ""  # ... or assembled: InternViT directory,
    llm_path: str = ""  # LLM directory (tokenizer + weights),
    mlp_path: str = ""  # projector weights (empty: a new projector)
    ps_version: str = "v1"  # V1-2 weights need v1 (the reference's CLI default v2 is wrong for them)
    vision_select_layer: int = -1
    force_image_size: int = 448
    downsample_ratio: float = 0.5
    drop_path_rate: float = 0.0
    gradient_checkpointing: bool = True


@dataclass
class SFTDataSection:
    meta_path: str = ""
    template: str = "Hermes-2"
    system_message: str | None = None
    max_length: int = 2048
    dynamic_image_size: bool = False
    use_thumbnail: bool = False
    min_dynamic_patch: int = 1
    max_dynamic_patch: int = 12
    pad2square: bool = False
    normalize_type: str = "imagenet"
    group_by_length: bool = True
    skip_bad_samples: bool = False  # skip + count invalid samples instead of stopping (data check runs first)
    num_workers: int = 4


@dataclass
class SFTMethodSection:
    freeze_vision: bool = False
    freeze_mlp: bool = False
    freeze_llm: bool = False
    unfreeze_vit_layers: int = 0
    vision_lora_rank: int = 0
    llm_lora_rank: int = 0
    lora_dropout: float = 0.05

    def trainable(self) -> ChatTrainable:
        return ChatTrainable(**dataclasses.asdict(self))


@dataclass
class SFTOptimSection:
    lr: float = 1e-5
    weight_decay: float = 0.05
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    max_grad_norm: float = 1.0


@dataclass
class SFTScheduleSection:
    epochs: float = 1
    max_steps: int = -1
    max_seconds: float = 0.0  # > 0: wall-clock budget; stops after it, cosine over max(step, time) progress
    warmup_ratio: float = 0.03  # warm-up steps = ceil(ratio x total steps), then cosine (HF's schedule)
    lr_scheduler: str = "cosine"
    global_batch_size: int = 512
    per_device_batch_size: int | None = None
    gradient_accumulation_steps: int | None = None


@dataclass
class SFTEngineSection(EngineSection):
    zero_stage: int = 3  # the V1-2 guide's ZeRO-3 (retrieval fine-tuning defaults to 1)


@dataclass
class SFTLogSection:
    output_dir: str = "work_dirs/sft"
    logging_steps: int = 1
    save_steps: int = 200
    save_total_limit: int = 3
    tensorboard: bool = True


@dataclass
class SFTRecipe:
    """One InternVL-Chat supervised fine-tuning run."""

    name: str = "sft"
    seed: int = 42
    model: SFTModelSection = field(default_factory=SFTModelSection)
    data: SFTDataSection = field(default_factory=SFTDataSection)
    method: SFTMethodSection = field(default_factory=SFTMethodSection)
    optim: SFTOptimSection = field(default_factory=SFTOptimSection)
    schedule: SFTScheduleSection = field(default_factory=SFTScheduleSection)
    engine: SFTEngineSection = field(default_factory=SFTEngineSection)
    log: SFTLogSection = field(default_factory=SFTLogSection)

    def check_paths(self) -> SFTRecipe:
        """The local paths the run reads or writes, checked before torch and the model stack load."""
        from internvl.training.config import require_checkpoint_dir, require_file, require_output_dir

        m = self.model
        if m.path:
            require_checkpoint_dir(m.path, "model.path", "an InternVL-Chat checkpoint")
        else:
            require_checkpoint_dir(m.vision_path, "model.vision_path", "an InternViT checkpoint")
            require_checkpoint_dir(m.llm_path, "model.llm_path", "a causal LM (LLaMA / Qwen2 / ...)")
        if m.mlp_path:
            require_file(m.mlp_path, "model.mlp_path")
        require_file(self.data.meta_path, "data.meta_path")
        require_output_dir(self.log.output_dir)
        return self

    def validate(self) -> SFTRecipe:
        m, d, s, e = self.model, self.data, self.schedule, self.engine
        parts = m.vision_path and m.llm_path
        if bool(m.path) == bool(parts):
            raise ConfigError(
                "set either model.path (a chat checkpoint) or model.vision_path + model.llm_path "
                f"(assembled from parts); got path={m.path!r}, vision_path={m.vision_path!r}, "
                f"llm_path={m.llm_path!r}"
            )
        if m.mlp_path and not parts:
            raise ConfigError("model.mlp_path only applies when assembling from model.vision_path + model.llm_path")
        if m.ps_version not in ("v1", "v2"):
            raise ConfigError(f"model.ps_version={m.ps_version!r}; expected v1 (V1-2 weights) or v2")
        if not 0.0 <= m.drop_path_rate < 1.0:
            raise ConfigError(f"model.drop_path_rate={m.drop_path_rate}; expected a rate in [0, 1)")
        if not d.meta_path:
            raise ConfigError("data.meta_path is empty; set it to a meta JSON (check it with `internvl data check`)")
        if d.template not in list_conv_templates():
            raise ConfigError(f"data.template={d.template!r}; expected one of {list_conv_templates()}")
        if d.max_length < 16:
            raise ConfigError(f"data.max_length={d.max_length}; expected >= 16 (2048 in the V1-2 recipe)")
        if not 1 <= d.min_dynamic_patch <= d.max_dynamic_patch:
            raise ConfigError(
                f"data.min_dynamic_patch={d.min_dynamic_patch}, max_dynamic_patch={d.max_dynamic_patch}; "
                "expected 1 <= min <= max"
            )
        if s.lr_scheduler != "cosine":
            raise ConfigError(
                f"schedule.lr_scheduler={s.lr_scheduler!r}; the training engine implements the "
                "reference's linear warm-up + cosine decay only (expected cosine)"
            )
        if not 0.0 <= s.warmup_ratio < 1.0:
            raise ConfigError(f"schedule.warmup_ratio={s.warmup_ratio}; expected a fraction in [0, 1)")
        if s.global_batch_size < 1:
            raise ConfigError(f"schedule.global_batch_size={s.global_batch_size}; expected >= 1")
        if s.per_device_batch_size is not None and s.gradient_accumulation_steps is not None:
            per_step = s.per_device_batch_size * s.gradient_accumulation_steps
            if s.global_batch_size % per_step:
                raise ConfigError(
                    f"schedule.global_batch_size={s.global_batch_size} is not a multiple of "
                    f"per_device_batch_size x gradient_accumulation_steps = {per_step}"
                )
        if e.backend not in ("deepspeed", "ddp"):
            raise ConfigError(f"engine.backend={e.backend!r}; expected deepspeed or ddp")
        if e.zero_stage not in (0, 1, 2, 3):
            raise ConfigError(f"engine.zero_stage={e.zero_stage}; expected 0-3")
        if e.precision not in ("bf16", "fp32"):
            raise ConfigError(f"engine.precision={e.precision!r}; expected bf16 or fp32")
        e.check_cpu_threads()
        self.method.trainable()  # validates the LoRA/freezing options
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def world_size(self) -> int | None:
        """Devices implied by the batch settings (global / (per-device x accumulation)), when both are set."""
        s = self.schedule
        if s.per_device_batch_size is None or s.gradient_accumulation_steps is None:
            return None
        return s.global_batch_size // (s.per_device_batch_size * s.gradient_accumulation_steps)


def load_sft_recipe(
    path: str | os.PathLike, overrides: list[str] | tuple[str, ...] = (), validate: bool = True
) -> SFTRecipe:
    """A recipe file, or a shipped recipe by name (``v1_2_finetune``), with ``key=value`` overrides
    (the shared loader of `internvl.training.config`)."""
    from internvl.training.config import load_recipe_file

    return load_recipe_file(SFTRecipe, path, overrides, task="sft", validate=validate)
