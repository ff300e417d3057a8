"""The reusable training core: HF Trainer driving DeepSpeed ZeRO (or torch DDP), for any task recipe.

A recipe hands over a *loss module* (an ``nn.Module`` whose ``forward(**batch)`` returns a dict with a
``loss`` tensor plus detached scalars to log), a map-style dataset, a collate function and a
param-group builder. The engine owns everything task-independent:

* the launcher contract (``torchrun``/``deepspeed``/slurm env -> `DistContext`), gloo on CPU, NCCL on GPU;
* the optimizer (``torch.optim.AdamW`` over the recipe's groups) and a `LambdaLR` warm-up + cosine
  schedule that keeps per-group lr ratios (our DeepSpeed configs have no scheduler block);
* logging: progress, ``metrics.jsonl`` (one JSON object per log step, rank 0), TensorBoard;
* checkpoints every ``save_steps`` (Trainer + DeepSpeed ``checkpoint-N/``) and exact resume: model,
  optimizer, scheduler, per-rank python/numpy/torch RNG, and data position (seen batches are skipped;
  the sampler is seeded per epoch, and the recipe's dataset is seeded per sample and epoch);
* ``run_info.json``: the engine actually used (``DeepSpeedEngine`` + ZeRO stage, or DDP), because
  Trainer/accelerate silently fall back to DDP for FSDP on CPU (engines.md) and tests must see which.

Measured on CPU (engines.md): Trainer + DeepSpeed ZeRO-1/2/3 runs the real DeepSpeed engine with gloo and
resumes bit-exactly after ``kill -9``; FSDP through Trainer silently becomes DDP there, so it is not offered.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import Trainer, TrainerCallback

from internvl.core.distributed import DistContext
from internvl.core.errors import ConfigError

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
METRICS_FILE = "metrics.jsonl"
RUN_INFO_FILE = "run_info.json"
RECIPE_FILE = "recipe.json"  # the recipe a run folder was trained with, for the recipes' --resume checks


@dataclass
class EngineSettings:
    output_dir: Path
    per_device_batch_size: int
    gradient_accumulation_steps: int
    lr: float
    warmup_steps: int
    epochs: float = 1.0
    max_steps: int = -1
    max_seconds: float = 0.0  # > 0: stop after this many seconds of training; the schedule follows time too
    max_grad_norm: float = 1.0
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    precision: str = "bf16"
    backend: str = "deepspeed"
    zero_stage: int = 1
    deepspeed_config: str | None = None
    logging_steps: int = 1
    save_steps: int = 100
    save_total_limit: int | None = 5
    tensorboard: bool = True
    seed: int = 42
    num_workers: int = 0
    cpu_threads: int = 0  # torch intra-op threads on a CPU run, set for the training only (0: leave torch's)
    extra_callbacks: list = field(default_factory=list)

    @classmethod
    def from_recipe(cls, recipe, output_dir: Path, plan, warmup_steps: int) -> EngineSettings:
        """Settings from a recipe's ``optim``/``schedule``/``engine``/``log``/``data`` sections (retrieval and
        SFT recipes share those field names) and its resolved batch plan; the recipe decides the warm-up."""
        r = recipe
        return cls(
            output_dir=output_dir,
            per_device_batch_size=plan.per_device_batch_size,
            gradient_accumulation_steps=plan.gradient_accumulation_steps,
            lr=r.optim.lr,
            warmup_steps=warmup_steps,
            epochs=r.schedule.epochs,
            max_steps=r.schedule.max_steps,
            max_seconds=r.schedule.max_seconds,
            max_grad_norm=r.optim.max_grad_norm,
            betas=tuple(r.optim.betas),
            eps=r.optim.eps,
            precision=r.engine.precision,
            backend=r.engine.backend,
            zero_stage=r.engine.zero_stage,
            deepspeed_config=r.engine.deepspeed_config,
            logging_steps=r.log.logging_steps,
            save_steps=r.log.save_steps,
            save_total_limit=r.log.save_total_limit,
            tensorboard=r.log.tensorboard,
            seed=r.seed,
            num_workers=r.data.num_workers,
            cpu_threads=r.engine.cpu_threads,
        )


def deepspeed_config(settings: EngineSettings) -> dict:
    """The shipped ``configs/deepspeed/zero{stage}.json`` (or the user's file), checked for blocks we replace."""
    return read_deepspeed_config(settings.zero_stage, settings.deepspeed_config)


def zero3_live_parameters(zero_stage: int, deepspeed_config_path: str | None) -> float:
    """ZeRO-3's gathered-parameter budget (live parameters + prefetch bucket) from the DeepSpeed config a run
    would use, which the recipes' memory estimates add; 0 for any other stage."""
    if zero_stage != 3:
        return 0.0
    z = read_deepspeed_config(zero_stage, deepspeed_config_path).get("zero_optimization", {})
    return float(z.get("stage3_max_live_parameters", 1e9)) + float(z.get("stage3_prefetch_bucket_size", 5e7))


def read_deepspeed_config(zero_stage: int, path: str | None = None) -> dict:
    """`deepspeed_config` from the two fields it needs (the recipes call it before any settings exist)."""
    path = Path(path) if path else CONFIG_DIR / "deepspeed" / f"zero{zero_stage}.json"
    if not path.is_file():
        raise ConfigError(f"DeepSpeed config not found: {path}")
    try:
        cfg = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}:{e.lineno}: invalid JSON ({e.msg})") from None
    for block, why in (
        ("optimizer", "the optimizer (with its layer-decay groups) is built by the recipe"),
        (
            "scheduler",
            (
                "DeepSpeed's scheduler writes one lr into every param group, flattening "
                "layer-wise lr decay (the reference's bug)"
            ),
        ),
    ):
        if block in cfg:
            raise ConfigError(f"{path}: remove the '{block}' block: {why}")
    return cfg


