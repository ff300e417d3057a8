"""Chat-stage calibration on the built-in world, second round (README "Calibration", runs h0, e*, o*, r*).

A plain loop over OUR classes like `calibrate_world.py chat`, with more levers: the LLM's width, heads,
FFN and RoPE theta, tied embeddings, question-before-image samples (``--qfirst`` share), describe-the-image
and caption-as-text samples, and ``--oracle``: a linear map of a perfect per-cell one-hot (colour, shape,
size, cell) in place of ViT + MLP, which isolates what the LLM can learn. One thread; seconds = process
CPU time of training. Example (after `internvl data synth --out DIR` and a contrastive run):

    python scripts/calibrate_world_chat.py --world DIR --out runs/r2 --vit runs/c1/vit.pt --batch 16 \\
        --width 64 --heads 4 --kv-heads 4 --ffn-mult 4 --qfirst 0.5 --budget 120
"""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
import argparse
import json
import random
import sys
import time
from pathlib import Path

import torch

torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from calibrate_world import load_images, lr_at, read_jsonl, render_sample  # noqa: E402

p = argparse.ArgumentParser()
p.add_argument("--world", required=True)
p.add_argument("--out", required=True)
p.add_argument("--budget", type=float, default=120)
p.add_argument("--eval-every", type=float, default=30)
p.add_argument("--seed", type=int, default=0)
p.add_argument("--batch", type=int, default=64)
p.add_argument("--lr", type=float, default=1e-3)
p.add_argument("--wd", type=float, default=0.05)
p.add_argument("--warmup", type=float, default=0.05)
p.add_argument("--vit")
p.add_argument("--freeze-vit", action="store_true")
p.add_argument("--vit-lr-mult", type=float, default=1.0)
p.add_argument("--width", type=int, default=128)
p.add_argument("--layers", type=int, default=4)
p.add_argument("--heads", type=int, default=4)
p.add_argument("--kv-heads", type=int, default=2)
p.add_argument("--ffn-mult", type=float, default=2.5)
p.add_argument("--rope-theta", type=float, default=5e6)
p.add_argument("--tie", action="store_true")
p.add_argument("--turns", type=int, default=1)
p.add_argument("--qfirst", type=float, default=0.0)
p.add_argument("--describe-prob", type=float, default=0.0)
p.add_argument("--system", default=None)
p.add_argument("--test-questions", type=int, default=1200)
p.add_argument("--eval-qfirst", action="store_true")
p.add_argument("--threads", type=int, default=1)
p.add_argument("--oracle", action="store_true")
p.add_argument("--textqa-prob", type=float, default=0.0)
a = p.parse_args()

from transformers import AutoTokenizer  # noqa: E402

from internvl.data.datasets import read_flickr_captions  # noqa: E402
from internvl.inference.chat import batch_chat  # noqa: E402
from internvl.models.internvl_chat import build_internvl_chat, world_chat_config  # noqa: E402

world = Path(a.world)
tok = AutoTokenizer.from_pretrained(world / "tokenizer")
im_end = tok.convert_tokens_to_ids("<|im_end|>")
config = world_chat_config(len(tok), llm_width=a.width, llm_layers=a.layers, eos_token_id=im_end)
lc = config.llm_config


def setc(k, v):
    if isinstance(lc, dict):
        lc[k] = v
    else:
        setattr(lc, k, v)


setc("rope_theta", a.rope_theta)
setc("tie_word_embeddings", a.tie)
setc("num_attention_heads", a.heads)
setc("num_key_value_heads", a.kv_heads)
setc("intermediate_size", int(a.width * a.ffn_mult))
if getattr(lc, "rope_parameters", None) is not None:
    lc.rope_parameters = {"rope_type": "default", "rope_theta": a.rope_theta}
if a.system is not None:
    config.system_message = a.system
model = build_internvl_chat(config, seed=a.seed).train()
if a.tie:
    model.language_model.tie_weights()
print(
    "rope",
    model.language_model.config.rope_parameters
    if hasattr(model.language_model.config, "rope_parameters")
    else model.language_model.config.rope_theta,
    "tied",
    model.language_model.get_output_embeddings().weight is model.language_model.get_input_embeddings().weight,
    file=sys.stderr,
)
model.img_context_token_id = tok.convert_tokens_to_ids("<IMG_CONTEXT>")
if a.vit:
    model.vision_model.load_state_dict(torch.load(a.vit))
if a.freeze_vit:
    model.vision_model.requires_grad_(False)
