"""Training recipes as data: YAML files -> typed dataclasses, with ``key=value`` overrides.

A recipe file (``src/internvl/configs/retrieval/*.yaml``, or any copy of one) has the sections below;
unknown keys raise with the closest valid name, so a typo never silently falls back to a default.
``--set optim.lr=2e-6`` overrides one value (parsed as YAML: numbers, booleans, lists, null).

The batch is given as a *global* size (a recipe value, as in the guide: 1024 for full fine-tuning,
128 for head/LoRA); `resolve_batch` works out per-device batch x devices x accumulation for the
machine at hand and refuses inconsistent requests before any model is loaded.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from internvl.core.errors import CheckpointError, ConfigError

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
METHODS = ("full", "head", "lora")
PRECISIONS = ("fp32", "bf16")
ZERO_STAGES = (0, 1, 2, 3)
OBJECTIVES = ("itm_itc", "itc_c")
PADDINGS = ("longest", "max_length")


@dataclass
class ModelSection:
    path: str = ""  # checkpoint directory (config.json + weights + tokenizer files)
    image_size: int | None = None  # train resolution; != checkpoint's -> position table resized (bicubic)
    drop_path_rate: float = 0.0
    gradient_checkpointing: bool = True
    # Training from scratch (a freshly initialised checkpoint): re-draw the ViT position table with this
    # std (the preset's init is too small for the cell to reach the patch tokens) and set the initial
    # logit scale (exp of logit_scale); None keeps the checkpoint's values.
    position_embedding_init_std: float | None = None
    logit_scale_init: float | None = None


@dataclass
class DataSection:
    train: str = "flickr30k_en_train"  # a dataset registry name (built-in or from `registry`)
    val: str | None = None  # held-out split for in-loop recall@k; None = no validation
    val_limit: int | None = 1000  # first N images of the validation split
    registry: list[str] = field(default_factory=list)  # extra registry files (same schema as eval's --registry)
    data_root: str | None = None  # replaces ./data in registry paths
    max_length: int = 80
    # longest: each batch cut to its longest caption (same losses, less work); max_length: 80 ids (reference)
    padding: str = "longest"
    max_words: int = 50
    skip_bad_samples: bool = False  # skip and count bad captions/images instead of stopping before training
    verify_images: bool = True  # pre-flight: open every image's header (PIL verify), not only stat it
    augment: bool = True  # random-resized-crop + flip (reference); false: resize only (captions that name positions)
    num_workers: int = 2


@dataclass
class MethodSection:
    name: str = "full"  # full | head | lora
    lora_rank: int = 16  # LoRA only; alpha = 2 * rank as in the reference (its checkpoint merge assumes it)
    lora_dropout: float = 0.05
    lora_vision: bool = True
    lora_qllama: bool = True
    # itm_itc: the reference's stage-2 loss (ITM + query/backbone ITC through QLLaMA);
    # itc_c: InternVL-C contrastive only (encode_image C mode vs encode_text, symmetric InfoNCE).
    objective: str = "itm_itc"
    logit_scale_max: float | None = None  # cap on exp(logit_scale) (CLIP: 100); None = uncapped, as the reference


@dataclass
class OptimSection:
    lr: float = 1e-6
    weight_decay: float = 0.05
    vit_layer_decay: float = 1.0
    qllama_layer_decay: float = 1.0
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    max_grad_norm: float = 1.0
    no_decay_position_embedding: bool = False  # weight decay 0 for the ViT position table / class token


@dataclass
class ScheduleSection:
    epochs: float = 10
    max_steps: int = -1  # > 0 overrides epochs
    # > 0: a wall-clock budget; training stops after it and the cosine follows max(step, time) progress
    max_seconds: float = 0.0
    warmup_steps: int = 100
    global_batch_size: int = 1024
    per_device_batch_size: int | None = None
    gradient_accumulation_steps: int | None = None


@dataclass
class EngineSection:
    backend: str = "deepspeed"  # deepspeed (HF Trainer + DeepSpeed ZeRO) | ddp (HF Trainer, torch DDP)
    zero_stage: int = 1
    deepspeed_config: str | None = None  # a DeepSpeed JSON; default configs/deepspeed/zero{stage}.json
    precision: str = "bf16"
    # torch intra-op threads of a CPU run (0: torch's default, one per core). A model of a few hundred
    # thousand parameters steps faster on one thread than on two (the demo's SFT: README, calibration).
    cpu_threads: int = 0

    def check_cpu_threads(self) -> None:
        """The one engine check both recipes share (their other engine checks word their errors apart)."""
        if self.cpu_threads < 0:
            raise ConfigError(f"engine.cpu_threads={self.cpu_threads}; expected 0 (torch's default) or more")


@dataclass
class LogSection:
    output_dir: str = "work_dirs/retrieval"
    logging_steps: int = 1
    save_steps: int = 100
    save_total_limit: int = 5
    eval_steps: int = 0  # in-loop validation every N steps (0: only at the end, when data.val is set)
    tensorboard: bool = True


@dataclass
class RetrievalRecipe:
    """A stage-2 retrieval fine-tuning run."""

    name: str = "retrieval"
    seed: int = 42
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    method: MethodSection = field(default_factory=MethodSection)
    optim: OptimSection = field(default_factory=OptimSection)
    schedule: ScheduleSection = field(default_factory=ScheduleSection)
    engine: EngineSection = field(default_factory=EngineSection)
    log: LogSection = field(default_factory=LogSection)

    def check_paths(self) -> RetrievalRecipe:
        """The local paths the run reads or writes, checked before torch and the model stack load."""
        require_checkpoint_dir(self.model.path, "model.path", "an InternVL-C/G checkpoint")
        for i, reg in enumerate(self.data.registry):
            require_file(reg, f"data.registry[{i}]")
        if self.data.data_root and not Path(self.data.data_root).is_dir():
            raise ConfigError(f"data.data_root={self.data.data_root}: no such folder")
        require_output_dir(self.log.output_dir)
        return self

    def validate(self) -> RetrievalRecipe:
        if not self.model.path:
            raise ConfigError(
                "model.path is empty; set it to an InternVL-C/G checkpoint directory (--set model.path=DIR)"
            )
        if self.method.name not in METHODS:
            raise ConfigError(f"method.name={self.method.name!r}; expected one of {METHODS}")
        if self.engine.precision not in PRECISIONS:
            raise ConfigError(
                f"engine.precision={self.engine.precision!r}; expected one of {PRECISIONS} "
                "(fp16 is not supported: DeepSpeed on CPU refuses it and the reference trains in bf16)"
            )
        if self.engine.backend not in ("deepspeed", "ddp"):
            raise ConfigError(f"engine.backend={self.engine.backend!r}; expected deepspeed or ddp")
        if self.engine.zero_stage not in ZERO_STAGES:
            raise ConfigError(f"engine.zero_stage={self.engine.zero_stage}; expected one of {ZERO_STAGES}")
        self.engine.check_cpu_threads()
        if self.data.padding not in PADDINGS:
            raise ConfigError(f"data.padding={self.data.padding!r}; expected one of {PADDINGS}")
        if self.method.objective not in OBJECTIVES:
            raise ConfigError(f"method.objective={self.method.objective!r}; expected one of {OBJECTIVES}")
        if self.method.name == "lora" and self.method.lora_rank < 1:
            raise ConfigError(f"method.lora_rank={self.method.lora_rank}; expected >= 1 for the lora method")
        if self.method.name != "full" and (self.optim.vit_layer_decay != 1.0 or self.optim.qllama_layer_decay != 1.0):
            raise ConfigError(
                f"layer-wise lr decay applies to method 'full' only (the head/LoRA parameters have no "
                f"layer order); got method {self.method.name!r} with decay "
                f"{self.optim.vit_layer_decay}/{self.optim.qllama_layer_decay}"
            )
        if self.schedule.global_batch_size < 1:
            raise ConfigError(f"schedule.global_batch_size={self.schedule.global_batch_size}; expected >= 1")
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _build(cls, data: Any, where: str):
    if not isinstance(data, dict):
        raise ConfigError(f"{where or 'top level'}: expected a mapping; got {type(data).__name__} {data!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    prefix = f"{where}." if where else ""
    for key, value in data.items():
        if key not in fields:
            close = difflib.get_close_matches(str(key), fields, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"{prefix}{key}: unknown key {key!r}{hint}; allowed: {sorted(fields)}")
        default = getattr(cls(), key)
        if dataclasses.is_dataclass(default):
            kwargs[key] = _build(type(default), value, f"{prefix}{key}")
        else:
            kwargs[key] = _coerce(value, default, fields[key], f"{prefix}{key}")
    return cls(**kwargs)


def _coerce(value: Any, default: Any, f: dataclasses.Field, where: str) -> Any:
    hint = str(f.type)
    base = hint.replace(" | None", "")
    if base == "float" and isinstance(value, str):
        try:  # YAML 1.1 reads 2e-6 (no dot) as a string
            value = float(value)
        except ValueError:
            pass
    if value is None:
        if hint.endswith("| None"):
            return None
        raise ConfigError(f"{where}: null is not allowed (expected {base})")
    ok = {
        "bool": isinstance(value, bool),
        "int": isinstance(value, int) and not isinstance(value, bool),
        "float": isinstance(value, (int, float)) and not isinstance(value, bool),
        "str": isinstance(value, str),
    }.get(base, isinstance(value, list) if base.startswith("list") else True)
    if not ok:
        raise ConfigError(f"{where}: expected {base}; got {type(value).__name__} {value!r}")
    return float(value) if base == "float" else value


def parse_overrides(overrides: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """``["optim.lr=2e-6", "method.name=lora"]`` -> nested dict (values parsed as YAML scalars)."""
    import yaml

    out: dict[str, Any] = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: expected key=value, e.g. optim.lr=2e-6")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as e:
            raise ConfigError(f"--set {item!r}: cannot parse the value ({e})") from None
        node = out
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {item!r}: {part!r} is a value, not a section")
        node[parts[-1]] = value
    return out


def _merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for k, v in extra.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def resolve_recipe_path(name: str | os.PathLike, task: str = "retrieval") -> Path:
    """A file path, or the name of a shipped recipe (``flickr30k_full_364`` -> configs/<task>/...yaml)."""
    p = Path(name)
    if p.is_file():
        return p
    shipped = CONFIG_DIR / task / f"{p.stem}.yaml"
    if shipped.is_file() and p.parent == Path("."):
        return shipped
    names = sorted(f.stem for f in (CONFIG_DIR / task).glob("*.yaml"))
    raise ConfigError(f"recipe {str(name)!r} not found: not a file, and not a shipped recipe ({', '.join(names)})")


def load_recipe_file(
    cls, path: str | os.PathLike, overrides: list[str] | tuple[str, ...] = (), *, task: str, validate: bool = True
):
    """The one recipe loader: YAML (a path or a shipped ``configs/<task>/`` name) + ``key=value``
    overrides -> the dataclass ``cls`` (unknown keys and wrong types name the key), validated."""
    import yaml

    p = resolve_recipe_path(path, task)
    try:
        doc = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{p}:{mark.line + 1}" if mark is not None else str(p)
        raise ConfigError(f"{where}: invalid YAML ({getattr(e, 'problem', None) or e})") from None
    try:
        recipe = _build(cls, _merge(doc, parse_overrides(list(overrides))), "")
        return recipe.validate() if validate else recipe
    except ConfigError as e:
        raise ConfigError(f"recipe {p}: {e}") from None


def load_recipe(
    path: str | os.PathLike, overrides: list[str] | tuple[str, ...] = (), validate: bool = True
) -> RetrievalRecipe:
    """Read a retrieval recipe YAML (a path or a shipped recipe's name) and apply ``key=value`` overrides."""
    return load_recipe_file(RetrievalRecipe, path, overrides, task="retrieval", validate=validate)


@dataclass(frozen=True)
class BatchPlan:
    global_batch_size: int
    per_device_batch_size: int
    world_size: int
    gradient_accumulation_steps: int


def resolve_batch(
    global_batch: int, world_size: int, per_device: int | None = None, accumulation: int | None = None
) -> BatchPlan:
    """per-device x devices x accumulation == global, filling in what is not given.

    Neither given: accumulation 1 and per-device = global / devices. One given: the other is derived
    and must be a whole number. Both given: their product must match.
    """
    if world_size < 1:
        raise ConfigError(f"world size {world_size}; expected >= 1")
    for name, v in (("per_device_batch_size", per_device), ("gradient_accumulation_steps", accumulation)):
        if v is not None and v < 1:
            raise ConfigError(f"schedule.{name}={v}; expected >= 1")
    if per_device is None and accumulation is None:
        accumulation = 1
    if per_device is None:
        per_device, rem = divmod(global_batch, world_size * accumulation)
        if rem or per_device == 0:
            raise ConfigError(
                f"global batch {global_batch} is not divisible by {world_size} device(s) x "
                f"{accumulation} accumulation step(s); choose a global batch that is a multiple of "
                f"{world_size * accumulation} or set schedule.per_device_batch_size"
            )
    elif accumulation is None:
        accumulation, rem = divmod(global_batch, world_size * per_device)
        if rem or accumulation == 0:
            raise ConfigError(
                f"global batch {global_batch} is not a multiple of per-device batch {per_device} x "
                f"{world_size} device(s) = {per_device * world_size}; change "
                "schedule.per_device_batch_size or schedule.global_batch_size"
            )
    if per_device * world_size * accumulation != global_batch:
        raise ConfigError(
            f"per-device batch {per_device} x {world_size} device(s) x {accumulation} accumulation "
            f"= {per_device * world_size * accumulation}, but schedule.global_batch_size is "
            f"{global_batch}; drop one of the two settings to have it derived"
        )
    return BatchPlan(global_batch, per_device, world_size, accumulation)


# -- path checks shared by every recipe (stdlib only: `internvl train` runs them before importing torch) --


def require_checkpoint_dir(path: str | os.PathLike, key: str, what: str) -> None:
    """``path`` is a local checkpoint folder (config.json); a hub id gets the download hint."""
    from internvl.core.io import hub_id_hint

    if not (Path(path) / "config.json").is_file():
        raise CheckpointError(f"{key}={path}: no config.json; expected {what} directory{hub_id_hint(path)}")


def require_file(path: str | os.PathLike, key: str) -> None:
    if not Path(path).is_file():
        why = "is a folder, expected a file" if Path(path).is_dir() else "no such file"
        raise ConfigError(f"{key}={path}: {why}")


def require_output_dir(path: str | os.PathLike, key: str = "log.output_dir") -> None:
    """A run writes several files (checkpoints, logs) into a folder: an existing file there is a mistake."""
    if Path(path).exists() and not Path(path).is_dir():
        raise ConfigError(f"{key}={path}: is a file; a run writes checkpoints and logs into a folder")
