"""Summaries of checkpoint directories, read from config.json and the weight headers only.

Parameter counts come from tensor shapes in the safetensors headers (or the loaded .bin), so a 40B
checkpoint is described without loading its weights.
"""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path

from internvl.models import checkpoint as ckpt

_ST_DTYPES = {
    "F32": "float32",
    "BF16": "bfloat16",
    "F16": "float16",
    "F64": "float64",
    "I64": "int64",
    "I32": "int32",
    "U8": "uint8",
    "I8": "int8",
    "BOOL": "bool",
}


def _tensor_shapes(path: Path) -> dict[str, tuple[tuple[int, ...], str]]:
    """key -> (shape, dtype) for every tensor, reading only safetensors headers when possible."""
    out: dict[str, tuple[tuple[int, ...], str]] = {}
    for f in ckpt.weight_files(path):
        if f.suffix == ".safetensors":
            header = ckpt.read_safetensors_header(f)  # also checks the file is complete
            for k, v in header.items():
                if k != "__metadata__":
                    out[k] = (tuple(v["shape"]), _ST_DTYPES.get(v["dtype"], v["dtype"]))
        else:
            import torch

            for k, t in torch.load(f, map_location="meta", weights_only=True).items():
                out[k] = (tuple(t.shape), str(t.dtype).removeprefix("torch."))
    return out


def describe_checkpoint(path: str | os.PathLike) -> dict:
    """Architecture, per-component parameter counts, stored dtype(s) and image size of a checkpoint."""
    root = Path(path)
    config = ckpt.read_config(root)
    shapes = _tensor_shapes(root)
    components: dict[str, int] = defaultdict(int)
    dtypes: set[str] = set()
    for key, (shape, dtype) in shapes.items():
        n = 1
        for d in shape:
            n *= d
        component = key.split(".", 1)[0] if "." in key else key
        components[component] += n
        dtypes.add(dtype)
    vision = config.get("vision_config", config)
    summary: dict = {
        "model_type": config.get("model_type", "unknown"),
        "architectures": ", ".join(config.get("architectures") or []) or "-",
        "parameters": sum(components.values()),
        "components": dict(sorted(components.items(), key=lambda kv: -kv[1])),
        "stored_dtype": ", ".join(sorted(dtypes)),
        "weight_files": len(ckpt.weight_files(root)),
        "image_size": config.get("force_image_size") or vision.get("image_size"),
        "vision": {
            "hidden_size": vision.get("hidden_size"),
            "layers": vision.get("num_hidden_layers"),
            "heads": vision.get("num_attention_heads"),
            "patch_size": vision.get("patch_size"),
            "norm_type": vision.get("norm_type", "rms_norm"),
        },
    }
    for sub in ("llm_config", "qllama_config"):
        if sub in config:
            c = config[sub]
            summary[sub.removesuffix("_config")] = {
                "architecture": ", ".join(c.get("architectures") or []) or c.get("model_type", "-"),
                "hidden_size": c.get("hidden_size"),
                "layers": c.get("num_hidden_layers"),
                "vocab_size": c.get("vocab_size"),
            }
    return summary
