"""The stage-2 retrieval training forward and optimizer groups against the reference (internvl_cg/ fixtures).

``train_outputs``: loss, loss_itm, loss_itc of one forward on ``train_inputs`` (single process), 1e-5;
the same batch re-padded by `collate_pairs` (cut to its longest caption, or 80 ids) gives the same losses.
``lr_groups.json``: every parameter's layer id, lr scale and weight decay under layer-wise decay.
"""

from __future__ import annotations

import json
import math

import pytest
import torch

from internvl.data.pairs import TEXT_FIELDS, collate_pairs
from internvl.models.internvl_cg import InternVLModel
from internvl.training.losses import retrieval_loss
from internvl.training.optim import param_groups
from tests.conftest import load_fixture

pytestmark = pytest.mark.parity
ATOL = RTOL = 1e-5


@pytest.fixture(scope="module")
def fx():
    return load_fixture("internvl_cg")


@pytest.fixture(scope="module")
def model(fx):
    return InternVLModel.from_pretrained(fx["root"], dtype="fp32")


def test_training_losses(fx, model):
    out = retrieval_loss(model, fx["train_inputs"], rank=0, world_size=1)
    assert set(fx["train_outputs"]) == {"loss", "loss_itm", "loss_itc"}
    for key, expected in fx["train_outputs"].items():
        torch.testing.assert_close(getattr(out, key).reshape(expected.shape), expected, atol=ATOL, rtol=RTOL, msg=key)
    assert out.loss.requires_grad and not out.loss_itc.requires_grad


@pytest.mark.parametrize("length", [None, 80])
def test_training_losses_at_any_padding(fx, model, length):
    """The fixture pads to 14 ids with id 0; unpadded samples collated to their longest caption (13) or to 80."""
    inputs = fx["train_inputs"]
    keys = ["pixel_values", "image_ids", *(f"{f}_{k}" for f in TEXT_FIELDS for k in ("input_ids", "attention_mask"))]
    samples = []
    for i in range(inputs["image_ids"].shape[0]):
        sample = {k: inputs[k][i] for k in keys}
        for f in TEXT_FIELDS:
            n = int(sample[f"{f}_attention_mask"].sum())
            for k in ("input_ids", "attention_mask"):
                sample[f"{f}_{k}"] = sample[f"{f}_{k}"][:n]
        samples.append(sample)
    batch = collate_pairs(samples, pad_token_id=0, length=length)
    assert batch["summarize_input_ids"].shape[1] == (length or 13) != inputs["summarize_input_ids"].shape[1]
    out = retrieval_loss(model, batch)
    for key, expected in fx["train_outputs"].items():
        torch.testing.assert_close(getattr(out, key).reshape(expected.shape), expected, atol=ATOL, rtol=RTOL, msg=key)


def test_gradients_reach_the_loss_graph(fx, model):
    """Everything the reference trains in full mode gets a gradient except lm_head (spec §7.4)."""
    model.zero_grad()
    retrieval_loss(model, fx["train_inputs"]).loss.backward()
    no_grad = sorted(n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum())
    assert no_grad == ["qllama.lm_head.weight"]
    model.zero_grad()


def test_param_groups_equal_reference(fx, model):
    ref = json.loads((fx["root"] / "lr_groups.json").read_text())
    base_lr = 1e-6
    groups = param_groups(
        model, base_lr, ref["weight_decay"], {"vit": ref["vit_layer_decay"], "qllama": ref["qllama_layer_decay"]}
    )
    assert model.num_layer_ids() == {"vit": ref["vit_num_layers_plus_2"], "qllama": ref["qllama_num_layers_plus_2"]}
    seen = {}
    for g in groups:
        for name in g["param_names"]:
            assert name not in seen
            seen[name] = g
    assert set(seen) == set(ref["per_param"])
    for name, exp in ref["per_param"].items():
        g = seen[name]
        family, layer = model.layer_id(name)
        assert (family, layer) == (exp["group"], exp["layer_id"]), name
        assert math.isclose(g["lr_scale"], exp["lr_scale"], rel_tol=1e-12), name
        assert math.isclose(g["lr"], base_lr * exp["lr_scale"], rel_tol=1e-12), name
        assert g["weight_decay"] == exp["weight_decay"], name
        assert g["name"] == f"{exp['group']}_layer_{exp['layer_id']}_{'decay' if exp['weight_decay'] else 'no_decay'}"
