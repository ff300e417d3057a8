"""Device maps for models that are split over several GPUs (accelerate) and the placement of a loaded model.

`infer_device_map` is model-agnostic given ``_no_split_modules`` and a decoder-layer list: only whole
decoder layers are distributed, everything else shares the first device (the reference's
``split_model``). `place_model` puts a loaded model on one device or dispatches it by a map.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from internvl.core.errors import ConfigError, InternVLError

STRATEGIES = ("auto", "balanced", "balanced_low_0", "sequential")


def place_model(
    model: nn.Module,
    *,
    device_map: str | dict[str, Any] | None = None,
    device: str | torch.device | None = None,
    max_memory: dict[Any, Any] | None = None,
    dtype: torch.dtype | None = None,
) -> nn.Module:
    """Move ``model`` to ``device`` (default CPU), to the device a plain ``device_map`` string names, or
    dispatch it with accelerate by an explicit map or a strategy name (see `infer_device_map`)."""
    if device_map is None:
        return model.to(device or "cpu")
    if isinstance(device_map, str) and device_map not in STRATEGIES:
        return model.to(device_map)
    if isinstance(device_map, str):
        device_map = infer_device_map(model, max_memory=max_memory, dtype=dtype, strategy=device_map)
    from accelerate import dispatch_model

    if "disk" in set(device_map.values()):
        raise InternVLError(
            "device_map places modules on 'disk': the model does not fit in the GPUs' and CPU's max_memory; "
            "use more devices, a larger max_memory, a smaller dtype or load_in_8bit"
        )
    model.hf_device_map = dict(device_map)
    if set(device_map.values()) <= {"cpu"}:
        return model.to("cpu")
    return dispatch_model(model, device_map=device_map)


def infer_device_map(
    model: nn.Module,
    *,
    max_memory: dict[Any, Any] | None = None,
    dtype: torch.dtype | None = None,
    strategy: str = "auto",
) -> dict[str, Any]:
    """A device map in which only whole LLM decoder layers are distributed over the devices.

    Everything else (the vision tower, the projector, the token embeddings, the final norm, the rotary
    embedding and ``lm_head``) goes to the first device, like the reference's ``split_model``: the
    prompt embeddings, the spliced visual tokens and the logits then share one device. Those modules'
    bytes are taken out of the first device's budget first, then accelerate's ``infer_auto_device_map``
    places the decoder layers (never split: ``_no_split_modules``) in the remaining budgets, so no
    device exceeds its ``max_memory``.

    Args:
        max_memory: accelerate's per-device budgets (ints or "20GiB" strings, "cpu" allowed); None derives
            them from the visible devices (balanced over GPUs unless ``strategy="sequential"``).
        dtype: the dtype the weights will have (for the size estimate).
        strategy: "auto" / "balanced" / "balanced_low_0" / "sequential", as in transformers.

    Raises:
        InternVLError: the first device cannot hold the modules that must stay on it.
    """
    from accelerate import infer_auto_device_map
    from accelerate.utils import compute_module_sizes, get_max_memory

    if strategy not in STRATEGIES:
        raise ConfigError(f"device_map strategy {strategy!r}; expected auto, balanced, balanced_low_0 or sequential")
    no_split = list(model._no_split_modules)
    # "10GiB" strings -> bytes; None -> what the visible devices have (as accelerate does)
    max_memory = get_max_memory(dict(max_memory) if max_memory is not None else None)
    layers_name, layers = _decoder_layers(model)
    sizes = compute_module_sizes(model, dtype=dtype)
    fixed = sizes[""] - sizes[layers_name]  # everything that is not a decoder layer
    if strategy != "sequential":
        largest_layer = max(sizes[f"{layers_name}.{i}"] for i in range(len(layers)))
        max_memory = _balanced_budgets(max_memory, sizes[""], fixed, largest_layer, strategy == "balanced_low_0")
    devices = [d for d in max_memory if d != "disk" and max_memory[d] > 0]
    if not devices:
        raise InternVLError(f"device_map: max_memory {max_memory} names no device with memory")
    first = devices[0]  # a device given 0 bytes (e.g. balanced_low_0's GPU 0) holds nothing
    budget = {d: max_memory[d] for d in devices}
    budget[first] -= fixed
    if budget[first] < 0:
        raise InternVLError(
            f"device_map: device {first!r} (max_memory {max_memory[first]} bytes) cannot hold the vision tower, "
            f"projector, embeddings, norm and lm_head ({fixed} bytes), which must share the first device; "
            "give it a larger max_memory"
        )
    layer_map = infer_auto_device_map(layers, max_memory=budget, no_split_module_classes=no_split, dtype=dtype)
    if "disk" in layer_map.values():
        raise InternVLError(
            f"device_map: the decoder layers do not fit in max_memory {max_memory} after {fixed} bytes of fixed "
            "modules on the first device; add devices, raise max_memory (a 'cpu' entry allows offloading) or "
            "use a smaller dtype"
        )
    device_map: dict[str, Any] = {}
    for name, _ in model.named_children():
        if name != "language_model":
            device_map[name] = first
    _place_except(model.language_model, "language_model", layers_name, first, device_map)
    for name, device in layer_map.items():
        device_map[f"{layers_name}.{name}" if name else layers_name] = device
    return device_map


def _balanced_budgets(max_memory: dict[Any, int], total: int, fixed: int, layer: int, low_zero: bool) -> dict[Any, int]:
    """Spread the model evenly over the GPUs (transformers' "balanced"), within the given budgets.

    Like accelerate's ``get_balanced_memory`` (total / n plus 1.25 layers of slack, the last GPU keeps
    its full budget), except that the first GPU may take the fixed modules plus one layer even if that
    is above the even share (they cannot move); ``low_zero`` leaves GPU 0 empty for generation.
    """
    out = dict(max_memory)
    gpus = [d for d in out if isinstance(d, int) and out[d] > 0]
    if low_zero and len(gpus) > 1:
        out[gpus[0]] = 0
        gpus = gpus[1:]
    if len(gpus) < 2:
        return out
    share = total // len(gpus) + int(1.25 * layer)
    for i, gpu in enumerate(gpus[:-1]):
        out[gpu] = min(out[gpu], max(share, fixed + layer) if i == 0 else share)
    return out


def _decoder_layers(model: nn.Module) -> tuple[str, nn.Module]:
    """(qualified name, module) of the LLM's decoder-layer list (``language_model.model.layers``)."""
    for name, module in model.language_model.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) and type(module[0]).__name__ in model._no_split_modules:
            return f"language_model.{name}", module
    raise InternVLError(
        f"device_map='auto': no decoder-layer list found in {type(model.language_model).__name__}; pass an explicit map"
    )


def _place_except(module: nn.Module, prefix: str, skip: str, device: Any, out: dict[str, Any]) -> None:
    """Map every direct parameter/buffer/child of ``module`` to ``device``, descending only towards ``skip``."""
    for pname, _ in [*module.named_parameters(recurse=False), *module.named_buffers(recurse=False)]:
        out[f"{prefix}.{pname}"] = device
    for cname, child in module.named_children():
        full = f"{prefix}.{cname}"
        if full == skip:
            continue
        if skip.startswith(full + "."):
            _place_except(child, full, skip, device, out)
        else:
            out[full] = device
