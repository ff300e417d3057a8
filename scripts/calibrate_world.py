"""Calibrate training settings on the built-in world with plain PyTorch loops over OUR model classes.

Stage ``contrastive``: InternVLModel (InternVL-C: encode_image / encode_text / logit_scale), symmetric
InfoNCE, held-out text->image R@1 over the test split's captions. Stage ``chat``: InternVLChatModel
(world ViT, optionally initialised from the contrastive run, + mlp1 + a small LLaMA), loss on answers
only, held-out accuracy per question type with greedy `batch_chat`.

Runs on ONE thread (the machine is shared): ``OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE``. The budget and
the logged ``seconds`` are the process CPU time of the training steps (evaluation excluded), which on
one thread equals wall time on an idle machine and stays comparable when other jobs load it. Prints one
JSON line per evaluation: {"stage", "seconds", "step", metrics...}. Example:

    python scripts/calibrate_world.py contrastive --world /tmp/world --budget 90 --out /tmp/cal/c1
    python scripts/calibrate_world.py chat --world /tmp/world --budget 240 --vit /tmp/cal/c1/vit.pt
    python scripts/calibrate_world.py probe --world /tmp/world --vit /tmp/cal/c1/vit.pt   # linear probes
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import json
import math
import random
import time
from pathlib import Path

import torch
import torch.nn.functional as F

torch.set_num_threads(1)


def log(out: Path | None, rec: dict) -> None:
    line = json.dumps(rec)
    print(line, flush=True)
    if out is not None:
        with open(out / "log.jsonl", "a") as f:
            f.write(line + "\n")


def load_images(records, size):
    from PIL import Image

    from internvl.data.transforms import build_transform

    t = build_transform("retrieval", size)
    return torch.stack([t(Image.open(r.image_path).convert("RGB")) for r in records])


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def lr_at(frac: float, warmup: float) -> float:
    if frac < warmup:
        return frac / warmup
    return 0.5 * (1 + math.cos(math.pi * min(1.0, (frac - warmup) / (1 - warmup))))


# -- contrastive -------------------------------------------------------------------------------------
def contrastive(a) -> None:
    from internvl.data.datasets import read_flickr_captions
    from internvl.data.tokenization import InternVLTextTokenizer
    from internvl.models.internvl_cg import build_internvl, internvl_cg_world

    world = Path(a.world)
    train = read_flickr_captions(world / "flickr/world_train_karpathy.txt", world / "images")[: a.train_images]
    test = read_flickr_captions(world / "flickr/world_test_karpathy.txt", world / "images")
    tok = InternVLTextTokenizer.from_pretrained(world / "tokenizer", max_length=64)
    torch.manual_seed(a.seed)
    model = build_internvl(internvl_cg_world(tok.vocab_size), seed=a.seed).train()
    with torch.no_grad():
        model.logit_scale.fill_(math.log(a.logit_init))
        if a.pos_init_std:
            model.vision_model.embeddings.position_embedding.normal_(0, a.pos_init_std)
    xtr, xte = load_images(train, 48), load_images(test, 48)
    caps_tr = [tok(list(r.captions) + _colour_free(r.captions[:1])) for r in train]  # per image long[4, 64]
    ids_tr = torch.stack(caps_tr)  # (N, 3, 64)
    L = int((ids_tr > 0).sum(-1).max())
    ids_tr = ids_tr[..., :L]
    te_caps = [c for r in test for c in r.captions]
    te_img = torch.tensor([i for i, r in enumerate(test) for _ in r.captions])
    ids_te = tok(te_caps)
    ids_te = ids_te[:, : int((ids_te > 0).sum(-1).max())]
    params = [p for p in model.parameters() if p.requires_grad]
    emb = {id(model.vision_model.embeddings.position_embedding), id(model.vision_model.embeddings.class_embedding)}
    decay = [p for p in params if p.ndim >= 2 and not (a.no_decay_pos and id(p) in emb)]
    no_decay = [p for p in params if not (p.ndim >= 2 and not (a.no_decay_pos and id(p) in emb))]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": a.wd}, {"params": no_decay, "weight_decay": 0.0}], lr=a.lr, betas=(0.9, 0.98)
    )
    out = Path(a.out) if a.out else None
    if out:
        out.mkdir(parents=True, exist_ok=True)
    nparam = sum(p.numel() for p in model.parameters())
    log(
        out,
        {
            "stage": "contrastive",
            "params": nparam,
            "train_images": len(train),
            "test_images": len(test),
            "test_queries": len(te_caps),
            "args": vars(a),
        },
    )
    t0, step, next_eval, train_time = time.time(), 0, a.eval_every, 0.0
    g = torch.Generator().manual_seed(a.seed)
    while True:
        ts = time.process_time()
        frac = train_time / a.budget
        if frac >= 1:
            break
        for group in opt.param_groups:
            group["lr"] = a.lr * lr_at(frac, a.warmup)
        idx = torch.randperm(len(train), generator=g)[: a.batch]
        cap = torch.randint(0, ids_tr.shape[1] - 1, (len(idx),), generator=g)
        if a.shape_captions:  # the last caption: the first without its colours (shape, size, position only)
            cap[torch.rand(len(idx), generator=g) < a.shape_captions] = ids_tr.shape[1] - 1
        pix = xtr[idx]
        if a.aug_shift:
            pass
        ids = ids_tr[idx, cap]
        img = F.normalize(model.encode_image(pix), dim=-1)
        txt = F.normalize(model.encode_text(ids), dim=-1)
        logits = model.logit_scale.exp().clamp(max=100) * img @ txt.t()
        labels = torch.arange(len(idx))
        loss = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels)) / 2
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        with torch.no_grad():
            model.logit_scale.clamp_(max=math.log(100))
        step += 1
        train_time += time.process_time() - ts
        if train_time >= next_eval or train_time >= a.budget:
            next_eval += a.eval_every
            r1 = evaluate_retrieval(model, xte, ids_te, te_img)
            log(
                out,
                {
                    "stage": "contrastive",
                    "seconds": round(train_time, 1),
                    "wall": round(time.time() - t0, 1),
                    "step": step,
                    "loss": round(loss.item(), 4),
                    **r1,
                },
            )
    if out:
        torch.save(model.vision_model.state_dict(), out / "vit.pt")
        torch.save(model.state_dict(), out / "model.pt")


def _colour_free(captions) -> list[str]:
    import re

    from internvl.data.synthetic.scenes import COLOURS

    pattern = re.compile(r"\b(" + "|".join(COLOURS) + r") ")
    return [pattern.sub("", c) for c in captions]


@torch.no_grad()
def evaluate_retrieval(model, xte, ids_te, te_img) -> dict:
    model.eval()
    img = torch.cat([F.normalize(model.encode_image(xte[i : i + 256]), dim=-1) for i in range(0, len(xte), 256)])
    txt = torch.cat([F.normalize(model.encode_text(ids_te[i : i + 512]), dim=-1) for i in range(0, len(ids_te), 512)])
    model.train()
    sim = txt @ img.t()
    top = sim.topk(5, dim=1).indices
    r1 = (top[:, 0] == te_img).float().mean().item()
    r5 = (top == te_img[:, None]).any(1).float().mean().item()
    i2t = (img @ txt.t()).argmax(1)
    ir1 = (te_img[i2t] == torch.arange(len(img))).float().mean().item()
    return {"t2i_r1": round(r1, 4), "t2i_r5": round(r5, 4), "i2t_r1": round(ir1, 4)}


# -- chat --------------------------------------------------------------------------------------------
def render_sample(tok, conv_turns, n_img_tokens, system):
    """ids, labels for one multi-turn conversation in the Hermes-2 template (loss on answers + <|im_end|>)."""
    from internvl.data.conversation import IMG_CONTEXT_TOKEN, IMG_END_TOKEN, IMG_START_TOKEN

    image = IMG_START_TOKEN + IMG_CONTEXT_TOKEN * n_img_tokens + IMG_END_TOKEN
    ids, labels = [], []

    def add(text, train):
        t = tok(text, add_special_tokens=False)["input_ids"]
        ids.extend(t)
        labels.extend(t if train else [-100] * len(t))

    add(f"<|im_start|>system\n{system}<|im_end|>", False)
    for q, ans in conv_turns:
        q = q.replace("<image>", image)
        add(f"<|im_start|>user\n{q}<|im_end|><|im_start|>assistant\n", False)
        add(f"{ans}<|im_end|>", True)
    return ids, labels


def chat(a) -> None:
    from transformers import AutoTokenizer

    from internvl.data.datasets import read_flickr_captions
    from internvl.models.internvl_chat import build_internvl_chat, world_chat_config

    world = Path(a.world)
    tok = AutoTokenizer.from_pretrained(world / "tokenizer")
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    config = world_chat_config(len(tok), llm_width=a.llm_width, llm_layers=a.llm_layers, eos_token_id=im_end)
    _apply_llm_levers(config.llm_config, a)
    if a.image_size:  # the ViT on a finer grid (position embeddings interpolated), pixel-shuffled back to 3x3
        config.force_image_size, config.downsample_ratio = a.image_size, a.downsample
    size = config.force_image_size
    model = build_internvl_chat(config, seed=a.seed).train()
    if a.tie:
        model.language_model.tie_weights()
    model.img_context_token_id = tok.convert_tokens_to_ids("<IMG_CONTEXT>")
    if a.vit:
        state = torch.load(a.vit)
        if a.image_size:
            from internvl.models.intern_vit import PRESETS, InternViT

            vit = InternViT(PRESETS["intern_vit_world"])
            vit.load_state_dict(state)
            vit.resize_position_embeddings(a.image_size)
            state = vit.state_dict()
        model.vision_model.load_state_dict(state)
    if a.freeze_vit:
        model.vision_model.requires_grad_(False)
    nimg = model.num_image_token
    system = config.system_message if a.system is None else a.system

    # An image's question-answer turns, whether the file holds one record per question (the world now) or one
    # conversation per image (worlds written before): samples draw an image, then up to --turns of its turns.
    by_image: dict[str, list[tuple[str, str]]] = {}
    train_world = Path(a.train_world) if a.train_world else world
    records = [r for f in sorted((train_world / "sft").glob("world_sft_train*.jsonl")) for r in read_jsonl(f)]
    for r in sorted(records, key=lambda r: r["id"]):  # one file per question type (the world now) or one file
        c = r["conversations"]
        by_image.setdefault(r["image"], []).extend(
            (_without_image(c[i]["value"]), c[i + 1]["value"]) for i in range(0, len(c), 2)
        )
    kind_of = {r["question"]: r["type"] for r in read_jsonl(train_world / "qa/world_train.jsonl")}  # --type-weights
    names = list(by_image)[: a.train_images]
    samples = [by_image[n] for n in names]
    recs = {
        r.image_path.name: r
        for r in read_flickr_captions(train_world / "flickr/world_train_karpathy.txt", train_world / "images")
    }
    xtr = load_images([recs[n] for n in names], size)
    captions = [recs[n].captions for n in names]
    test_q = read_jsonl(world / "qa/world_test.jsonl")[: a.test_questions]
    te_recs = {
        r.image_path.name: r for r in read_flickr_captions(world / "flickr/world_test_karpathy.txt", world / "images")
    }
    te_names = sorted({q["image"] for q in test_q})
    xte = load_images([te_recs[n] for n in te_names], size)
    te_index = {n: i for i, n in enumerate(te_names)}
    oracle = OracleTokens(model, world, a.llm_width) if a.oracle else None
    if a.eval_train:  # the same questions' kind on training images: the generalisation gap
        tr_q = read_jsonl(world / "qa/world_train.jsonl")[: a.test_questions // 2]
        tr_names = sorted({q["image"] for q in tr_q})
        xtr_eval = load_images([recs[n] for n in tr_names], size)
        tr_index = {n: i for i, n in enumerate(tr_names)}
    params = [p for p in model.parameters() if p.requires_grad]
    vit_params = {id(p) for p in model.vision_model.parameters()}
    groups = [
        {"params": [p for p in params if id(p) not in vit_params], "lr": a.lr},
        {"params": [p for p in params if id(p) in vit_params], "lr": a.lr * a.vit_lr_mult},
    ]
    for gr in groups:
        gr["base_lr"] = gr["lr"]
    opt = torch.optim.AdamW([gr for gr in groups if gr["params"]], betas=(0.9, a.beta2), weight_decay=a.wd)
    out = Path(a.out) if a.out else None
    if out:
        out.mkdir(parents=True, exist_ok=True)
    log(
        out,
        {
            "stage": "chat",
            "params": sum(p.numel() for p in model.parameters()),
            "train_images": len(names),
            "test_questions": len(test_q),
            "args": vars(a),
        },
    )

    def scores(questions, pixels, index, names_of_split) -> dict:
        acc = evaluate_chat(model, tok, questions, pixels, index, oracle=oracle, split=names_of_split, system=system)
        if a.qfirst > 0:
            acc |= {
                f"qfirst_{k}": v
                for k, v in evaluate_chat(
                    model,
                    tok,
                    questions,
                    pixels,
                    index,
                    oracle=oracle,
                    split=names_of_split,
                    question_first=True,
                    system=system,
                ).items()
            }
        return acc

    rng = random.Random(a.seed)
    type_weights = (
        {k: float(v) for k, v in (kv.split("=") for kv in a.type_weights.split(","))} if a.type_weights else {}
    )
    t0, step, next_eval, train_time = time.time(), 0, a.eval_every, 0.0
    while True:
        ts = time.process_time()
        frac = train_time / a.budget
        if frac >= 1:
            break
        for gr in opt.param_groups:
            gr["lr"] = gr["base_lr"] * lr_at(frac, a.warmup)
        idx = rng.sample(range(len(samples)), a.batch)
        seqs = []
        for i in idx:
            turns = list(samples[i])
            rng.shuffle(turns)
            if type_weights:  # one question, drawn by type weight instead of uniformly
                turns = rng.choices(turns, weights=[type_weights.get(kind_of[q], 1.0) for q, _ in turns], k=1)
            turns = turns[: a.turns]
            if a.caption_turn:
                turns.insert(rng.randrange(len(turns) + 1), ("Describe the image.", captions[i][0]))
            if rng.random() < a.caption_prob:
                turns = [("Describe the image.", captions[i][0])]
            q0, a0 = turns[0]
            if rng.random() < a.textqa_prob:  # the question answerable from a caption given as text
                q0 = f"Caption: {captions[i][rng.randrange(len(captions[i]))]}.\n{q0}"
            turns[0] = (f"{q0}\n<image>" if rng.random() < a.qfirst else f"<image>\n{q0}", a0)
            seqs.append(render_sample(tok, turns, nimg, system))
        L = max(len(s[0]) for s in seqs)
        ids = torch.zeros(len(seqs), L, dtype=torch.long)
        lab = torch.full((len(seqs), L), -100, dtype=torch.long)
        att = torch.zeros(len(seqs), L, dtype=torch.long)
        for j, (s, lb) in enumerate(seqs):
            ids[j, : len(s)] = torch.tensor(s)
            lab[j, : len(s)] = torch.tensor(lb)
            att[j, : len(s)] = 1
        if oracle is not None:
            oracle.select([names[i] for i in idx])
        out_m = model(
            pixel_values=xtr[idx],
            input_ids=ids,
            attention_mask=att,
            labels=lab,
            image_flags=torch.ones(len(idx), dtype=torch.long),
        )
        loss = out_m.loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        step += 1
        train_time += time.process_time() - ts
        if train_time >= next_eval or train_time >= a.budget:
            next_eval += a.eval_every
            acc = scores(test_q, xte, te_index, te_names)
            if a.eval_train:
                acc |= {f"train_{k}": v for k, v in scores(tr_q, xtr_eval, tr_index, tr_names).items()}
            log(
                out,
                {
                    "stage": "chat",
                    "seconds": round(train_time, 1),
                    "wall": round(time.time() - t0, 1),
                    "step": step,
                    "loss": round(loss.item(), 4),
                    **acc,
                },
            )


def _without_image(text: str) -> str:
    return text.replace("<image>\n", "").replace("\n<image>", "")


def _apply_llm_levers(llm, a) -> None:
    """The LLM options the preset does not take (heads, key/value heads, FFN, RoPE theta, tied embeddings)."""
    if a.heads:
        llm.num_attention_heads = a.heads
    if a.kv_heads:
        llm.num_key_value_heads = a.kv_heads
    if a.ffn_mult:
        llm.intermediate_size = int(a.llm_width * a.ffn_mult)
    if a.rope_theta and getattr(llm, "rope_parameters", None) is not None:  # transformers >= 5
        llm.rope_parameters = {"rope_type": "default", "rope_theta": a.rope_theta}
    elif a.rope_theta:
        llm.rope_theta = a.rope_theta
    llm.tie_word_embeddings = a.tie


class OracleTokens:
    """``--oracle``: the model's visual tokens replaced by a learned linear map of a perfect one-hot per cell
    (empty, colour, shape, size, cell), so a run measures what the LLM alone can learn."""

    def __init__(self, model, world: Path, width: int) -> None:
        from internvl.data.synthetic.scenes import COLOURS, SHAPES
        from internvl.data.synthetic.world import build_world

        summary = json.loads((world / "world.json").read_text())
        items = build_world(summary["seed"], summary["sizes"], min_objects=summary["min_objects"])
        self.onehot: dict[str, torch.Tensor] = {}
        for item in (it for split in items.values() for it in split):
            x = torch.zeros(9, 26)
            x[:, 0] = 1
            x[torch.arange(9), 17 + torch.arange(9)] = 1
            for o in item.scene.objects:
                x[o.cell, 0] = 0
                x[o.cell, 1 + list(COLOURS).index(o.colour)] = 1
                x[o.cell, 9 + SHAPES.index(o.shape)] = 1
                x[o.cell, 13 + (o.size == "big")] = 1
            self.onehot[item.file_name] = x
        model.oracle = torch.nn.Linear(26, width)  # a submodule: trained with the rest
        model.extract_feature = lambda pixel_values: model.oracle(self.current)
        self.current: torch.Tensor | None = None

    def select(self, image_names: list[str]) -> None:
        self.current = torch.stack([self.onehot[n] for n in image_names])


@torch.no_grad()
def evaluate_chat(
    model, tok, test_q, xte, te_index, *, oracle=None, split=None, question_first: bool = False, system=None
) -> dict:
    from internvl.inference.chat import batch_chat

    model.eval()
    right: dict[str, list[int]] = {}
    for s in range(0, len(test_q), 128):
        chunk = test_q[s : s + 128]
        rows = [te_index[q["image"]] for q in chunk]
        if oracle is not None:
            oracle.select([split[k] for k in rows])
        answers = batch_chat(
            model,
            tok,
            xte[rows],
            [f"{q['question']}\n<image>" if question_first else q["question"] for q in chunk],
            {"max_new_tokens": 4, "do_sample": False},
            num_patches_list=[1] * len(chunk),
            system_message=system,
        )
        for q, ans in zip(chunk, answers, strict=True):
            right.setdefault(q["type"], []).append(int(ans.strip().lower() == q["answer"]))
    model.train()
    per = {k: round(sum(v) / len(v), 4) for k, v in sorted(right.items())}
    return {"acc_mean": round(sum(per.values()) / len(per), 4), **{f"acc_{k}": v for k, v in per.items()}}


# -- probe -------------------------------------------------------------------------------------------
def probe(a) -> None:
    """Linear probes on a ViT's patch tokens: does each cell's token hold its colour, shape, size and cell?"""
    from internvl.data.datasets import read_flickr_captions
    from internvl.data.synthetic.scenes import COLOURS, SHAPES
    from internvl.data.synthetic.world import build_world
    from internvl.models.intern_vit import PRESETS, InternViT

    world_dir = Path(a.world)
    summary = json.loads((world_dir / "world.json").read_text())
    world = build_world(summary["seed"], summary["sizes"], min_objects=summary["min_objects"])
    vit = InternViT(PRESETS["intern_vit_world"])
    vit.load_state_dict(torch.load(a.vit))
    vit.eval()

    def features(split, n):
        recs = read_flickr_captions(world_dir / f"flickr/world_{split}_karpathy.txt", world_dir / "images")[:n]
        with torch.no_grad():
            h = vit(load_images(recs, 48), output_hidden_states=True).hidden_states[a.select_layer][:, 1:]  # (N, 9, D)
        labels = {k: torch.zeros(len(recs), 9, dtype=torch.long) for k in ("colour", "shape", "size")}
        for i, item in enumerate(world[split][:n]):
            for o in item.scene.objects:  # 0 = empty cell
                labels["colour"][i, o.cell] = 1 + list(COLOURS).index(o.colour)
                labels["shape"][i, o.cell] = 1 + SHAPES.index(o.shape)
                labels["size"][i, o.cell] = 1 + (o.size == "big")
        return h, labels

    htr, ltr = features("train", 3000)
    hte, lte = features("test", 500)
    result = {}
    for k in ("colour", "shape", "size", "cell"):
        if k == "cell":  # occupied tokens only: does a token know where it is?
            mtr, mte = ltr["colour"] > 0, lte["colour"] > 0
            xtr, ytr, xte, yte = htr[mtr], mtr.nonzero()[:, 1], hte[mte], mte.nonzero()[:, 1]
        else:
            xtr, ytr = htr.reshape(-1, htr.shape[-1]), ltr[k].reshape(-1)
            xte, yte = hte.reshape(-1, hte.shape[-1]), lte[k].reshape(-1)
        mu, sd = xtr.mean(0), xtr.std(0) + 1e-6
        lin = torch.nn.Linear(xtr.shape[-1], int(ytr.max()) + 1)
        opt = torch.optim.Adam(lin.parameters(), 1e-2)
        for _ in range(300):
            opt.zero_grad()
            F.cross_entropy(lin((xtr - mu) / sd), ytr).backward()
            opt.step()
        with torch.no_grad():
            pred = lin((xte - mu) / sd).argmax(1)
        occupied = yte > 0 if k != "cell" else torch.ones_like(yte, dtype=torch.bool)
        result[k] = round((pred[occupied] == yte[occupied]).float().mean().item(), 4)
    log(None, {"stage": "probe", "vit": a.vit, "occupied_token_accuracy": result})


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("stage", choices=["contrastive", "chat", "probe"])
    p.add_argument("--world", required=True)
    p.add_argument("--out")
    p.add_argument("--budget", type=float, default=90)
    p.add_argument("--eval-every", type=float, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--wd", type=float, default=0.05)
    p.add_argument("--warmup", type=float, default=0.05)
    p.add_argument("--logit-init", type=float, default=10.0)
    p.add_argument("--train-images", type=int, default=None)
    p.add_argument("--aug-shift", action="store_true")
    p.add_argument("--pos-init-std", type=float, default=0.0)
    p.add_argument("--no-decay-pos", action="store_true")
    p.add_argument("--vit")
    p.add_argument("--freeze-vit", action="store_true")
    p.add_argument("--vit-lr-mult", type=float, default=0.1)
    p.add_argument("--llm-width", type=int, default=128)
    p.add_argument("--llm-layers", type=int, default=2)
    p.add_argument("--turns", type=int, default=6)
    p.add_argument("--caption-turn", action="store_true")
    p.add_argument("--caption-prob", type=float, default=0.0)
    p.add_argument("--eval-train", action="store_true", help="also score training-image questions")
    p.add_argument("--heads", type=int, default=0, help="LLM attention heads (0: the preset's)")
    p.add_argument("--kv-heads", type=int, default=0, help="LLM key/value heads (0: the preset's)")
    p.add_argument("--ffn-mult", type=float, default=0.0, help="LLM FFN width / width (0: the preset's)")
    p.add_argument("--rope-theta", type=float, default=0.0, help="LLM RoPE theta (0: the preset's)")
    p.add_argument("--tie", action="store_true", help="tie the LLM's input and output embeddings")
    p.add_argument("--qfirst", type=float, default=0.0, help="share of samples with the question before <image>")
    p.add_argument("--textqa-prob", type=float, default=0.0, help="share with a caption as text before the question")
    p.add_argument("--oracle", action="store_true", help="perfect per-cell one-hot visual tokens (see OracleTokens)")
    p.add_argument("--train-world", help="chat: train on this world's SFT split (tested on --world's)")
    p.add_argument("--system", help="chat: system message (default: the preset's)")
    p.add_argument("--select-layer", type=int, default=-1, help="probe/chat: the ViT hidden state used")
    p.add_argument("--shape-captions", type=float, default=0.0, help="contrastive: share of colour-free captions")
    p.add_argument("--image-size", type=int, default=0, help="chat: force_image_size (0: the preset's 48)")
    p.add_argument("--downsample", type=float, default=0.5, help="chat: downsample_ratio with --image-size")
    p.add_argument("--type-weights", default="", help="chat: e.g. shape=2,colour=2,count=0.5 (1 question per sample)")
    p.add_argument("--beta2", type=float, default=0.98)
    p.add_argument("--test-questions", type=int, default=1200)
    a = p.parse_args()
    {"contrastive": contrastive, "chat": chat, "probe": probe}[a.stage](a)


if __name__ == "__main__":
    main()
