"""bitsandbytes 8-bit (LLM.int8) weights for loaded models (CUDA only; ``pip install bitsandbytes``)."""

from __future__ import annotations

import torch
from torch import nn

from internvl.core.errors import InternVLError


def check_8bit_available() -> None:
    if not torch.cuda.is_available():
        raise InternVLError("load_in_8bit needs a CUDA GPU (bitsandbytes int8 kernels); none is visible")
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise InternVLError("load_in_8bit needs bitsandbytes: pip install bitsandbytes") from None


def quantize_8bit(model: nn.Module, skip: tuple[str, ...] = ("language_model.lm_head", "mlp1")) -> None:
    """Swap nn.Linear for bitsandbytes Linear8bitLt (LLM.int8, threshold 6); quantisation happens on .cuda()."""
    import bitsandbytes as bnb

    for parent_name, parent in list(model.named_modules()):
        for child_name, child in list(parent.named_children()):
            full = f"{parent_name}.{child_name}" if parent_name else child_name
            if not isinstance(child, nn.Linear) or any(full == s or full.startswith(s + ".") for s in skip):
                continue
            q = bnb.nn.Linear8bitLt(
                child.in_features,
                child.out_features,
                bias=child.bias is not None,
                has_fp16_weights=False,
                threshold=6.0,
            )
            q.weight = bnb.nn.Int8Params(child.weight.data, requires_grad=False, has_fp16_weights=False)
            if child.bias is not None:
                q.bias = nn.Parameter(child.bias.data, requires_grad=False)
            setattr(parent, child_name, q)