nimg = model.num_image_token
system = config.system_message
train = read_jsonl(world / "sft/world_sft_train.jsonl")
recs = {r.image_path.name: r for r in read_flickr_captions(world / "flickr/world_train_karpathy.txt", world / "images")}
xtr = load_images([recs[r["image"]] for r in train], 48)
samples = [
    [(c[i]["value"].replace("<image>\n", "").replace("\n<image>", ""), c[i + 1]["value"]) for i in range(0, len(c), 2)]
    for c in (r["conversations"] for r in train)
]
captions = [recs[r["image"]].captions[0] for r in train]
test_q = read_jsonl(world / "qa/world_test.jsonl")[: a.test_questions]
te_recs = {
    r.image_path.name: r for r in read_flickr_captions(world / "flickr/world_test_karpathy.txt", world / "images")
}
te_names = sorted({q["image"] for q in test_q})
xte = load_images([te_recs[n] for n in te_names], 48)
te_index = {n: i for i, n in enumerate(te_names)}
CUR = {"x": None}
if a.oracle:
    from internvl.data.synthetic.scenes import COLOURS, SHAPES
    from internvl.data.synthetic.world import build_world

    wsum = json.loads((world / "world.json").read_text())
    W = build_world(wsum["seed"], wsum["sizes"], min_objects=wsum["min_objects"])

    def onehots(items):
        x = torch.zeros(len(items), 9, 26)
        for c in range(9):
            x[:, c, 17 + c] = 1
        for i, it in enumerate(items):
            for c in range(9):
                x[i, c, 0] = 1
            for o in it.scene.objects:
                x[i, o.cell, 0] = 0
                x[i, o.cell, 1 + list(COLOURS).index(o.colour)] = 1
                x[i, o.cell, 9 + SHAPES.index(o.shape)] = 1
                x[i, o.cell, 13 + (o.size == "big")] = 1
        return x

    by_name = {it.file_name: it for sp in W.values() for it in sp}
    oh_tr = onehots([by_name[r["image"]] for r in train])
    oh_te = onehots([by_name[n] for n in te_names])
    model.oracle = torch.nn.Linear(26, a.width)
    model.extract_feature = lambda pv: model.oracle(CUR["x"])
params = [p for p in model.parameters() if p.requires_grad]
vit_ids = {id(p) for p in model.vision_model.parameters()}
groups = [
    {"params": [p for p in params if id(p) not in vit_ids], "lr": a.lr},
    {"params": [p for p in params if id(p) in vit_ids], "lr": a.lr * a.vit_lr_mult},
]
groups = [g for g in groups if g["params"]]
for g in groups:
    g["base_lr"] = g["lr"]
opt = torch.optim.AdamW(groups, betas=(0.9, 0.98), weight_decay=a.wd)
out = Path(a.out)
out.mkdir(parents=True, exist_ok=True)


def log(rec):
    line = json.dumps(rec)
    print(line, flush=True)
    with open(out / "log.jsonl", "a") as f:
        f.write(line + "\n")


log({"params": sum(p.numel() for p in model.parameters()), "args": vars(a)})


@torch.no_grad()
def evaluate(qfirst):
    model.eval()
    right = {}
    for s in range(0, len(test_q), 200):
        chunk = test_q[s : s + 200]
        ii = [te_index[q["image"]] for q in chunk]
        pix = xte[ii]
        if a.oracle:
            CUR["x"] = oh_te[ii]
        qs = [(q["question"] + "\n<image>") if qfirst else q["question"] for q in chunk]
        ans = batch_chat(
            model, tok, pix, qs, {"max_new_tokens": 4, "do_sample": False}, num_patches_list=[1] * len(chunk)
        )
        for q, x in zip(chunk, ans, strict=False):
            right.setdefault(q["type"], []).append(int(x.strip().lower() == q["answer"]))
    model.train()
    per = {k: round(sum(v) / len(v), 3) for k, v in sorted(right.items())}
    return {"mean": round(sum(per.values()) / len(per), 3), **per}


rng = random.Random(a.seed)
step, next_eval, tt = 0, a.eval_every, 0.0
while tt < a.budget:
    ts = time.process_time()
    for g in opt.param_groups:
        g["lr"] = g["base_lr"] * lr_at(tt / a.budget, a.warmup)
    idx = rng.sample(range(len(train)), a.batch)
    seqs = []
    for i in idx:
        turns = list(samples[i])
        rng.shuffle(turns)
        turns = turns[: a.turns]
        if rng.random() < a.describe_prob:
            turns = [("Describe the image.", captions[i])]
        q0, a0 = turns[0]
        if rng.random() < a.textqa_prob:
            q0 = "Caption: " + recs[train[i]["image"]].captions[rng.randrange(3)] + ".\n" + q0
        q0 = (q0 + "\n<image>") if rng.random() < a.qfirst else ("<image>\n" + q0)
        turns[0] = (q0, a0)
        seqs.append(render_sample(tok, turns, nimg, system))
    L = max(len(s[0]) for s in seqs)
    ids = torch.zeros(len(seqs), L, dtype=torch.long)
    lab = torch.full((len(seqs), L), -100, dtype=torch.long)
    att = torch.zeros(len(seqs), L, dtype=torch.long)
    for j, (s, lb) in enumerate(seqs):
        ids[j, : len(s)] = torch.tensor(s)
        lab[j, : len(s)] = torch.tensor(lb)
        att[j, : len(s)] = 1
    if a.oracle:
        CUR["x"] = oh_tr[idx]
    loss = model(
        pixel_values=xtr[idx],
        input_ids=ids,
        attention_mask=att,
        labels=lab,
        image_flags=torch.ones(len(idx), dtype=torch.long),
    ).loss
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()
    step += 1
    tt += (time.process_time() - ts) / a.threads
    if tt >= next_eval or tt >= a.budget:
        next_eval += a.eval_every
        rec = {"s": round(tt), "step": step, "loss": round(loss.item(), 3), "acc": evaluate(False)}
        if a.qfirst > 0 or a.eval_qfirst:
            rec["acc_qfirst"] = evaluate(True)
        log(rec)
torch.save(model.state_dict(), out / "model.pt")