def _check_backend_available(settings: EngineSettings) -> None:
    from internvl.training import check_training_stack

    check_training_stack()
    if settings.backend == "deepspeed":
        try:
            import deepspeed  # noqa: F401
        except ImportError:
            raise ConfigError(
                "engine.backend=deepspeed but DeepSpeed is not installed: "
                "DS_BUILD_OPS=0 pip install 'internvl[deepspeed]' (or set engine.backend=ddp)"
            ) from None


def training_arguments(settings: EngineSettings, dist: DistContext):
    """HF ``TrainingArguments`` for the settings (CPU runs use gloo; fp16 is refused)."""
    from transformers import TrainingArguments

    _check_backend_available(settings)
    cuda = torch.cuda.is_available()
    kwargs: dict[str, Any] = {}
    if settings.backend == "deepspeed":
        kwargs["deepspeed"] = deepspeed_config(settings)
    if not cuda and dist.world_size > 1:
        kwargs["ddp_backend"] = "gloo"
    return TrainingArguments(
        output_dir=str(settings.output_dir),
        per_device_train_batch_size=settings.per_device_batch_size,
        gradient_accumulation_steps=settings.gradient_accumulation_steps,
        learning_rate=settings.lr,
        adam_beta1=settings.betas[0],
        adam_beta2=settings.betas[1],
        adam_epsilon=settings.eps,
        warmup_steps=settings.warmup_steps,
        lr_scheduler_type="cosine",
        num_train_epochs=settings.epochs,
        max_steps=settings.max_steps,
        max_grad_norm=settings.max_grad_norm,
        bf16=settings.precision == "bf16",
        use_cpu=not cuda,
        logging_steps=settings.logging_steps,
        save_strategy="steps",
        save_steps=settings.save_steps,
        save_total_limit=settings.save_total_limit,
        seed=settings.seed,
        data_seed=settings.seed,
        dataloader_num_workers=settings.num_workers,
        dataloader_drop_last=True,  # equal shards: the contrastive gather needs the same batch on every rank
        remove_unused_columns=False,
        report_to="none",
        disable_tqdm=not dist.is_main,
        **kwargs,
    )


class _JsonlLogger(TrainerCallback):
    """Writes every log event of rank 0 as one JSON line."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def on_log(self, args, state, control, logs=None, optimizer=None, **kwargs):
        if state.is_world_process_zero and logs:
            record = {"step": state.global_step, "epoch": state.epoch, **logs}
            if "loss" in logs and optimizer is not None:
                # [lr, lr_scale] per group: shows the layer-wise ratios the schedule keeps.
                record["group_lr"] = {
                    g.get("name", str(i)): [g["lr"], g.get("lr_scale", 1.0)]
                    for i, g in enumerate(optimizer.param_groups)
                }
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")


class _EpochSetter(TrainerCallback):
    """Tells the dataset the epoch before each epoch's workers start (negatives/augmentation are per epoch)."""

    def __init__(self, dataset) -> None:
        self.dataset = dataset

    def on_epoch_begin(self, args, state, control, **kwargs):
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(math.floor(state.epoch + 1e-9) if state.epoch else 0)


