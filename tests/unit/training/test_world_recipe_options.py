"""Recipe options the world's from-scratch recipes use: the InternVL-C objective, position-table init, no
decay on it, resize-only data, and the wall-clock schedule."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from internvl.core.errors import ConfigError
from internvl.training.config import load_recipe
from internvl.training.losses import internvl_c_loss
from internvl.training.optim import WallClock, no_weight_decay, warmup_cosine_timed


def test_internvl_c_loss_is_symmetric_infonce_with_a_capped_scale():
    g = torch.Generator().manual_seed(0)
    img, txt = torch.randn(4, 8, generator=g), torch.randn(4, 8, generator=g)
    ids = torch.arange(4)
    logit_scale = torch.tensor(math.log(1000.0))  # exp 1000, capped to 100
    loss = internvl_c_loss(img, txt, ids, logit_scale, scale_max=100.0)
    logits = 100.0 * F.normalize(img, dim=1) @ F.normalize(txt, dim=1).t()
    ref = (F.cross_entropy(logits, ids) + F.cross_entropy(logits.t(), ids)) / 2
    torch.testing.assert_close(loss, ref, rtol=1e-6, atol=1e-6)
    # Captions of the same image are all positives: two rows of image 0 split the target.
    ids2 = torch.tensor([0, 0, 1, 2])
    assert not torch.allclose(internvl_c_loss(img, txt, ids2, logit_scale, scale_max=100.0), loss)


def test_world_recipe_parses_and_bad_objective_is_named():
    r = load_recipe("world_contrastive", ["model.path=/x"])
    assert (r.method.objective, r.data.augment, r.model.position_embedding_init_std) == ("itc_c", False, 0.1)
    assert r.schedule.max_seconds > 0 and r.optim.no_decay_position_embedding
    with pytest.raises(ConfigError, match="method.objective"):
        load_recipe("world_contrastive", ["model.path=/x", "method.objective=itm"])


def test_exclude_from_decay_flag():
    p = torch.nn.Parameter(torch.zeros(1, 10, 4))
    assert not no_weight_decay("vision_model.embeddings.position_embedding", p)
    p.exclude_from_decay = True
    assert no_weight_decay("vision_model.embeddings.position_embedding", p)


def test_timed_schedule_follows_the_clock():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    clock = WallClock()
    clock.start = 0.0  # pretend training began long ago: the time budget is spent
    sched = warmup_cosine_timed(opt, 5, 100, max_seconds=1.0, clock=clock)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-9)  # cosine at its end, at step 0
    clock.start = None
    sched = warmup_cosine_timed(opt, 10, 100, max_seconds=1e6, clock=clock)
    lrs = []
    for _ in range(30):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[5] == pytest.approx(0.5, rel=1e-3) and lrs[10] == pytest.approx(1.0, rel=1e-3)  # steps rule
    assert lrs[29] < lrs[11]
