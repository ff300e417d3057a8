"""InternViT against the reference implementation's golden tensors (float32, 1e-5)."""

from __future__ import annotations

import pytest
import torch

from internvl.models.intern_vit import InternViT
from tests.conftest import load_fixture

pytestmark = pytest.mark.parity
ATOL = RTOL = 1e-5


@pytest.fixture(scope="module")
def fx():
    return load_fixture("internvit")


@pytest.fixture(scope="module")
def model(fx):
    return InternViT.from_pretrained(fx["root"], dtype="fp32")


def test_config_is_read_from_fixture(fx, model):
    cfg = fx["config"]
    assert model.config.hidden_size == cfg["hidden_size"]
    assert model.config.num_hidden_layers == cfg["num_hidden_layers"]
    assert model.config.qk_normalization == cfg["qk_normalization"]
    assert model.config.qkv_bias == cfg["qkv_bias"]


def test_last_hidden_state_and_pooler(fx, model):
    with torch.no_grad():
        out = model(fx["inputs"]["pixel_values"], output_hidden_states=True)
    torch.testing.assert_close(out.last_hidden_state, fx["outputs"]["last_hidden_state"], atol=ATOL, rtol=RTOL)
    torch.testing.assert_close(out.pooler_output, fx["outputs"]["pooler_output"], atol=ATOL, rtol=RTOL)


def test_every_hidden_state(fx, model):
    with torch.no_grad():
        out = model(fx["inputs"]["pixel_values"], output_hidden_states=True)
    expected = sorted((k for k in fx["outputs"] if k.startswith("hidden_states.")), key=lambda k: int(k.split(".")[1]))
    assert len(out.hidden_states) == len(expected) == fx["config"]["num_hidden_layers"] + 1
    for i, key in enumerate(expected):
        torch.testing.assert_close(out.hidden_states[i], fx["outputs"][key], atol=ATOL, rtol=RTOL, msg=key)


def test_resized_position_embeddings(fx):
    resize = fx["meta"]["resize"]
    model = InternViT.from_pretrained(fx["root"], dtype="fp32")
    model.resize_position_embeddings(resize["new_size"], old_size=resize["old_size"])
    torch.testing.assert_close(
        model.embeddings.position_embedding.data, fx["outputs"]["resized.position_embedding"], atol=ATOL, rtol=RTOL
    )
    with torch.no_grad():
        out = model(fx["inputs"]["resized.pixel_values"])
    torch.testing.assert_close(out.last_hidden_state, fx["outputs"]["resized.last_hidden_state"], atol=ATOL, rtol=RTOL)


# Low-precision tolerance, documented in the README: relative Frobenius error of last_hidden_state
# against the float32 golden output. Measured on CPU: bf16 3.2e-3, fp16 5.3e-4.
LOW_PRECISION_REL_TOL = {"bf16": 1e-2, "fp16": 2e-3}
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", sorted(LOW_PRECISION_REL_TOL))
def test_low_precision_within_documented_tolerance(fx, dtype, device):
    model = InternViT.from_pretrained(fx["root"], dtype=dtype, device=device)
    with torch.no_grad():
        out = model(fx["inputs"]["pixel_values"].to(device)).last_hidden_state.float().cpu()
    expected = fx["outputs"]["last_hidden_state"]
    rel = ((out - expected).norm() / expected.norm()).item()
    assert rel < LOW_PRECISION_REL_TOL[dtype], f"{dtype} on {device}: relative error {rel:.2e}"