class _TimeBudget(TrainerCallback):
    """Stops training once ``max_seconds`` have passed since the schedule started (``schedule.max_seconds``)."""

    def __init__(self, max_seconds: float) -> None:
        from internvl.training.optim import WallClock

        self.max_seconds, self.clock = max_seconds, WallClock()

    def on_step_end(self, args, state, control, **kwargs):
        if self.clock.elapsed() >= self.max_seconds:
            control.should_training_stop = True


class EngineTrainer(Trainer):
    """Trainer with the recipe's param groups, a ratio-preserving schedule and logged loss parts."""

    def __init__(
        self, *args, param_groups_fn: Callable[[], list[dict]], sampler_fn: Callable | None = None, **kwargs
    ) -> None:
        super().__init__(*args, **kwargs)
        self._param_groups_fn = param_groups_fn
        self._sampler_fn = sampler_fn
        self.time_budget = next((c for c in self.callback_handler.callbacks if isinstance(c, _TimeBudget)), None)
        self._parts: dict[str, list[float]] = {}
        # Our loss modules return a per-micro-batch mean and ignore num_items_in_batch: Trainer must divide
        # by the accumulation steps (its signature sniffing sees **batch and would skip that when the batch
        # holds "labels", making SFT gradients accumulation-times too large).
        self.model_accepts_loss_kwargs = False

    def _get_train_sampler(self, train_dataset=None):
        """The recipe's sampler (e.g. SFT length grouping, with ``set_epoch``), else Trainer's random one."""
        return self._sampler_fn() if self._sampler_fn is not None else super()._get_train_sampler(train_dataset)

    def create_optimizer(self, model=None):
        if self.optimizer is None:
            from internvl.training.optim import build_optimizer

            a = self.args
            self.optimizer = build_optimizer(
                self._param_groups_fn(), a.learning_rate, (a.adam_beta1, a.adam_beta2), a.adam_epsilon
            )
        return self.optimizer

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        if self.lr_scheduler is None:
            from internvl.training.optim import warmup_cosine, warmup_cosine_timed

            opt = optimizer or self.optimizer
            if self.time_budget is not None:
                self.lr_scheduler = warmup_cosine_timed(
                    opt,
                    self.args.warmup_steps,
                    num_training_steps,
                    self.time_budget.max_seconds,
                    self.time_budget.clock,
                )
            else:
                self.lr_scheduler = warmup_cosine(opt, self.args.warmup_steps, num_training_steps)
            self._created_lr_scheduler = True
        return self.lr_scheduler

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        out = model(**inputs)
        for key, value in out.items():
            if key != "loss":
                self._parts.setdefault(key, []).append(float(value))
        return (out["loss"], out) if return_outputs else out["loss"]

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs and self._parts:
            keys = sorted(self._parts)
            local = torch.tensor([sum(self._parts[k]) / len(self._parts[k]) for k in keys], dtype=torch.float64)
            if torch.distributed.is_available() and torch.distributed.is_initialized():
                local = local.to(self.args.device)
                torch.distributed.all_reduce(local)
                local = local.cpu() / torch.distributed.get_world_size()
            logs.update({k: round(float(v), 8) for k, v in zip(keys, local, strict=True)})
            self._parts.clear()
        super().log(logs, start_time)


