"""The one numerics policy (internvl.core.devices) and the shared batch encoder that applies it."""

from __future__ import annotations

import itertools
import types

import pytest
import torch

from internvl.core import devices
from internvl.core.errors import ConfigError
from internvl.inference.embedding import encode_batches


@pytest.mark.parametrize(
    ("device", "dtype", "enabled", "force"),
    list(
        itertools.product(
            ["cpu", "cuda", "cuda:1"], [torch.float32, torch.bfloat16, torch.float16], [True, False], [False, True]
        )
    ),
)
def test_amp_dtype_only_for_fp16_models_on_cuda_unless_forced(device, dtype, enabled, force):
    expected = torch.float16 if enabled and device.startswith("cuda") and (dtype == torch.float16 or force) else None
    assert devices.amp_dtype(device, dtype, enabled, force=force) is expected


def test_amp_context_is_a_no_op_when_the_policy_says_so():
    for device, dtype in (("cuda", torch.float32), ("cuda", torch.bfloat16), ("cpu", torch.float16)):
        assert not isinstance(devices.amp_context(device, dtype), torch.autocast)


class _FakeCudaModel:
    """Reports a CUDA device (the tensors stay on the CPU) so the policy's CUDA branch is exercised here."""

    def __init__(self, dtype: torch.dtype) -> None:
        self.device, self.dtype = torch.device("cuda"), dtype
        self.config = types.SimpleNamespace(clip_embed_dim=4)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fp32_and_bf16_models_never_enter_autocast_in_the_shared_encoder(dtype):
    seen: list[bool] = []

    def encode(batch):
        seen.append(torch.is_autocast_enabled("cuda"))
        return torch.arange(len(batch) * 4, dtype=torch.float32).reshape(len(batch), 4) + 1

    done: list[int] = []
    out = encode_batches(_FakeCudaModel(dtype), [[1, 2], [3]], encode, progress=done.append)
    assert seen == [False, False] and done == [2, 1]
    expected = torch.nn.functional.normalize(
        torch.cat([torch.arange(8.0).reshape(2, 4), torch.arange(4.0).reshape(1, 4)]) + 1, dim=-1
    )
    torch.testing.assert_close(out, expected)
    assert encode_batches(_FakeCudaModel(dtype), [], encode).shape == (0, 4)


def test_pick_dtype_and_resolve_dtype():
    assert devices.pick_dtype(None, torch.device("cpu")) == "fp32"
    assert devices.pick_dtype("auto", torch.device("cuda")) == "fp16"
    assert devices.pick_dtype("bf16", torch.device("cpu")) == "bf16"
    with pytest.raises(ConfigError, match="unknown dtype 'fp8'"):
        devices.pick_dtype("fp8", torch.device("cpu"))
    assert devices.resolve_dtype("bfloat16") is torch.bfloat16 and devices.resolve_dtype("auto") is None
    assert devices.pick_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available"):
            devices.pick_device("cuda")
