"""Supervised fine-tuning of InternVL-Chat (chat spec §7-8) on the shared training engine.

``SFTFinetune(recipe, dist)``:

* `batch_plan` and `describe` (the ``--dry-run`` report: resolved recipe, trainable / total parameters
  per module, batch arithmetic, per-device memory estimate; weights are never read);
* `preflight`: the meta mixture through `SFTDataset` and the same checks as ``internvl data check``
  (`check_sft_data`), failing before any model is loaded with every problem's file:line;
* `load_model`: a chat checkpoint (``model.path``: the 2nd fine-tune) or assembled from an InternViT
  directory + an LLM directory + a projector (``model.mlp_path``, or a new one), the guide's
  ``pretrained/InternViT-6B-448px-V1-2`` + ``pretrained/Nous-Hermes-2-Yi-34B`` layout; the trainable
  parts and LoRA from `internvl.training.chat_methods`;
* `run`: `internvl.training.engine.Engine` (HF Trainer + DeepSpeed / DDP) with the length-grouped
  sampler and `collate_sft`, then `export`: ``final/`` loadable by `InternVLChatModel.from_pretrained`
  and ``internvl chat`` (tokenizer, template, system message, stop tokens saved); with LoRA also
  ``final/adapter/`` (the adapters alone) while ``final/`` holds the merged weights.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import shutil
import tempfile
from pathlib import Path

import torch
from torch import nn

from internvl.core.compat import persist_tokenizer_flags
from internvl.core.distributed import DistContext
from internvl.core.errors import CheckpointError, ConfigError, DataFormatError
from internvl.data.collate import collate_sft
from internvl.data.datasets.sft_meta import read_sft_meta
from internvl.data.image_processing import ChatImageSettings
from internvl.data.length_grouping import LengthGroupedSampler
from internvl.data.sft import SFTDataConfig, SFTDataset
from internvl.data.synthetic import CHAT_SPECIAL_TOKENS
from internvl.data.text_encoders import load_text_encoder
from internvl.models import checkpoint as ckpt
from internvl.models.internvl_chat import InternVLChatConfig, InternVLChatModel
from internvl.training import memory
from internvl.training.chat_methods import (
    LLM_LORA_TARGETS,
    VISION_LORA_TARGETS,
    apply_chat_trainable,
    merge_lora_state_dict,
    trainable_summary,
)
from internvl.training.config import BatchPlan, require_checkpoint_dir, resolve_batch
from internvl.training.engine import (
    RECIPE_FILE,
    Engine,
    EngineSettings,
    refuse_to_overwrite,
    write_recipe,
    zero3_live_parameters,
)
from internvl.training.optim import param_groups
from internvl.training.sft_recipe import SFTRecipe

logger = logging.getLogger(__name__)
FINAL_DIR = "final"
ADAPTER_DIR = "adapter"
MAX_LISTED_PROBLEMS = 20
TOKENIZER_FILES = (
    "tokenizer.model",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "chat_template.jinja",
)
# Recipe values a resumed run must share with its checkpoint (everything that changes the math).
RESUME_SECTIONS = ("model", "method", "optim", "schedule", "seed")


class SFTLossModule(nn.Module):
    """What the engine trains: ``forward(**batch)`` -> ``{"loss", "skipped"}`` (the model's mean next-token
    cross entropy over the micro-batch's supervised tokens, as the reference; ``skipped``: samples of the
    batch dropped under ``data.skip_bad_samples``)."""

    accepts_loss_kwargs = False  # per-micro-batch mean: Trainer divides by the accumulation steps

    def __init__(self, model: InternVLChatModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, **batch: torch.Tensor) -> dict[str, torch.Tensor]:
        skipped = batch.pop("num_skipped", torch.tensor(0))
        dtype = self.model.vision_model.embeddings.patch_embedding.weight.dtype
        out = self.model(
            pixel_values=batch["pixel_values"].to(dtype),
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            position_ids=batch["position_ids"],
            image_flags=batch["image_flags"],
            labels=batch["labels"],
            use_cache=False,
        )
        return {"loss": out.loss, "skipped": skipped.float()}


class SFTFinetune:
    def __init__(self, recipe: SFTRecipe, dist: DistContext | None = None) -> None:
        self.recipe = recipe
        self.dist = dist or DistContext()
        self.output_dir = Path(recipe.log.output_dir)

    # -- before any weights are read --------------------------------------------------------------
    def batch_plan(self) -> BatchPlan:
        s = self.recipe.schedule
        return resolve_batch(
            s.global_batch_size, self.dist.world_size, s.per_device_batch_size, s.gradient_accumulation_steps
        )

    def model_config(self, vocab_size: int | None = None) -> InternVLChatConfig:
        """The chat config of the run: the checkpoint's (with the recipe's options), or built from the parts."""
        m, d = self.recipe.model, self.recipe.data
        options = {
            "template": d.template,
            "ps_version": m.ps_version,
            "select_layer": m.vision_select_layer,
            "force_image_size": m.force_image_size,
            "downsample_ratio": m.downsample_ratio,
            "dynamic_image_size": d.dynamic_image_size,
            "use_thumbnail": d.use_thumbnail,
            "min_dynamic_patch": d.min_dynamic_patch,
            "max_dynamic_patch": d.max_dynamic_patch,
            "pad2square": d.pad2square,
        }
        if m.path:
            require_checkpoint_dir(m.path, "model.path", "an InternVL-Chat checkpoint")
            cfg = InternVLChatConfig.from_dict(ckpt.read_config(m.path), **options)
        else:
            require_checkpoint_dir(m.vision_path, "model.vision_path", "an InternViT checkpoint")
            require_checkpoint_dir(m.llm_path, "model.llm_path", "a causal LM (LLaMA / Qwen2 / ...)")
            llm = ckpt.read_config(m.llm_path)
            if vocab_size is not None:
                llm = {**llm, "vocab_size": vocab_size}
            vision = ckpt.read_config(m.vision_path)
            vision = vision.get("vision_config", vision)
            cfg = InternVLChatConfig(vision_config=vision, llm_config=llm, **options)
        if d.system_message is not None:
            cfg.system_message = d.system_message
        cfg.vision_config = {**cfg.vision_config, "drop_path_rate": m.drop_path_rate}
        return cfg

    def dataset(self, encoder, num_image_token: int) -> SFTDataset:
        d = self.recipe.data
        if not Path(d.meta_path).is_file():
            raise ConfigError(f"data.meta_path={d.meta_path}: no such file")
        image = ChatImageSettings(
            image_size=self.recipe.model.force_image_size,
            dynamic_image_size=d.dynamic_image_size,
            use_thumbnail=d.use_thumbnail,
            min_dynamic_patch=d.min_dynamic_patch,
            max_dynamic_patch=d.max_dynamic_patch,
            pad2square=d.pad2square,
            norm=d.normalize_type,
        )
        config = SFTDataConfig(
            template=d.template,
            num_image_token=num_image_token,
            max_length=d.max_length,
            image=image,
            system_message=d.system_message,
            on_error="skip" if d.skip_bad_samples else "raise",
            seed=self.recipe.seed,
        )
        return SFTDataset(read_sft_meta(d.meta_path), encoder, config)

    def preflight(self, dataset: SFTDataset) -> list[str]:
        """`check_sft_data` over every record; raises `DataFormatError` listing the problems (file:line,
        kind, reason), or with ``data.skip_bad_samples`` returns them (training then skips and counts)."""
        from internvl.data.sft_check import check_sft_data

        report = check_sft_data(dataset, decode_images=True)
        if report.ok:
            return []
        lines = [f"  [{p.kind}] {p.message}" for p in report.problems]
        if not self.recipe.data.skip_bad_samples:
            listed = "\n".join(lines[:MAX_LISTED_PROBLEMS])
            more = len(lines) - MAX_LISTED_PROBLEMS
            raise DataFormatError(
                f"data check of {self.recipe.data.meta_path}: {len(lines)} problem(s), training not started:\n"
                f"{listed}"
                + (f"\n  ... and {more} more (internvl data check META --report FILE)" if more > 0 else "")
                + "\nFix the records, or set data.skip_bad_samples=true to skip and count them"
            )
        return lines

    def describe(self) -> dict:
        """The ``--dry-run`` report (no weights read: the model is built on the meta device)."""
        plan = self.batch_plan()
        vocab = None
        if not self.recipe.model.path:  # the tokenizer grows by the chat tokens it lacks
            vocab = len(_chat_tokenizer(self.recipe.model.llm_path)[0])
        cfg = self.model_config(vocab)
        with torch.device("meta"):
            model = InternVLChatModel(cfg)
        apply_chat_trainable(model, self.recipe.method.trainable())
        counts = trainable_summary(model)
        r = self.recipe
        stage = r.engine.zero_stage if r.engine.backend == "deepspeed" else 0
        tiles = r.data.max_dynamic_patch + int(r.data.use_thumbnail) if r.data.dynamic_image_size else 1
        est = memory.estimate_chat(
            cfg.vision,
            cfg.llm_config,
            counts,
            batch=plan.per_device_batch_size,
            tiles_per_sample=tiles,
            text_length=r.data.max_length,
            precision=r.engine.precision,
            zero_stage=stage,
            world_size=plan.world_size,
            checkpointing=r.model.gradient_checkpointing,
            zero3_live_params=zero3_live_parameters(stage, r.engine.deepspeed_config),
        )
        return {
            "recipe": r.to_dict(),
            "batch": dataclasses.asdict(plan),
            "num_image_token": cfg.num_image_token,
            "tiles_per_sample": tiles,
            "parameters": {k: {"trainable": t, "total": n} for k, (t, n) in counts.items()},
            "memory_per_device_gib": {**est.as_gib(), "zero_stage": stage, "precision": r.engine.precision},
        }

    # -- model ------------------------------------------------------------------------------------
    def load_model(self, tokenizer=None) -> tuple[InternVLChatModel, object]:
        """(model, tokenizer) in the run's precision on this rank's device, trainable parts applied."""
        m = self.recipe.model
        device = f"cuda:{self.dist.local_rank}" if torch.cuda.is_available() else "cpu"
        dtype = torch.bfloat16 if self.recipe.engine.precision == "bf16" else torch.float32
        if m.path:
            from internvl.inference.chat import load_tokenizer

            cfg = self.model_config()
            overrides = {
                k: getattr(cfg, k)
                for k in (
                    "template",
                    "ps_version",
                    "select_layer",
                    "force_image_size",
                    "downsample_ratio",
                    "dynamic_image_size",
                    "use_thumbnail",
                    "min_dynamic_patch",
                    "max_dynamic_patch",
                    "pad2square",
                )
            }
            if cfg.system_message is not None:
                overrides["system_message"] = cfg.system_message
            model = InternVLChatModel.from_pretrained(m.path, dtype=dtype, device=device, **overrides)
            tokenizer = tokenizer or load_tokenizer(m.path)
        else:
            model, tokenizer = self.assemble(dtype)
            model = model.to(device)
        model.vision_model.set_drop_path_rate(m.drop_path_rate)
        model.config.vision_config = {**model.config.vision_config, "drop_path_rate": m.drop_path_rate}
        model.img_context_token_id = model.config.img_context_token_id = int(
            tokenizer.convert_tokens_to_ids("<IMG_CONTEXT>")
        )
        model.language_model.config.use_cache = False
        if m.gradient_checkpointing:
            model.set_gradient_checkpointing(True)
        apply_chat_trainable(model, self.recipe.method.trainable())
        return model.train(), tokenizer

    def assemble(self, dtype: torch.dtype) -> tuple[InternVLChatModel, object]:
        """ViT + LLM + projector (chat spec §8.1 "from parts"): the chat tokens are added to the LLM's
        tokenizer, its embeddings resized with the new ``lm_head`` rows set to the mean of the old ones
        (as the reference); the projector is read from ``model.mlp_path`` (strict) or initialised new
        (truncated normal, std 0.02, zero bias; seeded by ``seed``)."""
        from accelerate import init_empty_weights
        from transformers import AutoModelForCausalLM

        from internvl.models.intern_vit import InternViT

        m = self.recipe.model
        tokenizer, added = _chat_tokenizer(m.llm_path)
        cfg = self.model_config(len(tokenizer))
        vit = InternViT.from_pretrained(m.vision_path, dtype=dtype, force_image_size=m.force_image_size)
        llm = AutoModelForCausalLM.from_pretrained(m.llm_path, dtype=dtype, attn_implementation="sdpa")
        if added:
            old = llm.get_output_embeddings().weight.shape[0]
            llm.resize_token_embeddings(len(tokenizer), mean_resizing=False)
            with torch.no_grad():
                out = llm.get_output_embeddings().weight
                out[old:] = out[:old].float().mean(0, keepdim=True).to(out.dtype)
        llm.config.vocab_size = len(tokenizer)
        with init_empty_weights(include_buffers=False):
            model = InternVLChatModel(cfg, language_model=llm)
        model.vision_model = vit
        from internvl.models.projector import build_mlp_projector

        torch.manual_seed(self.recipe.seed)
        mlp = build_mlp_projector(vit.config.hidden_size, llm.config.hidden_size, cfg.downsample_ratio)
        if m.mlp_path:
            state = _read_projector(m.mlp_path)
            try:
                mlp.load_state_dict(state, strict=True)
            except RuntimeError as e:
                raise CheckpointError(f"model.mlp_path={m.mlp_path}: does not fit the projector ({e})") from None
        else:
            gen = torch.Generator().manual_seed(self.recipe.seed)
            with torch.no_grad():
                for layer in mlp:
                    if isinstance(layer, nn.Linear):
                        nn.init.trunc_normal_(layer.weight, std=0.02, generator=gen)
                        layer.bias.zero_()
        model.mlp1 = mlp.to(dtype)
        model.config.llm_config = llm.config
        return model, tokenizer

    # -- training ---------------------------------------------------------------------------------
    def check_resume(self) -> None:
        f = self.output_dir / RECIPE_FILE
        if not f.is_file():
            return
        old, new = json.loads(f.read_text()), self.recipe.to_dict()
        diffs = [
            f"{k}: checkpoint {old.get(k)!r} vs now {new.get(k)!r}" for k in RESUME_SECTIONS if old.get(k) != new.get(k)
        ]
        if old.get("data", {}).get("meta_path") != new["data"]["meta_path"]:
            diffs.append(f"data.meta_path: {old.get('data', {}).get('meta_path')!r} vs {new['data']['meta_path']!r}")
        if diffs:
            raise ConfigError(
                f"--resume: {self.output_dir} holds a run of another recipe; differences:\n  "
                + "\n  ".join(diffs)
                + "\nUse another log.output_dir or the original settings."
            )

    def run(self, resume: bool = False) -> dict:
        plan = self.batch_plan()
        if resume:
            self.check_resume()
        else:
            refuse_to_overwrite(self.output_dir)
        with tempfile.TemporaryDirectory(prefix="internvl-sft-tok-") as tok_dir:
            self._run(plan, tok_dir, resume)
        return self.info

    def _run(self, plan: BatchPlan, tok_dir: str, resume: bool) -> None:
        r = self.recipe
        tokenizer = None
        if r.model.path:
            encoder_dir = Path(r.model.path)
        else:  # the LLM's tokenizer plus the chat tokens, as this rank's private copy
            tokenizer, _ = _chat_tokenizer(r.model.llm_path)
            tokenizer.save_pretrained(tok_dir)
            persist_tokenizer_flags(tokenizer, tok_dir)
            encoder_dir = Path(tok_dir)
        encoder = load_text_encoder(encoder_dir)
        cfg = self.model_config(len(tokenizer) if tokenizer is not None else None)
        dataset = self.dataset(encoder, cfg.num_image_token)
        skipped = self.preflight(dataset)  # before any weights are read
        if skipped and self.dist.is_main:
            logger.warning(
                "data.skip_bad_samples: %d bad record(s) will be skipped:\n%s",
                len(skipped),
                "\n".join(skipped[:MAX_LISTED_PROBLEMS]),
            )
        model, tokenizer = self.load_model(tokenizer)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        if self.dist.is_main:
            write_recipe(self.output_dir, r.to_dict())
        per_step = plan.per_device_batch_size * plan.world_size
        steps_per_epoch = len(dataset) // per_step // plan.gradient_accumulation_steps  # Trainer's drop_last count
        if steps_per_epoch == 0:
            raise ConfigError(
                f"{len(dataset)} samples (after repeat_time) are fewer than one global batch of "
                f"{plan.global_batch_size}; lower schedule.global_batch_size"
            )
        total = r.schedule.max_steps if r.schedule.max_steps > 0 else math.ceil(r.schedule.epochs * steps_per_epoch)
        settings = EngineSettings.from_recipe(
            r, self.output_dir, plan, warmup_steps=math.ceil(r.schedule.warmup_ratio * total)
        )
        sampler_fn = None
        if r.data.group_by_length:
            lengths = dataset.lengths
            sampler_fn = lambda: LengthGroupedSampler(  # noqa: E731
                lengths, plan.per_device_batch_size, plan.world_size * plan.gradient_accumulation_steps, r.seed
            )
        pad = encoder.pad_token_id
        engine = Engine(
            SFTLossModule(model),
            dataset,
            settings,
            self.dist,
            param_groups_fn=lambda: param_groups(model, r.optim.lr, r.optim.weight_decay),
            collate_fn=_Collate(pad),
            sampler_fn=sampler_fn,
        )
        info = engine.train(resume=resume)
        state = engine.full_state_dict()
        final = self.output_dir / FINAL_DIR
        if self.dist.is_main:
            self.export(model, state, tokenizer, final, encoder_dir)
            info["final_checkpoint"] = str(final)
            info["samples_per_epoch"] = len(dataset)
            info["warmup_steps"] = settings.warmup_steps
            (self.output_dir / "run_info.json").write_text(json.dumps(info, indent=2))
        engine.barrier()
        self.info = info

    def export(
        self, model: InternVLChatModel, state: dict[str, torch.Tensor], tokenizer, path: Path, tokenizer_dir: Path
    ) -> None:
        """``path``: config + weights (LoRA merged) + generation config with the stop tokens + the tokenizer
        files training encoded with (copied from ``tokenizer_dir``, so a later fine-tune or chat splits text
        the same way); with LoRA, ``path/adapter``: the adapter weights and their configuration."""
        from internvl.inference.chat import stop_token_ids

        state = {k.removeprefix("model."): v for k, v in state.items()}
        mth = self.recipe.method
        scale = 2.0  # alpha = 2 r (chat_methods)
        if mth.vision_lora_rank or mth.llm_lora_rank:
            adapters = {k: v for k, v in state.items() if ".lora_A." in k or ".lora_B." in k}
            ckpt.save_checkpoint(
                path / ADAPTER_DIR,
                {
                    "peft_type": "LORA",
                    "lora_alpha_over_r": scale,
                    "lora_dropout": mth.lora_dropout,
                    "vision_lora_rank": mth.vision_lora_rank,
                    "llm_lora_rank": mth.llm_lora_rank,
                    "vision_targets": list(VISION_LORA_TARGETS) if mth.vision_lora_rank else [],
                    "llm_targets": list(LLM_LORA_TARGETS) if mth.llm_lora_rank else [],
                },
                adapters,
            )
            state = merge_lora_state_dict(state, scale)
        config = model.config
        with _without_zero3_init(), torch.device("meta"):
            clean = InternVLChatModel(config)
        clean = clean.to_empty(device="cpu")
        missing, unexpected = clean.load_state_dict(state, strict=False, assign=True)
        missing = [k for k in missing if not k.endswith("rotary_emb.inv_freq")]
        if missing or unexpected:
            raise CheckpointError(
                f"export: state does not match the chat model (missing {missing[:5]}, unexpected {unexpected[:5]})"
            )
        for name, buf in model.named_buffers():  # non-persistent buffers (rotary tables) are not in state
            if name not in state:
                clean.get_buffer(name).copy_(buf.detach().cpu())
        clean.generation_config = model.generation_config
        clean.save_pretrained(path, stop_token_ids=stop_token_ids(clean, tokenizer))
        for name in TOKENIZER_FILES:
            if (tokenizer_dir / name).is_file():
                shutil.copy2(tokenizer_dir / name, path / name)


@contextlib.contextmanager
def _without_zero3_init():
    """Build a plain module on one rank while a ZeRO-3 run is live: transformers would otherwise construct
    the LLM inside ``deepspeed.zero.Init`` (collectives the other ranks never join: a hang)."""
    from transformers.integrations import deepspeed as hf_deepspeed

    saved = hf_deepspeed._hf_deepspeed_config_weak_ref
    hf_deepspeed._hf_deepspeed_config_weak_ref = None
    try:
        yield
    finally:
        hf_deepspeed._hf_deepspeed_config_weak_ref = saved


class _Collate:
    """Picklable collate for DataLoader workers."""

    def __init__(self, pad_token_id: int) -> None:
        self.pad_token_id = pad_token_id

    def __call__(self, samples):
        return collate_sft(samples, self.pad_token_id)


def _chat_tokenizer(llm_path: str):
    """The LLM's tokenizer with InternVL-Chat's special tokens added (``<IMG_CONTEXT>``, ``<img>``, ...)."""
    from internvl.inference.chat import load_tokenizer

    tok = load_tokenizer(llm_path)
    added = tok.add_tokens(list(CHAT_SPECIAL_TOKENS), special_tokens=True)
    return tok, added


def _read_projector(path: str) -> dict[str, torch.Tensor]:
    """The released ``mlp_projector/*.pth`` (keys ``0.weight`` ... or ``mlp1.0.weight`` ...)."""
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"model.mlp_path={path}: no such file")
    if p.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(p))
    else:
        state = torch.load(p, map_location="cpu", weights_only=True)
    return {k.removeprefix("mlp1."): v for k, v in state.items()}


__all__ = ["SFTFinetune", "SFTLossModule"]
