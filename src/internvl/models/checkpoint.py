"""Reading and writing checkpoint directories in the layouts the official releases use.

A checkpoint directory holds ``config.json`` and weights in one of four layouts:
``model.safetensors``, sharded ``model-0000k-of-0000n.safetensors`` + ``model.safetensors.index.json``,
``pytorch_model.bin``, or sharded ``pytorch_model-*.bin`` + ``pytorch_model.bin.index.json``.
Key checks happen here, before any tensor is copied, so a wrong checkpoint fails with the lists of
missing and unexpected keys rather than a shape error deep inside a module.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path

import torch
from torch import nn

from internvl.core.devices import DTYPES, resolve_dtype  # noqa: F401 (re-exported: the one dtype table)
from internvl.core.errors import CheckpointError
from internvl.core.io import hub_id_hint

SAFE_SINGLE = "model.safetensors"
SAFE_INDEX = "model.safetensors.index.json"
BIN_SINGLE = "pytorch_model.bin"
BIN_INDEX = "pytorch_model.bin.index.json"
CONFIG_NAME = "config.json"


def read_config(path: str | os.PathLike) -> dict:
    """Read ``config.json`` from a checkpoint directory (or the file itself)."""
    p = Path(path)
    if p.is_dir():
        p = p / CONFIG_NAME
    if not p.is_file():
        if not Path(path).exists():
            raise CheckpointError(f"{path}: no such checkpoint folder (no config.json found){hub_id_hint(path)}")
        raise CheckpointError(f"{p}: no config.json found; a checkpoint directory needs one")
    try:
        config = json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{p}: invalid JSON at line {e.lineno}: {e.msg}") from None
    except UnicodeDecodeError as e:
        raise CheckpointError(f"{p}: not UTF-8 text (byte {e.start}); expected a checkpoint's JSON config") from None
    if not isinstance(config, dict):
        raise CheckpointError(f"{p}: expected a JSON object (the model config), got {type(config).__name__}")
    return config


def weight_files(path: str | os.PathLike) -> list[Path]:
    """List the weight files of a checkpoint directory, preferring safetensors over .bin."""
    root = Path(path)
    if not root.is_dir():
        raise CheckpointError(f"{root}: not a directory (expected a checkpoint directory){hub_id_hint(root)}")
    for index_name in (SAFE_INDEX, BIN_INDEX):
        index = root / index_name
        if index.is_file():
            try:
                weight_map = json.loads(index.read_text())["weight_map"]
            except (json.JSONDecodeError, KeyError) as e:
                raise CheckpointError(f"{index}: not a valid shard index ({e})") from None
            files = [root / name for name in dict.fromkeys(weight_map.values())]
            missing = [str(f) for f in files if not f.is_file()]
            if missing:
                raise CheckpointError(f"{index} names shards that do not exist: {missing}")
            return files
    for single in (SAFE_SINGLE, BIN_SINGLE):
        if (root / single).is_file():
            return [root / single]
    raise CheckpointError(
        f"{root}: no weights found; expected one of {SAFE_SINGLE}, {SAFE_INDEX}, {BIN_SINGLE}, {BIN_INDEX}"
    )


def read_state_dict(path: str | os.PathLike, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """Read every tensor of a checkpoint directory into one flat dict (keys as stored)."""
    state: dict[str, torch.Tensor] = {}
    for f in weight_files(path):
        if f.suffix == ".safetensors":
            from safetensors.torch import load_file

            read_safetensors_header(f)  # truncated / garbage files: an error naming the file, not deep inside
            try:
                state.update(load_file(str(f), device=str(device)))
            except Exception as e:  # safetensors' SafetensorError is not exported under one stable name
                raise CheckpointError(f"{f}: cannot read the weights ({e})") from None
        else:
            try:
                state.update(torch.load(f, map_location=device, weights_only=True))
            except (RuntimeError, EOFError, OSError, ValueError) as e:
                raise CheckpointError(f"{f}: cannot read the weights (truncated or not a PyTorch file?): {e}") from None
    return state


def read_safetensors_header(f: str | os.PathLike) -> dict:
    """The JSON header of a safetensors file, checked against the file: every tensor's ``data_offsets``
    must lie inside the data section and the data section must end where the file ends.

    A download that was cut off passes a header-only check (the header is at the start) but is shorter
    than its offsets say; that is reported here, with both sizes.

    Raises:
        CheckpointError: not a safetensors file (bad header), or incomplete / oversized data section.
    """
    f = Path(f)
    size = f.stat().st_size
    with open(f, "rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            raise CheckpointError(f"{f}: {size} bytes, too short for a safetensors file (an interrupted download?)")
        n = int.from_bytes(head, "little")
        if n > size - 8 or n > 100_000_000:
            raise CheckpointError(
                f"{f}: not a valid safetensors file (header length {n:,} bytes, file {size:,} bytes); "
                "truncated or not safetensors"
            )
        try:
            header = json.loads(fh.read(n))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise CheckpointError(f"{f}: not a valid safetensors file (header is not JSON: {e})") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{f}: not a valid safetensors file (header is not a JSON object)")
    end = 0
    for key, info in header.items():
        if key == "__metadata__":
            continue
        try:
            start, stop = (int(x) for x in info["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise CheckpointError(f"{f}: not a valid safetensors file (tensor {key!r} has no data_offsets)") from None
        end = max(end, stop)
    data = size - 8 - n
    if data < end:
        raise CheckpointError(
            f"{f}: incomplete file: the header needs {end + 8 + n:,} bytes, the file has {size:,} "
            f"({100 * size / (end + 8 + n):.1f}%); an interrupted download? Download it again"
        )
    if data > end:
        raise CheckpointError(f"{f}: {data - end:,} unexpected bytes after the tensor data; the file is damaged")
    return header


def save_state_dict(
    state_dict: Mapping[str, torch.Tensor],
    path: str | os.PathLike,
    *,
    safe_serialization: bool = True,
    max_shard_size: int | None = None,
) -> list[Path]:
    """Write tensors in the official layout; shard when ``max_shard_size`` (bytes) is exceeded.

    Returns the written weight files. Tensors are made contiguous and de-aliased (safetensors refuses
    shared storage) without changing their values.
    """
    root = Path(path)
    root.mkdir(parents=True, exist_ok=True)
    storage_uses = Counter(v.untyped_storage().data_ptr() for v in state_dict.values())
    tensors = {
        k: v.detach().contiguous().clone()
        if storage_uses[v.untyped_storage().data_ptr()] > 1
        else v.detach().contiguous()
        for k, v in state_dict.items()
    }
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for key, tensor in tensors.items():
        nbytes = tensor.numel() * tensor.element_size()
        if max_shard_size is not None and shards[-1] and size + nbytes > max_shard_size:
            shards.append({})
            size = 0
        shards[-1][key] = tensor
        size += nbytes
    ext = ".safetensors" if safe_serialization else ".bin"
    stem = "model" if safe_serialization else "pytorch_model"
    n = len(shards)
    names = [f"{stem}{ext}"] if n == 1 else [f"{stem}-{i + 1:05d}-of-{n:05d}{ext}" for i in range(n)]
    written = []
    for name, shard in zip(names, shards, strict=True):
        target = root / name
        if safe_serialization:
            from safetensors.torch import save_file

            save_file(shard, str(target), metadata={"format": "pt"})
        else:
            torch.save(shard, target)
        written.append(target)
    if n > 1:
        weight_map = {k: name for name, shard in zip(names, shards, strict=True) for k in shard}
        total = sum(t.numel() * t.element_size() for t in tensors.values())
        index = {"metadata": {"total_size": total}, "weight_map": weight_map}
        (root / (SAFE_INDEX if safe_serialization else BIN_INDEX)).write_text(json.dumps(index, indent=2))
    return written


def save_checkpoint(
    path: str | os.PathLike,
    config: Mapping,
    state_dict: Mapping[str, torch.Tensor],
    *,
    safe_serialization: bool = True,
    max_shard_size: int | None = None,
) -> Path:
    """Write a checkpoint directory: ``config.json`` (keys sorted, ``torch_dtype`` from the weights) + weights."""
    root = Path(path)
    root.mkdir(parents=True, exist_ok=True)
    cfg = dict(config)
    first_float = next((t for t in state_dict.values() if t.is_floating_point()), None)
    if first_float is not None:
        cfg["torch_dtype"] = str(first_float.dtype).removeprefix("torch.")
    (root / CONFIG_NAME).write_text(json.dumps(cfg, indent=2, sort_keys=True, ensure_ascii=False), encoding="utf-8")
    save_state_dict(state_dict, root, safe_serialization=safe_serialization, max_shard_size=max_shard_size)
    return root


def plan_position_table(
    target: int | None, built: int, table: torch.Tensor | None, patch_size: int
) -> tuple[int, int | None]:
    """How to load a vision position table when the config asks to serve ``target`` px (``force_image_size``).

    Returns (image size to build the model at, size to resize the table to after loading, or None): a
    stored table of ``target`` px loads directly; any other stored size loads as stored and is resized
    afterwards (bicubic in float32, as the reference fine-tuning script). Without ``target`` the model
    is built at ``built`` px and a table of another size is a key-shape error.
    """
    if not target:
        return built, None
    stored = math.isqrt(table.shape[1] - 1) * patch_size if table is not None else built
    return (target, None) if stored == target else (stored, target)


def check_keys(
    model: nn.Module,
    state_dict: Mapping[str, torch.Tensor],
    *,
    source: str = "checkpoint",
    ignore_unexpected: Iterable[str] = (),
) -> None:
    """Raise `CheckpointError` listing missing / unexpected keys and shape mismatches, if any.

    ``ignore_unexpected`` holds regexes for stored keys that are legitimately unused (e.g. RoPE
    ``inv_freq`` buffers that older checkpoints saved).
    """
    expected = model.state_dict()
    patterns = [re.compile(p) for p in ignore_unexpected]
    missing = sorted(k for k in expected if k not in state_dict)
    unexpected = sorted(k for k in state_dict if k not in expected and not any(p.search(k) for p in patterns))
    mismatched = sorted(
        f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in expected
        if k in state_dict and tuple(state_dict[k].shape) != tuple(expected[k].shape)
    )
    if missing or unexpected or mismatched:
        parts = [f"{source} does not match {type(model).__name__}:"]
        if missing:
            parts.append(f"  missing keys ({len(missing)}): {_preview(missing)}")
        if unexpected:
            parts.append(f"  unexpected keys ({len(unexpected)}): {_preview(unexpected)}")
        if mismatched:
            parts.append(f"  shape mismatches ({len(mismatched)}): {_preview(mismatched)}")
        raise CheckpointError("\n".join(parts))


def _preview(items: list[str], limit: int = 20) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f", ... (+{len(items) - limit} more)" if len(items) > limit else "")


def load_into(
    model: nn.Module,
    state_dict: Mapping[str, torch.Tensor],
    *,
    dtype: torch.dtype | None = None,
    source: str = "checkpoint",
    ignore_unexpected: Iterable[str] = (),
) -> nn.Module:
    """Check keys, then copy ``state_dict`` into ``model`` (which may live on the meta device).

    Floating tensors are cast to ``dtype`` when given; parameters are assigned, so a model built on
    the meta device never allocates its random initialisation.
    """
    check_keys(model, state_dict, source=source, ignore_unexpected=ignore_unexpected)
    expected = model.state_dict()
    cleaned = {}
    for k in expected:
        t = state_dict[k]
        if dtype is not None and t.is_floating_point():
            t = t.to(dtype)
        cleaned[k] = t
    model.load_state_dict(cleaned, strict=True, assign=True)
    return model
