"""InternViT, the vision encoder of InternVL (Chen et al., "InternVL", CVPR 2024, Sec. 3.2).

Two flavours share one implementation, selected by the checkpoint's ``config.json``:

* InternViT-6B (1.0 / V1-x): RMSNorm, q/k RMS-normalisation over the *full* width (all heads
  concatenated), no qkv bias, layer scale on both residual branches.
* InternViT-300M family (``norm_type: layer_norm``): LayerNorm, qkv bias, no q/k norm.

Parameter names equal the official ones (``embeddings.*``, ``encoder.layers.N.{attn,mlp,norm1,norm2,ls1,ls2}``),
so official weights load as stored. There is no final norm and no pooler weight: ``pooler_output`` is the
class token of the last hidden state.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from internvl.core.errors import ConfigError
from internvl.models import checkpoint as ckpt
from internvl.models.registry import register_preset


@dataclass(frozen=True)
class InternViTConfig:
    """Configuration of InternViT; field names and defaults follow the official ``intern_vit_6b`` config."""

    hidden_size: int = 3200
    num_hidden_layers: int = 48
    num_attention_heads: int = 25
    intermediate_size: int = 12800
    image_size: int = 224
    patch_size: int = 14
    num_channels: int = 3
    qkv_bias: bool = False
    qk_normalization: bool = True
    norm_type: str = "rms_norm"  # "rms_norm" (6B) or "layer_norm" (300M family)
    layer_norm_eps: float = 1e-6
    hidden_act: str = "gelu"
    dropout: float = 0.0
    attention_dropout: float = 0.0
    drop_path_rate: float = 0.0
    initializer_range: float = 0.02
    initializer_factor: float = 0.1  # initial value of the layer-scale vectors ls1/ls2
    use_flash_attn: bool = False  # kept for config round-trips; attention always goes through SDPA
    gradient_checkpointing: bool = False
    extra: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    MODEL_TYPE = "intern_vit_6b"

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_attention_heads:
            raise ConfigError(
                f"hidden_size={self.hidden_size} is not divisible by num_attention_heads={self.num_attention_heads}"
            )
        if self.norm_type not in ("rms_norm", "layer_norm"):
            raise ConfigError(f"norm_type={self.norm_type!r}; expected 'rms_norm' or 'layer_norm'")
        if self.hidden_act not in _ACTIVATIONS:
            raise ConfigError(f"hidden_act={self.hidden_act!r}; supported: {sorted(_ACTIVATIONS)}")
        if self.image_size % self.patch_size:
            raise ConfigError(f"image_size={self.image_size} is not a multiple of patch_size={self.patch_size}")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def grid_size(self) -> int:
        return self.image_size // self.patch_size

    @property
    def num_positions(self) -> int:
        return self.grid_size**2 + 1

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> InternViTConfig:
        """Build from an official config dict; a composite config's ``vision_config`` is used if present.

        Keys this model does not use (transformers' generic ones) are kept in ``extra`` so that
        ``to_dict`` writes them back.
        """
        if "vision_config" in d:
            d = d["vision_config"]
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        known = {k: v for k, v in d.items() if k in names}
        extra = {k: v for k, v in d.items() if k not in names}
        if "norm_type" not in d:
            known["norm_type"] = "rms_norm"  # 1.0 / V1-x configs predate the field and are RMSNorm
        return cls(**known, extra=extra)

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike) -> InternViTConfig:
        return cls.from_dict(ckpt.read_config(path))

    def to_dict(self) -> dict[str, Any]:
        out = dict(self.extra)
        out.update({f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"})
        out.pop("gradient_checkpointing")
        out["model_type"] = self.MODEL_TYPE
        out.setdefault("architectures", ["InternVisionModel"])
        return out


_ACTIVATIONS = {
    "gelu": lambda: nn.GELU(),
    "gelu_pytorch_tanh": lambda: nn.GELU(approximate="tanh"),
    "gelu_new": lambda: nn.GELU(approximate="tanh"),
    "relu": lambda: nn.ReLU(),
    "silu": lambda: nn.SiLU(),
}


@dataclass
class VisionOutput:
    """``last_hidden_state``: float[B, N, D] (class token first); ``pooler_output``: float[B, D];
    ``hidden_states``: embedding output plus every layer output, when requested."""

    last_hidden_state: torch.Tensor
    pooler_output: torch.Tensor
    hidden_states: tuple[torch.Tensor, ...] | None = None


class InternRMSNorm(nn.Module):
    """RMSNorm computed in float32, cast back to the *input* dtype, *then* scaled (reference order)."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * h.to(dtype)


def make_norm(config: InternViTConfig, dim: int | None = None) -> nn.Module:
    dim = dim or config.hidden_size
    if config.norm_type == "rms_norm":
        return InternRMSNorm(dim, config.layer_norm_eps)
    return nn.LayerNorm(dim, eps=config.layer_norm_eps)


def drop_path(x: torch.Tensor, rate: float, training: bool) -> torch.Tensor:
    """Stochastic depth: drop whole samples of a residual branch, rescaling the kept ones."""
    if rate == 0.0 or not training:
        return x
    keep = 1.0 - rate
    mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
    return x * mask / keep


class InternViTEmbeddings(nn.Module):
    def __init__(self, config: InternViTConfig) -> None:
        super().__init__()
        self.config = config
        d = config.hidden_size
        self.class_embedding = nn.Parameter(torch.randn(1, 1, d))
        self.patch_embedding = nn.Conv2d(config.num_channels, d, config.patch_size, stride=config.patch_size)
        self.position_embedding = nn.Parameter(torch.randn(1, config.num_positions, d))

    def position_embedding_for(self, grid_h: int, grid_w: int, dtype: torch.dtype) -> torch.Tensor:
        """Position table for a (grid_h x grid_w) patch grid: the stored one, or a bicubic resize of it.

        The resize runs in float32 like the reference's on-the-fly interpolation (V1-5+ code path),
        so inputs at a size other than the checkpoint's still work.
        """
        pos = self.position_embedding
        g = int(math.isqrt(pos.shape[1] - 1))
        if (grid_h, grid_w) == (g, g):
            return pos.to(dtype)
        cls_pos, grid = pos[:, :1], pos[:, 1:]
        grid = grid.float().reshape(1, g, g, -1).permute(0, 3, 1, 2)  # (1, D, g, g)
        grid = F.interpolate(grid, size=(grid_h, grid_w), mode="bicubic", align_corners=False)
        grid = grid.reshape(1, -1, grid_h * grid_w).permute(0, 2, 1)  # (1, gh*gw, D)
        return torch.cat([cls_pos.to(dtype), grid.to(dtype)], dim=1)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        weight_dtype = self.patch_embedding.weight.dtype
        patches = self.patch_embedding(pixel_values.to(weight_dtype))  # (B, D, gh, gw)
        b, _, gh, gw = patches.shape
        patches = patches.flatten(2).transpose(1, 2)  # (B, gh*gw, D), row-major over the grid
        cls = self.class_embedding.expand(b, 1, -1).to(weight_dtype)
        x = torch.cat([cls, patches], dim=1)  # (B, 1+gh*gw, D)
        return x + self.position_embedding_for(gh, gw, weight_dtype)


class InternAttention(nn.Module):
    def __init__(self, config: InternViTConfig) -> None:
        super().__init__()
        d = config.hidden_size
        self.num_heads = config.num_attention_heads
        self.head_dim = config.head_dim
        self.attention_dropout = config.attention_dropout
        self.qkv = nn.Linear(d, 3 * d, bias=config.qkv_bias)
        self.qk_normalization = config.qk_normalization
        if config.qk_normalization:
            # One norm over all heads concatenated (not per head), as in the reference.
            self.q_norm = make_norm(config)
            self.k_norm = make_norm(config)
        self.proj = nn.Linear(d, d)
        self.proj_drop = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        # qkv channels are [q | k | v], each split into heads of head_dim contiguous channels.
        q, k, v = self.qkv(x).split(d, dim=-1)  # 3 x (B, N, D)
        if self.qk_normalization:
            q, k = self.q_norm(q), self.k_norm(k)  # normalised over the full width, before the head split
        q, k, v = (t.reshape(b, n, self.num_heads, self.head_dim).transpose(1, 2) for t in (q, k, v))  # (B, H, N, hd)
        out = F.scaled_dot_product_attention(
            q, k, v, dropout_p=self.attention_dropout if self.training else 0.0
        )  # (B, H, N, hd)
        out = out.transpose(1, 2).reshape(b, n, d)
        return self.proj_drop(self.proj(out))


class InternMLP(nn.Module):
    def __init__(self, config: InternViTConfig) -> None:
        super().__init__()
        self.fc1 = nn.Linear(config.hidden_size, config.intermediate_size)
        self.act = _ACTIVATIONS[config.hidden_act]()
        self.fc2 = nn.Linear(config.intermediate_size, config.hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class InternViTLayer(nn.Module):
    """Pre-norm block with layer-scaled residuals; drop path is applied after the layer scale."""

    def __init__(self, config: InternViTConfig, drop_path_rate: float) -> None:
        super().__init__()
        d = config.hidden_size
        self.norm1 = make_norm(config)
        self.attn = InternAttention(config)
        self.ls1 = nn.Parameter(config.initializer_factor * torch.ones(d))
        self.norm2 = make_norm(config)
        self.mlp = InternMLP(config)
        self.ls2 = nn.Parameter(config.initializer_factor * torch.ones(d))
        self.drop_path_rate = drop_path_rate

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        h = h + drop_path(self.attn(self.norm1(h).to(h.dtype)) * self.ls1, self.drop_path_rate, self.training)
        h = h + drop_path(self.mlp(self.norm2(h).to(h.dtype)) * self.ls2, self.drop_path_rate, self.training)
        return h


class InternViTEncoder(nn.Module):
    def __init__(self, config: InternViTConfig) -> None:
        super().__init__()
        n = config.num_hidden_layers
        # Linear schedule: layer 0 gets 0, the last layer the full rate (plain floats: works on meta too).
        rates = [config.drop_path_rate * i / (n - 1) if n > 1 else 0.0 for i in range(n)]
        self.layers = nn.ModuleList(InternViTLayer(config, r) for r in rates)
        self.gradient_checkpointing = config.gradient_checkpointing

    def forward(
        self, h: torch.Tensor, output_hidden_states: bool = False
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...] | None]:
        states: list[torch.Tensor] = [h] if output_hidden_states else []
        for layer in self.layers:
            if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
                h = checkpoint(layer, h, use_reentrant=False)
            else:
                h = layer(h)
            if output_hidden_states:
                states.append(h)
        return h, (tuple(states) if output_hidden_states else None)


class InternViT(nn.Module):
    """InternViT vision encoder.

    Example:
        >>> vit = InternViT.from_pretrained("OpenGVLab/InternViT-6B-448px-V1-2-local-dir", dtype="bf16")
        >>> out = vit(pixel_values)            # pixel_values: float[B, 3, S, S]
        >>> out.last_hidden_state.shape         # (B, 1 + (S/14)**2, 3200)
    """

    # No block may be split over devices by accelerate's device_map.
    no_split_modules = ["InternViTLayer"]

    def __init__(self, config: InternViTConfig) -> None:
        super().__init__()
        self.config = config
        self.embeddings = InternViTEmbeddings(config)
        self.encoder = InternViTEncoder(config)

    # -- properties -------------------------------------------------------------------------------
    @property
    def dtype(self) -> torch.dtype:
        return self.embeddings.patch_embedding.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.embeddings.patch_embedding.weight.device

    @property
    def image_size(self) -> int:
        """The image size the stored position table corresponds to."""
        g = int(math.isqrt(self.embeddings.position_embedding.shape[1] - 1))
        return g * self.config.patch_size

    def set_gradient_checkpointing(self, enabled: bool = True) -> None:
        """Recompute each block in backward (non-reentrant), trading compute for activation memory."""
        self.encoder.gradient_checkpointing = enabled

    def set_drop_path_rate(self, rate: float) -> None:
        """Stochastic depth for fine-tuning: layer i gets ``rate * i / (n - 1)``, as at construction."""
        n = len(self.encoder.layers)
        for i, layer in enumerate(self.encoder.layers):
            layer.drop_path_rate = rate * i / (n - 1) if n > 1 else 0.0
        self.config = dataclasses.replace(self.config, drop_path_rate=rate)
        self.embeddings.config = self.config

    # -- forward ----------------------------------------------------------------------------------
    def forward(self, pixel_values: torch.Tensor, output_hidden_states: bool = False) -> VisionOutput:
        """Encode images.

        Args:
            pixel_values: float[B, 3, H, W], normalised; H and W multiples of the patch size.
            output_hidden_states: also return the embedding output and each layer's output.

        Returns:
            `VisionOutput` with ``last_hidden_state`` float[B, 1 + H*W/P^2, D].
        """
        if pixel_values.ndim != 4 or pixel_values.shape[1] != self.config.num_channels:
            raise ValueError(
                f"pixel_values must be float[B, {self.config.num_channels}, H, W]; "
                f"got shape {tuple(pixel_values.shape)}"
            )
        h = self.embeddings(pixel_values)
        h, states = self.encoder(h, output_hidden_states=output_hidden_states)
        return VisionOutput(last_hidden_state=h, pooler_output=h[:, 0], hidden_states=states)

    # -- position embeddings ----------------------------------------------------------------------
    @torch.no_grad()
    def resize_position_embeddings(self, new_size: int, old_size: int | None = None) -> None:
        """Resize the stored position table to ``new_size`` pixels (bicubic in float32, class token kept).

        This is what ``force_image_size`` does (224 -> 364 or 448). ``old_size`` defaults to the
        size the current table corresponds to.
        """
        p = self.config.patch_size
        old_grid = (old_size or self.image_size) // p
        new_grid = new_size // p
        pos = self.embeddings.position_embedding
        if pos.shape[1] != old_grid**2 + 1:
            raise ConfigError(f"position table has {pos.shape[1]} rows; old_size={old_size} implies {old_grid**2 + 1}")
        resized = self.embeddings.position_embedding_for(new_grid, new_grid, pos.dtype)
        self.embeddings.position_embedding = nn.Parameter(resized.detach().clone(), requires_grad=pos.requires_grad)
        self.config = dataclasses.replace(self.config, image_size=new_size)
        self.embeddings.config = self.config

    # -- construction and I/O ---------------------------------------------------------------------
    @torch.no_grad()
    def init_weights(self, generator: torch.Generator | None = None) -> InternViT:
        """Random initialisation (truncated normal linears, unit norms, layer scale = initializer_factor)."""
        std = self.config.initializer_range
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                nn.init.trunc_normal_(m.weight, std=std, generator=generator)
                if m.bias is not None:
                    m.bias.zero_()
            elif isinstance(m, (nn.LayerNorm, InternRMSNorm)):
                m.weight.fill_(1.0)
                if getattr(m, "bias", None) is not None:
                    m.bias.zero_()
        nn.init.trunc_normal_(self.embeddings.class_embedding, std=std, generator=generator)
        nn.init.trunc_normal_(self.embeddings.position_embedding, std=std, generator=generator)
        for layer in self.encoder.layers:
            layer.ls1.fill_(self.config.initializer_factor)
            layer.ls2.fill_(self.config.initializer_factor)
        return self

    @classmethod
    def from_pretrained(
        cls,
        path: str | os.PathLike,
        *,
        dtype: str | torch.dtype | None = None,
        device: str | torch.device = "cpu",
        prefix: str | None = None,
        force_image_size: int | None = None,
    ) -> InternViT:
        """Load a checkpoint directory (``config.json`` + weights in any official layout).

        Args:
            path: checkpoint directory. A composite InternVL checkpoint works too: its
                ``vision_config`` is used and keys under ``vision_model.`` are taken.
            dtype: "fp32" / "bf16" / "fp16" (or a torch dtype); None keeps the stored dtype.
            device: where the weights end up.
            prefix: key prefix of the vision weights; detected automatically when None.
            force_image_size: serve this image size (as the composite config's ``force_image_size``
                does): a stored table of that size loads directly, any other is resized after loading
                (bicubic in float32, as `resize_position_embeddings`).

        Raises:
            CheckpointError: the directory is unreadable or its keys do not match this architecture.
        """
        raw = ckpt.read_config(path)
        config = InternViTConfig.from_dict(raw)
        force_image_size = force_image_size or raw.get("force_image_size")
        state = ckpt.read_state_dict(path, device=device)
        if prefix is None:
            prefix = "vision_model." if any(k.startswith("vision_model.") for k in state) else ""
        if prefix:
            state = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        build_size, resize_to = ckpt.plan_position_table(
            force_image_size, config.image_size, state.get("embeddings.position_embedding"), config.patch_size
        )
        if build_size != config.image_size:  # vision_config.image_size keeps its stored value otherwise
            config = dataclasses.replace(config, image_size=build_size)
        with torch.device("meta"):
            model = cls(config)
        ckpt.load_into(model, state, dtype=ckpt.resolve_dtype(dtype), source=f"{path}")
        if resize_to is not None:
            model.resize_position_embeddings(resize_to)  # e.g. a 224px table asked to serve 448px
        return model.to(device).eval()

    def save_pretrained(
        self, path: str | os.PathLike, *, safe_serialization: bool = True, max_shard_size: int | None = None
    ) -> None:
        """Write ``config.json`` and weights in the official layout (sharded when ``max_shard_size`` is set)."""
        ckpt.save_checkpoint(
            path,
            self.config.to_dict(),
            self.state_dict(),
            safe_serialization=safe_serialization,
            max_shard_size=max_shard_size,
        )


def build_intern_vit(config: InternViTConfig, seed: int | None = 0) -> InternViT:
    """Build a randomly initialised InternViT (deterministic for a given seed)."""
    gen = torch.Generator().manual_seed(seed) if seed is not None else None
    return InternViT(config).init_weights(gen).eval()


# Named sizes. The official checkpoints carry their own config.json; these are for building from scratch.
PRESETS: dict[str, InternViTConfig] = {
    "intern_vit_6b_224": InternViTConfig(),
    "intern_vit_6b_448_v1_2": InternViTConfig(num_hidden_layers=45, image_size=448),
    "intern_vit_300m_448": InternViTConfig(
        hidden_size=1024,
        num_hidden_layers=24,
        num_attention_heads=16,
        intermediate_size=4096,
        image_size=448,
        qkv_bias=True,
        qk_normalization=False,
        norm_type="layer_norm",
        initializer_factor=1.0,
    ),
    "intern_vit_tiny": InternViTConfig(
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=128,
        image_size=56,
        patch_size=14,
    ),
    # The built-in world (data.synthetic): 48-px images, one 16-px patch per grid cell, layer scale 1 so
    # that a from-scratch model trains in minutes on a CPU.
    "intern_vit_world": InternViTConfig(
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=256,
        image_size=48,
        patch_size=16,
        initializer_factor=1.0,
    ),
}


def _register_presets() -> None:
    for name, config in PRESETS.items():
        register_preset(name, "intern_vit", f"InternViT {name.removeprefix('intern_vit_')}")(
            lambda _config=config, **overrides: dataclasses.replace(_config, **overrides)
        )


_register_presets()
