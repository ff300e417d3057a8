"""Stage-2 retrieval fine-tuning of InternVL-C/G (full / head / LoRA), on the shared training engine.

``RetrievalFinetune(recipe, dist)``: `plan` (batch arithmetic, pre-flight over the data: no model is
loaded), `describe` (the ``--dry-run`` report), `run` (load, apply the method, train with
`internvl.training.engine.Engine`, export a checkpoint `InternVLModel.from_pretrained` and
``internvl eval retrieval`` read, then validate recall@k on the held-out split).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from transformers import TrainerCallback

from internvl.core.distributed import DistContext
from internvl.core.errors import ConfigError, DataFormatError
from internvl.data.datasets import load_registry
from internvl.data.pairs import (
    CaptionPair,
    PairCollate,
    PairTokenizer,
    RetrievalPairs,
    find_bad_images,
    read_caption_pairs,
)
from internvl.evaluation.runtime import read_records
from internvl.models import checkpoint as ckpt
from internvl.models.internvl_cg import InternVLConfig, InternVLModel, merge_lora_state_dict
from internvl.training import memory
from internvl.training.config import BatchPlan, RetrievalRecipe, require_checkpoint_dir, resolve_batch
from internvl.training.engine import (
    RECIPE_FILE,
    Engine,
    EngineSettings,
    read_metrics,
    refuse_to_overwrite,
    write_recipe,
    zero3_live_parameters,
)
from internvl.training.losses import retrieval_loss
from internvl.training.methods import (
    QLLAMA_LORA_TARGETS,
    VISION_LORA_TARGETS,
    apply_method,
    lora_state_dict,
    parameter_counts,
)
from internvl.training.optim import param_groups

logger = logging.getLogger(__name__)
FINAL_DIR = "final"
TOKENIZER_FILES = (
    "tokenizer.model",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
)
# Recipe values a resumed run must share with the checkpoint it continues (everything that changes the math).
RESUME_KEYS = (
    "model",
    "method",
    "optim",
    "schedule.global_batch_size",
    "schedule.warmup_steps",
    "schedule.epochs",
    "schedule.max_steps",
    "schedule.max_seconds",
    "engine.precision",
    "data.train",
    "data.max_length",
    "seed",
)


class RetrievalLossModule(nn.Module):
    """The unit the engine trains: ``forward(**batch)`` -> ``{"loss", "loss_itm", "loss_itc"}``.

    Rank and world size are fixed at construction (the loss reads no global state). Under ZeRO-3 the
    model's own parameters (query tokens, text projection, logit scale) are used outside any submodule's
    forward, so they are registered as external parameters of this module for DeepSpeed to gather.
    DeepSpeed (0.19) cannot broadcast 0-dim parameters, so ``logit_scale`` trains as shape (1,) (still
    weight-decayed like the reference's 0-dim one) and is saved back as a 0-dim tensor by `export`.
    """

    def __init__(
        self,
        model: InternVLModel,
        dist: DistContext,
        zero3: bool = False,
        *,
        objective: str = "itm_itc",
        scale_max: float | None = None,
    ) -> None:
        super().__init__()
        self.objective, self.scale_max = objective, scale_max
        if model.logit_scale.ndim == 0:
            scale = model.logit_scale
            model.logit_scale = nn.Parameter(scale.detach().reshape(1), requires_grad=scale.requires_grad)
            model.logit_scale.decay_as_scalar = True
        self.model = model
        self.rank, self.world_size = dist.rank, dist.world_size
        if zero3:
            import deepspeed

            for p in model.parameters(recurse=False):
                deepspeed.zero.register_external_parameter(self, p)

    def forward(self, **batch: torch.Tensor) -> dict[str, torch.Tensor]:
        out = retrieval_loss(
            self.model, batch, self.rank, self.world_size, objective=self.objective, scale_max=self.scale_max
        )
        return {"loss": out.loss, "loss_itm": out.loss_itm, "loss_itc": out.loss_itc}


class ValidationCallback(TrainerCallback):
    """In-loop recall@k on the held-out split every ``every`` optimizer steps (rank 0, live weights).

    Uses no random numbers, so exact resume is unaffected; the other ranks wait at the next collective.
    """

    def __init__(self, model: InternVLModel, tokenizer, records, every: int, output_dir: Path) -> None:
        self.model, self.tokenizer, self.records, self.every, self.output_dir = (
            model,
            tokenizer,
            records,
            every,
            output_dir,
        )

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step % self.every or not state.is_world_process_zero or state.global_step >= state.max_steps:
            return
        from internvl.evaluation.retrieval import evaluate_retrieval

        self.model.eval()
        with torch.no_grad():
            metrics = evaluate_retrieval(
                self.model, self.tokenizer, self.records, batch_size=32, progress=False, amp=False
            )
        self.model.train()
        _append_metrics(self.output_dir, {"step": state.global_step, **{f"val/{k}": v for k, v in metrics.items()}})


@dataclass
class DataPlan:
    pairs: list[CaptionPair]
    skipped: list[str]
    val: list | None


class RetrievalFinetune:
    def __init__(self, recipe: RetrievalRecipe, dist: DistContext | None = None) -> None:
        self.recipe = recipe
        self.dist = dist or DistContext()
        self.output_dir = Path(recipe.log.output_dir)

    # -- before any model is loaded -------------------------------------------------------------------
    def batch_plan(self) -> BatchPlan:
        s = self.recipe.schedule
        return resolve_batch(
            s.global_batch_size, self.dist.world_size, s.per_device_batch_size, s.gradient_accumulation_steps
        )

    def model_config(self) -> InternVLConfig:
        path = Path(self.recipe.model.path)
        require_checkpoint_dir(path, "model.path", "an InternVL-C/G checkpoint")
        return InternVLConfig.from_pretrained(path)

    def prepare_data(self) -> DataPlan:
        """Pre-flight: parse the annotation (file:line:field errors) and stat every image."""
        d = self.recipe.data
        registry = load_registry(d.registry, data_root=d.data_root)
        spec = registry.get(d.train)
        empty = "skip" if d.skip_bad_samples else "error"
        pairs, skipped = read_caption_pairs(spec.annotation, spec.root, spec.format, max_words=d.max_words, empty=empty)
        bad = find_bad_images(pairs, verify=d.verify_images)
        if bad:
            if not d.skip_bad_samples:  # one line (the CLI's `error: ...`): the first file in full, a count
                first, why = bad[0]
                files = list(dict.fromkeys(p.image_path for p, _ in bad))
                more = [str(f) for f in files[1:3]]
                also = f"; also {', '.join(more)}" if more else ""
                also += f" and {len(files) - 3} more" if len(files) > 3 else ""
                raise DataFormatError(
                    f"dataset '{spec.name}': {first.source}: field 'image': {why}{also}; {len(files)} image "
                    f"file(s) ({len(bad)} of {len(pairs)} samples) are missing or unreadable under {spec.root}: "
                    "fix the files or the root (--set data.data_root=DIR or the registry entry), or set "
                    "data.skip_bad_samples=true to skip and count them"
                )
            skipped += [p.source for p, _ in bad]
            gone = {id(p) for p, _ in bad}
            pairs = [p for p in pairs if id(p) not in gone]
        if not pairs:
            raise DataFormatError(f"dataset '{spec.name}': no usable samples in {spec.annotation}")
        val = None
        if d.val:
            val = read_records(registry.get(d.val), d.val_limit)
        return DataPlan(pairs, skipped, val)

    def describe(self) -> dict:
        """The ``--dry-run`` report: resolved recipe, batch, parameters per module, memory per device."""
        plan = self.batch_plan()
        cfg = self.model_config()
        size = self.recipe.model.image_size or cfg.image_size
        with torch.device("meta"):
            model = InternVLModel(dataclasses.replace(cfg, force_image_size=size))
        self._apply_method(model)
        counts = parameter_counts(model)
        e = self.recipe.engine
        stage = e.zero_stage if e.backend == "deepspeed" else 0
        est = memory.estimate(
            cfg,
            counts,
            batch=plan.per_device_batch_size,
            text_length=self.recipe.data.max_length,
            image_size=size,
            precision=e.precision,
            zero_stage=stage,
            world_size=plan.world_size,
            checkpointing=self.recipe.model.gradient_checkpointing,
            zero3_live_params=zero3_live_parameters(stage, e.deepspeed_config),
        )
        return {
            "recipe": self.recipe.to_dict(),
            "batch": dataclasses.asdict(plan),
            "image_size": size,
            "parameters": {k: {"trainable": t, "total": n} for k, (t, n) in counts.items()},
            "memory_per_device_gib": {**est.as_gib(), "zero_stage": stage, "precision": e.precision},
        }

    # -- training -------------------------------------------------------------------------------------
    def _apply_method(self, model: InternVLModel) -> None:
        m = self.recipe.method
        apply_method(
            model,
            m.name,
            lora_rank=m.lora_rank,
            lora_dropout=m.lora_dropout,
            lora_vision=m.lora_vision,
            lora_qllama=m.lora_qllama,
        )

    def load_model(self) -> InternVLModel:
        """The checkpoint in the run's precision, on this rank's device (``cuda:LOCAL_RANK`` when CUDA is present).

        Loading bf16 directly is what the reference computes (DeepSpeed casts the module to bf16 before it
        builds the fp32 master weights) at half the host memory of an fp32 load per rank; the position table
        is still resized in float32.
        """
        r = self.recipe.model
        device = f"cuda:{self.dist.local_rank}" if torch.cuda.is_available() else "cpu"
        dtype = "bf16" if self.recipe.engine.precision == "bf16" else "fp32"
        model = InternVLModel.from_pretrained(r.path, dtype=dtype, device=device)
        force = model.config.force_image_size
        if r.image_size and r.image_size != model.vision_model.image_size:
            model.vision_model.resize_position_embeddings(r.image_size)  # bicubic, as the reference script
            force = r.image_size
        model.vision_model.set_drop_path_rate(r.drop_path_rate)
        emb = model.vision_model.embeddings
        with torch.no_grad():
            if r.position_embedding_init_std is not None:
                emb.position_embedding.normal_(0.0, r.position_embedding_init_std)
            if r.logit_scale_init is not None:
                model.logit_scale.fill_(math.log(r.logit_scale_init))
        if self.recipe.optim.no_decay_position_embedding:
            emb.position_embedding.exclude_from_decay = True
            emb.class_embedding.exclude_from_decay = True
        # The saved config keeps the checkpoint's vision image_size and records the training size as
        # force_image_size, as the reference's fine-tuned checkpoints do.
        vision = dataclasses.replace(model.config.vision_config, drop_path_rate=r.drop_path_rate)
        model.config = dataclasses.replace(model.config, vision_config=vision, force_image_size=force)
        model.vision_model.set_gradient_checkpointing(r.gradient_checkpointing)
        model.qllama.set_gradient_checkpointing(r.gradient_checkpointing)
        self._apply_method(model)
        return model.train()

    def training_data(self, pairs: list[CaptionPair], image_size: int) -> tuple[RetrievalPairs, PairCollate]:
        """The dataset (unpadded captions) and the collate that pads each batch: to its longest caption
        (``data.padding=longest``, same losses for less work) or to ``data.max_length`` (the reference)."""
        d = self.recipe.data
        tokenizer = PairTokenizer.from_pretrained(self.recipe.model.path, d.max_length, pad_to_max_length=False)
        dataset = RetrievalPairs(
            pairs,
            tokenizer,
            image_size,
            seed=self.recipe.seed,
            augment=d.augment,
            contrastive_only=self.recipe.method.objective == "itc_c",
        )
        return dataset, PairCollate(tokenizer.pad_token_id, None if d.padding == "longest" else d.max_length)

    def check_resume(self) -> None:
        """Refuse to continue a checkpoint of another recipe or model, naming what differs."""
        f = self.output_dir / RECIPE_FILE
        if not f.is_file():
            return
        old, new = json.loads(f.read_text()), self.recipe.to_dict()
        diffs = []
        for key in RESUME_KEYS:
            a, b = _lookup(old, key), _lookup(new, key)
            if a != b:
                diffs += [f"{key}{sub}: checkpoint {x!r} vs now {y!r}" for sub, x, y in _diff(a, b)]
        if diffs:
            raise ConfigError(
                f"--resume: {self.output_dir} holds a run of another recipe/model; differences:\n  "
                + "\n  ".join(diffs)
                + "\nUse another log.output_dir or the original settings."
            )

    def run(self, resume: bool = False) -> dict:
        plan = self.batch_plan()
        if resume:
            self.check_resume()
        else:
            refuse_to_overwrite(self.output_dir)
        data = self.prepare_data()
        if data.skipped and self.dist.is_main:
            logger.warning(
                "skipped %d bad samples (data.skip_bad_samples): first %s", len(data.skipped), data.skipped[:5]
            )
        model = self.load_model()
        dataset, collate = self.training_data(data.pairs, model.image_size)
        r = self.recipe
        self.output_dir.mkdir(parents=True, exist_ok=True)
        if self.dist.is_main:
            write_recipe(self.output_dir, r.to_dict())
        zero3 = r.engine.backend == "deepspeed" and r.engine.zero_stage == 3
        decay = (
            {"vit": r.optim.vit_layer_decay, "qllama": r.optim.qllama_layer_decay} if r.method.name == "full" else None
        )
        settings = EngineSettings.from_recipe(r, self.output_dir, plan, warmup_steps=r.schedule.warmup_steps)
        if data.val and r.log.eval_steps > 0:
            if zero3:
                logger.warning(
                    "log.eval_steps: in-loop validation needs full weights on rank 0, which ZeRO-3 "
                    "shards; validating the final checkpoint only"
                )
            else:
                from internvl.data.tokenization import InternVLTextTokenizer

                settings.extra_callbacks.append(
                    ValidationCallback(
                        model,
                        InternVLTextTokenizer.from_pretrained(r.model.path),
                        data.val,
                        r.log.eval_steps,
                        self.output_dir,
                    )
                )
        engine = Engine(
            RetrievalLossModule(
                model, self.dist, zero3, objective=r.method.objective, scale_max=r.method.logit_scale_max
            ),
            dataset,
            settings,
            self.dist,
            param_groups_fn=lambda: param_groups(model, r.optim.lr, r.optim.weight_decay, decay),
            collate_fn=collate,
        )
        info = engine.train(resume=resume)
        state = engine.full_state_dict()
        final = self.output_dir / FINAL_DIR
        if self.dist.is_main:
            self.export(model, state, dataset.tokenizer, final)
            info["final_checkpoint"] = str(final)
            if data.val:
                info["val"] = self.validate(final, data.val)
                _append_metrics(
                    self.output_dir, {"step": info["global_step"], **{f"val/{k}": v for k, v in info["val"].items()}}
                )
            (self.output_dir / "run_info.json").write_text(json.dumps(info, indent=2))
        engine.barrier()
        return info

    def export(
        self, model: InternVLModel, state: dict[str, torch.Tensor], tokenizer: PairTokenizer, path: Path
    ) -> None:
        """Save the merged checkpoint (and, for LoRA, the adapter) in the reference layout, plus the tokenizer."""
        state = {k.removeprefix("model."): v for k, v in state.items()}
        state["logit_scale"] = state["logit_scale"].reshape(())
        m = self.recipe.method
        config = model.config
        if m.name == "lora":
            rank = m.lora_rank
            lora_cfg = dataclasses.replace(
                config, use_backbone_lora=rank if m.lora_vision else 0, use_qllama_lora=rank if m.lora_qllama else 0
            )
            adapters = {k: state[k] for k in lora_state_dict(model)}
            ckpt.save_checkpoint(
                path / "adapter",
                {
                    "r": rank,
                    "lora_alpha": 2 * rank,
                    "lora_dropout": m.lora_dropout,
                    "vision_targets": list(VISION_LORA_TARGETS) if m.lora_vision else [],
                    "qllama_targets": list(QLLAMA_LORA_TARGETS) if m.lora_qllama else [],
                },
                adapters,
            )
            state = merge_lora_state_dict(state, lora_cfg)
        cfg = {**config.to_dict(), "use_backbone_lora": 0, "use_qllama_lora": 0}
        ckpt.save_checkpoint(path, cfg, state)
        src = Path(self.recipe.model.path)
        for name in TOKENIZER_FILES:
            if (src / name).is_file():
                shutil.copy2(src / name, path / name)

    def validate(self, checkpoint: Path, records) -> dict[str, float]:
        """recall@k of the exported checkpoint on the held-out split (InternVL-C, fp32 on CPU)."""
        from internvl.data.tokenization import InternVLTextTokenizer
        from internvl.evaluation.retrieval import evaluate_retrieval

        device = "cuda" if torch.cuda.is_available() else "cpu"
        model = InternVLModel.from_pretrained(checkpoint, dtype="bf16" if device == "cuda" else "fp32", device=device)
        tok = InternVLTextTokenizer.from_pretrained(checkpoint)
        with torch.no_grad():
            return evaluate_retrieval(model, tok, records, batch_size=32, progress=False, amp=False)


def _lookup(d: dict, dotted: str):
    for part in dotted.split("."):
        d = d.get(part) if isinstance(d, dict) else None
    return d


def _diff(a, b, prefix=""):
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            if a.get(k) != b.get(k):
                yield from _diff(a.get(k), b.get(k), f"{prefix}.{k}")
    else:
        yield prefix, a, b


def _append_metrics(output_dir: Path, record: dict) -> None:
    from internvl.training.engine import METRICS_FILE

    with open(output_dir / METRICS_FILE, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")


__all__ = ["RetrievalFinetune", "RetrievalLossModule", "read_metrics"]