class Engine:
    """Trains a loss module with HF Trainer + DeepSpeed/DDP; see the module docstring."""

    def __init__(
        self,
        loss_module: nn.Module,
        train_dataset,
        settings: EngineSettings,
        dist: DistContext,
        *,
        param_groups_fn: Callable[[], list[dict]],
        collate_fn=None,
        sampler_fn: Callable | None = None,
    ) -> None:
        from transformers.integrations import TensorBoardCallback

        self.settings = settings
        self.dist = dist
        settings.output_dir.mkdir(parents=True, exist_ok=True)
        callbacks = [
            _JsonlLogger(settings.output_dir / METRICS_FILE),
            _EpochSetter(train_dataset),
            *settings.extra_callbacks,
        ]
        if settings.max_seconds > 0:
            callbacks.append(_TimeBudget(settings.max_seconds))
        if settings.tensorboard and dist.is_main:
            from torch.utils.tensorboard import SummaryWriter

            callbacks.append(TensorBoardCallback(SummaryWriter(str(settings.output_dir / "tensorboard"))))
        self.trainer = EngineTrainer(
            model=loss_module,
            args=training_arguments(settings, dist),
            train_dataset=train_dataset,
            data_collator=collate_fn or torch.utils.data.default_collate,
            callbacks=callbacks,
            param_groups_fn=param_groups_fn,
            sampler_fn=sampler_fn,
        )

    def last_checkpoint(self) -> str | None:
        return last_complete_checkpoint(self.settings.output_dir, self.dist.world_size)

    def train(self, resume: bool = False) -> dict:
        ckpt = self.last_checkpoint() if resume else None
        if resume and ckpt is None and self.dist.is_main:
            print(f"--resume: no checkpoint-* in {self.settings.output_dir}; starting from step 0", flush=True)
        threads = torch.get_num_threads()
        if self.settings.cpu_threads and not torch.cuda.is_available():
            torch.set_num_threads(self.settings.cpu_threads)
        try:
            result = self.trainer.train(resume_from_checkpoint=ckpt)
        finally:
            torch.set_num_threads(threads)
        info = self.engine_info()
        info["cpu_threads"] = self.settings.cpu_threads or threads
        info["resumed_from"] = ckpt
        info["global_step"] = self.trainer.state.global_step
        info["train_loss"] = result.training_loss
        info["group_lr"] = {g.get("name", str(i)): g["lr"] for i, g in enumerate(self.trainer.optimizer.param_groups)}
        if self.dist.is_main:
            (self.settings.output_dir / RUN_INFO_FILE).write_text(json.dumps(info, indent=2))
        return info

    def engine_info(self) -> dict:
        """What actually ran: the wrapper type and, for DeepSpeed, the ZeRO stage."""
        t = self.trainer
        wrapped = t.model_wrapped
        info = {
            "wrapper": type(wrapped).__name__,
            "deepspeed": bool(t.is_deepspeed_enabled),
            "world_size": self.dist.world_size,
            "device": str(t.args.device),
        }
        if t.is_deepspeed_enabled:
            info["zero_stage"] = int(wrapped.zero_optimization_stage())
            info["optimizer"] = type(wrapped.optimizer).__name__
        return info

    def full_state_dict(self) -> dict[str, torch.Tensor]:
        """The loss module's complete state dict on every rank (ZeRO-3 parameters gathered)."""
        t = self.trainer
        if t.is_deepspeed_enabled and t.model_wrapped.zero_optimization_stage() == 3:
            import deepspeed

            module = t.model_wrapped.module
            with deepspeed.zero.GatheredParameters(list(module.parameters()), modifier_rank=None):
                return {k: v.detach().clone().cpu() for k, v in module.state_dict().items()}
        module = t.model_wrapped.module if hasattr(t.model_wrapped, "module") else t.model
        return {k: v.detach().cpu() for k, v in module.state_dict().items()}

    def barrier(self) -> None:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.barrier()


def last_complete_checkpoint(output_dir: str | os.PathLike, world_size: int) -> str | None:
    """The newest ``checkpoint-N`` whose every file was written (a ``kill -9`` can leave a partial one).

    Trainer writes the trainer state after the weights, optimizer shards and rank 0's RNG; each rank
    writes its own RNG file. A folder missing any of them is skipped.
    """
    root = Path(output_dir)
    if not root.is_dir():
        return None
    rng = ["rng_state.pth"] if world_size == 1 else [f"rng_state_{r}.pth" for r in range(world_size)]
    found = []
    for d in root.glob("checkpoint-*"):
        step = d.name.removeprefix("checkpoint-")
        if step.isdigit() and (d / "trainer_state.json").is_file() and all((d / f).is_file() for f in rng):
            found.append((int(step), d))
    return str(max(found)[1]) if found else None


def refuse_to_overwrite(output_dir: Path) -> None:
    """A run without --resume never writes over the checkpoints already in its folder."""
    if any(output_dir.glob("checkpoint-*")):
        raise ConfigError(
            f"{output_dir} already holds checkpoints of a run; pass --resume to continue it, "
            "or set another log.output_dir (nothing is overwritten)"
        )


def write_recipe(output_dir: Path, recipe: dict) -> None:
    """The run's recipe beside its checkpoints (what a later --resume is compared against)."""
    (output_dir / RECIPE_FILE).write_text(json.dumps(recipe, indent=2))


def read_metrics(output_dir: str | os.PathLike) -> list[dict]:
    """The ``metrics.jsonl`` records of a run (later records win on a resumed step)."""
    path = Path(output_dir) / METRICS_FILE
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []
