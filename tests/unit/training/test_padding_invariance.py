"""Dynamic padding in fine-tuning: a batch cut to its longest caption trains exactly as the padded-to-80 batch.

Both stage-2 objectives (``itm_itc``: ITM + query/backbone ITC through QLLaMA; ``itc_c``: InternVL-C
InfoNCE) on one real `RetrievalPairs` batch collated both ways: loss values and gradients of parameters
in every part of the graph within 1e-5 (fp32, train mode, activation checkpointing as the recipes run).
The retrieval loss has no captioning (ITG) term; its only length-dependent reads are the attention
masks and the EOS index, and padded keys are masked out of every row, so garbage ids in the pad slots
change nothing either.
"""

from __future__ import annotations

import pytest
import torch

from internvl.core.errors import ConfigError
from internvl.data.pairs import PairCollate, PairTokenizer, RetrievalPairs, collate_pairs, read_caption_pairs
from internvl.data.tokenization import MAX_LENGTH
from internvl.models.internvl_cg import InternVLModel
from internvl.training.config import PADDINGS, load_recipe
from internvl.training.engine import read_metrics
from internvl.training.losses import retrieval_loss
from internvl.training.recipes.retrieval import RetrievalFinetune
from tests.unit.training.helpers import make_checkpoint, make_flickr_set

ATOL = 1e-5
# One parameter per part of the graph: ViT, attention pool, query tokens, QLLaMA self-/cross-attention,
# ITM head, both projections, the temperature.
PARAMS = (
    "vision_model.embeddings.patch_embedding.weight",
    "clip_projector.cross_attn.q.weight",
    "query_tokens",
    "qllama.model.embed_tokens.weight",
    "qllama.model.layers.0.self_attn.q_proj.weight",
    "qllama.model.layers.0.cross_attn.k_proj.weight",
    "itm_head.weight",
    "text_projection",
    "clip_projector2.cross_attn.q.weight",
    "logit_scale",
)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("pad")
    ckpt = make_checkpoint(root / "ckpt")
    make_flickr_set(root / "data", "d", 6, captions_per_image=3)
    pairs, _ = read_caption_pairs(root / "data" / "d.txt", root / "data" / "images", "flickr_format")
    tok = PairTokenizer.from_pretrained(ckpt, pad_to_max_length=False)
    picks = range(0, len(pairs), 3)  # one caption of each of the 6 images
    samples = [RetrievalPairs(pairs, tok, 56, seed=1)[i] for i in picks]
    # the reference's layout: samples padded to 80 by the tokenizer, stacked by the default collate
    reference = RetrievalPairs(pairs, PairTokenizer.from_pretrained(ckpt), 56, seed=1)
    reference_batch = torch.utils.data.default_collate([reference[i] for i in picks])
    model = InternVLModel.from_pretrained(ckpt, dtype="fp32").train()
    model.vision_model.set_gradient_checkpointing(True)
    model.qllama.set_gradient_checkpointing(True)
    return tok, samples, reference_batch, model


def test_collate_cuts_to_the_longest_caption_and_keeps_the_reference_layout(setup):
    tok, samples, reference_batch, _ = setup
    dynamic = collate_pairs(samples, tok.pad_token_id)
    padded = PairCollate(tok.pad_token_id, MAX_LENGTH)(samples)
    assert padded.keys() == reference_batch.keys() == dynamic.keys()
    for k in padded:  # max_length reproduces the reference's default-collated 80-id batch exactly
        assert torch.equal(padded[k], reference_batch[k]), k
    longest = max(int(dynamic[f"{f}_attention_mask"].sum(1).max()) for f in ("positive", "negative", "summarize"))
    assert longest < MAX_LENGTH // 2
    for f in ("positive", "negative", "summarize"):
        ids, mask = dynamic[f"{f}_input_ids"], dynamic[f"{f}_attention_mask"]
        assert ids.shape == mask.shape == (len(samples), longest)  # one width for all three fields
        assert torch.equal(ids, padded[f"{f}_input_ids"][:, :longest])
        assert torch.equal(mask, padded[f"{f}_attention_mask"][:, :longest])
        assert (padded[f"{f}_attention_mask"][:, longest:] == 0).all()
    assert torch.equal(dynamic["pixel_values"], padded["pixel_values"])
    assert torch.equal(dynamic["image_ids"], padded["image_ids"])


def _loss_and_grads(model, batch, objective):
    model.zero_grad(set_to_none=True)
    out = retrieval_loss(model, batch, objective=objective)
    out.loss.backward()
    params = dict(model.named_parameters())
    grads = {n: params[n].grad.clone() for n in PARAMS if params[n].grad is not None}
    model.zero_grad(set_to_none=True)
    return out, grads


@pytest.mark.parametrize("objective", ["itm_itc", "itc_c"])
def test_losses_and_gradients_do_not_depend_on_padding(setup, objective):
    tok, samples, _, model = setup
    dynamic = collate_pairs(samples, tok.pad_token_id)
    padded = collate_pairs(samples, tok.pad_token_id, MAX_LENGTH)
    # The pad slots hold arbitrary ids: a mask that let any row see them would change the numbers.
    garbage = dict(padded)
    g = torch.Generator().manual_seed(0)
    for f in ("positive", "negative", "summarize"):
        ids, mask = padded[f"{f}_input_ids"], padded[f"{f}_attention_mask"]
        garbage[f"{f}_input_ids"] = torch.where(
            mask.bool(), ids, torch.randint(3, model.config.qllama_config.vocab_size, ids.shape, generator=g)
        )
    ref, ref_grads = _loss_and_grads(model, padded, objective)
    if objective == "itm_itc":
        expected = set(PARAMS)
    else:  # InternVL-C: the attention-pooled ViT against the causal text; no queries, ITM or cross-attention
        expected = set(PARAMS) - {
            "query_tokens",
            "qllama.model.layers.0.cross_attn.k_proj.weight",
            "itm_head.weight",
            "clip_projector2.cross_attn.q.weight",
        }
    assert set(ref_grads) == expected and all(g.abs().sum() > 0 for g in ref_grads.values())
    for batch in (dynamic, garbage):
        out, grads = _loss_and_grads(model, batch, objective)
        for key in ("loss", "loss_itm", "loss_itc"):
            torch.testing.assert_close(getattr(out, key), getattr(ref, key), rtol=0, atol=ATOL, msg=key)
        assert grads.keys() == ref_grads.keys()
        for name, grad in grads.items():
            torch.testing.assert_close(grad, ref_grads[name], rtol=0, atol=ATOL, msg=name)


def test_the_recipe_cuts_its_batches_and_logs_the_padded_losses(tmp_path):
    """``data.padding`` end to end (single process, DDP backend): same per-step losses, narrower batches."""
    ckpt = make_checkpoint(tmp_path / "ckpt")
    registry = make_flickr_set(tmp_path / "data", "pad_flickr_format_train", 8)
    losses = {}
    for padding in PADDINGS:
        out = tmp_path / padding
        recipe = load_recipe(
            "tiny_synthetic",
            [
                f"model.path={ckpt}",
                f"data.registry=[{registry}]",
                "data.train=pad_flickr_format_train",
                f"data.padding={padding}",
                f"log.output_dir={out}",
                "engine.backend=ddp",
                "schedule.max_steps=3",
            ],
        )
        job = RetrievalFinetune(recipe)
        dataset, collate = job.training_data(job.prepare_data().pairs, image_size=56)
        width = collate([dataset[i] for i in range(4)])["summarize_input_ids"].shape[1]
        assert width == recipe.data.max_length if padding == "max_length" else width < recipe.data.max_length
        job.run()
        losses[padding] = [r["loss"] for r in read_metrics(out) if "loss" in r]
    assert len(losses["longest"]) == 3 and len(set(losses["longest"])) > 1
    torch.testing.assert_close(losses["longest"], losses["max_length"], rtol=0, atol=ATOL)
    with pytest.raises(ConfigError, match="data.padding='left'; expected one of"):
        load_recipe("tiny_synthetic", [f"model.path={ckpt}", "data.padding=left"])
