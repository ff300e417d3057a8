"""The one device / dtype / autocast policy of the package (CLI verbs, eval runners, the server).

* `pick_device`: ``None``/"auto" is the first CUDA device when there is one, else the CPU.
* `pick_dtype`: ``None``/"auto" is fp16 on CUDA (the dtype the reference evaluations ran in) and fp32
  elsewhere (fp16 matmuls on CPU are slow and not what the published numbers used).
* `amp_dtype` / `amp_context`: autocast runs only for an **fp16 model on CUDA** with amp enabled, as
  clip_benchmark runs the fp16 reference (softmax, LayerNorm and norms then compute in float32). fp32 and
  bf16 models never enter fp16 autocast: it would lower their matmuls to fp16 behind the user's back.
  ``force=True`` is the explicit opt-in for fp16 autocast of any model on CUDA.
"""

from __future__ import annotations

import contextlib

import torch

from internvl.core.errors import ConfigError

DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}


def resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype | None:
    """``"bf16"``/``"bfloat16"``/``torch.bfloat16`` -> the torch dtype; None or "auto" -> None (keep as stored)."""
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        return None
    try:
        return DTYPES[str(dtype).lower()]
    except KeyError:
        raise ConfigError(f"unknown dtype {dtype!r}; expected one of {sorted(DTYPES)}") from None


def pick_device(device: str | torch.device | None) -> torch.device:
    """``None``/``"auto"``: the first CUDA device when there is one, else the CPU."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as e:
        raise ConfigError(f"--device {device!r}: {e}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {device}: CUDA is not available on this machine; use --device cpu")
    return dev


def pick_dtype(dtype: str | None, device: torch.device) -> str:
    """``None``/``"auto"``: fp16 on CUDA (as the reference evaluations), fp32 elsewhere."""
    if dtype in (None, "auto"):
        return "fp16" if device.type == "cuda" else "fp32"
    resolve_dtype(dtype)  # an unknown name fails here, before a checkpoint is read
    return dtype


def amp_dtype(
    device: torch.device | str, dtype: torch.dtype, enabled: bool = True, *, force: bool = False
) -> torch.dtype | None:
    """The autocast dtype for a model of ``dtype`` on ``device``: float16 or None (no autocast). See the module doc."""
    if not enabled or torch.device(device).type != "cuda":
        return None
    if dtype == torch.float16 or force:
        return torch.float16
    return None


def amp_context(
    device: torch.device | str, dtype: torch.dtype, enabled: bool = True, *, force: bool = False
) -> contextlib.AbstractContextManager:
    """``torch.autocast("cuda", float16)`` when `amp_dtype` says so, else a no-op context."""
    fast = amp_dtype(device, dtype, enabled, force=force)
    if fast is None:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=fast)


def model_device_dtype(model: torch.nn.Module) -> tuple[torch.device, torch.dtype]:
    """(device, dtype) of a model: its ``device``/``dtype`` attributes, else those of its first parameter."""
    device, dtype = getattr(model, "device", None), getattr(model, "dtype", None)
    if device is None or dtype is None:
        first = next(model.parameters())
        device, dtype = first.device, first.dtype
    return torch.device(device), dtype
