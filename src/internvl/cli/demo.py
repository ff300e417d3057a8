"""`internvl demo`: train the whole pipeline on the built-in world on a laptop CPU, and show it learning.

Every stage goes through the public entry points a GPU user runs, with shipped recipe files:
``internvl data synth`` (world files in the real formats), ``internvl train retrieval world_contrastive``
(InternVL-C from scratch), ``internvl eval retrieval`` (held-out recall@k), ``internvl train sft
world_chat`` (the trained InternViT + a new MLP projector + a new small LLaMA), ``internvl eval bench``
(MME yes/no files of the world) and per-question-type accuracy beside majority-answer chance. The budget is
split between the two training stages (``schedule.max_seconds``); the rest is generation and evaluation.
"""

from __future__ import annotations

import os

# OpenMP busy-waiting makes each step several times slower on a loaded 2-core machine (issue 12); this
# must be set before torch starts its thread pool, i.e. before the demo imports torch.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import json
import shutil
import time
from collections import Counter
from pathlib import Path

import typer

STAGE1_SHARE, STAGE2_SHARE = 0.32, 0.55  # of --budget; the rest: world, evaluation, plots, loading


def register(app: typer.Typer) -> None:
    @app.command("demo")
    def demo(
        output: Path = typer.Option(Path("demo_output"), "--output", "-o", help="Directory for the demo's files."),
        budget: float = typer.Option(
            360.0, "--budget", min=20.0, help="Seconds for the whole run (about 32 % stage 1, 55 % stage 2)."
        ),
        seed: int = typer.Option(0, help="Seed of the world and of both training runs."),
        train_images: int = typer.Option(5000, "--train-images", min=64, help="Training scenes in the world."),
        test_images: int = typer.Option(500, "--test-images", min=20, help="Held-out scenes (retrieval and chat)."),
        eval_questions: int = typer.Option(1200, "--eval-questions", min=6, help="Held-out chat questions scored."),
        mme_limit: int = typer.Option(200, "--mme-limit", min=1, help="MME questions per task (internvl eval bench)."),
        stage1_steps: int | None = typer.Option(
            None, "--stage1-steps", min=1, help="Bound stage 1 by steps instead of the time budget (reproducible work)."
        ),
        stage2_steps: int | None = typer.Option(
            None, "--stage2-steps", min=1, help="Bound stage 2 by steps instead of the time budget."
        ),
    ) -> None:
        """Train InternVL-C and InternVL-Chat from scratch on the built-in world; evaluate; plot (no downloads)."""
        run_demo(
            output,
            budget,
            seed,
            train_images,
            test_images,
            eval_questions,
            mme_limit,
            stage1_steps=stage1_steps,
            stage2_steps=stage2_steps,
        )


def run_demo(
    output: Path,
    budget: float,
    seed: int = 0,
    train_images: int = 5000,
    test_images: int = 500,
    eval_questions: int = 1200,
    mme_limit: int = 200,
    *,
    stage1_steps: int | None = None,
    stage2_steps: int | None = None,
) -> dict:
    from rich.console import Console

    from internvl.cli.main import main

    console = Console()
    t0 = time.monotonic()
    if output.exists() and any(output.iterdir()):
        # A fresh run each time (the training commands refuse to overwrite checkpoints), but only a folder
        # an earlier demo wrote is ever removed: never a user's folder given by mistake.
        if not (output / "world" / "world.json").is_file() or not output.is_dir():
            from internvl.core.errors import ConfigError

            raise ConfigError(f"--output {output}: exists and is not an earlier demo's output; choose another folder")
        shutil.rmtree(output)
    output.mkdir(parents=True, exist_ok=True)
    world, c_dir, chat_dir = output / "world", output / "internvl_c", output / "internvl_chat"
    results: dict = {"budget_s": budget, "seed": seed, "stages": {}}

    def call(argv: list[str]) -> None:
        from rich.markup import escape

        console.print(f"[dim]$ internvl {escape(' '.join(argv))}[/dim]")
        code = main(argv)
        if code != 0:
            raise typer.Exit(code)

    def done(name: str, t: float) -> None:
        results["stages"][name] = {"seconds": round(time.monotonic() - t, 1)}
        console.print(f"[green]{name}[/green]: {time.monotonic() - t:.0f} s (total {time.monotonic() - t0:.0f} s)")

    console.rule("[bold]1/4 the built-in world")
    t = time.monotonic()
    call(
        [
            "data",
            "synth",
            "--out",
            str(world),
            "--seed",
            str(seed),
            "--train",
            str(train_images),
            "--val",
            "100",
            "--test",
            str(test_images),
        ]
    )
    done("world", t)

    console.rule("[bold]2/4 stage 1: InternVL-C, contrastive from scratch")
    t = time.monotonic()
    init = _init_contrastive(world, output / "init" / "internvl_c", seed)
    s1 = round(budget * STAGE1_SHARE, 1)
    call(
        [
            "train",
            "retrieval",
            "world_contrastive",
            "--set",
            f"model.path={init}",
            "--set",
            f"data.registry=[{world / 'registry.yaml'}]",
            "--set",
            f"log.output_dir={c_dir}",
            *_bound(s1, stage1_steps),
            "--set",
            f"seed={seed}",
            "--set",
            f"data.val_limit={test_images}",
        ]
    )
    final_c = c_dir / "final"
    call(
        [
            "eval",
            "retrieval",
            "--model",
            str(final_c),
            "--dataset",
            "world_flickr_format_test",
            "--registry",
            str(world / "registry.yaml"),
            "--output",
            str(output / "retrieval.json"),
            "--no-amp",
        ]
    )
    results["retrieval"] = _retrieval_results(output / "retrieval.json", world)
    done("stage 1", t)

    console.rule("[bold]3/4 stage 2: InternVL-Chat = trained InternViT + new MLP projector + new LLaMA")
    t = time.monotonic()
    vit_dir, llm_dir = _stage2_parts(final_c, world, output / "init", seed)
    s2 = round(max(10.0, min(budget * STAGE2_SHARE, budget - (time.monotonic() - t0) - 0.12 * budget)), 1)
    call(
        [
            "train",
            "sft",
            "world_chat",
            "--set",
            f"model.vision_path={vit_dir}",
            "--set",
            f"model.llm_path={llm_dir}",
            "--set",
            f"data.meta_path={world / 'sft' / 'world_sft_train.json'}",
            "--set",
            f"log.output_dir={chat_dir}",
            *_bound(s2, stage2_steps),
            "--set",
            f"seed={seed}",
        ]
    )
    final_chat = chat_dir / "final"
    results["chat"] = _chat_accuracy(final_chat, world, eval_questions)
    call(
        [
            "eval",
            "bench",
            "--model",
            str(final_chat),
            "--benchmark",
            "mme",
            "--data",
            str(world / "bench"),
            "--output",
            str(output / "bench"),
            "--limit",
            str(mme_limit),
            "--batch-size",
            "50",
            "--no-progress",
        ]
    )
    results["mme"] = _mme_results(output / "bench")
    done("stage 2", t)

    console.rule("[bold]4/4 results and plots")
    results["training"] = {"stage1": _curves(c_dir), "stage2": _curves(chat_dir)}
    results["checkpoints"] = {"internvl_c": str(final_c), "internvl_chat": str(final_chat)}
    results["plots"] = _plots(output, results, final_c, final_chat, world)
    results["total_seconds"] = round(time.monotonic() - t0, 1)
    (output / "results.json").write_text(json.dumps(results, indent=2))
    _print_table(console, results)
    console.print(
        f"\n[green]done in {results['total_seconds']:.0f} s[/green]: {output / 'results.json'}, plots "
        + ", ".join(results["plots"])
        + "\nnext:\n"
        f"  internvl embed {final_c} --text 'a big red circle at the top left' --output text.npy\n"
        f"  internvl chat {final_chat} --image {_first_test_image(world)} $'How many objects are there?\\n<image>'\n"
        f"  internvl serve {final_chat} --port 8000\n"
        f"  internvl eval retrieval --model {final_c} --dataset world_coco_format_test "
        f"--registry {world / 'registry.yaml'} --output coco_world.json"
    )
    return results


# -- building the starting points (fresh weights, in the standard checkpoint layout) --------------------
def _init_contrastive(world: Path, path: Path, seed: int) -> Path:
    """A freshly initialised ``internvl_cg_world`` checkpoint with the world tokenizer: stage 1 starts here."""
    from internvl.data.tokenization import InternVLTextTokenizer
    from internvl.models.internvl_cg import build_internvl, internvl_cg_world

    vocab = InternVLTextTokenizer.from_pretrained(world / "tokenizer").vocab_size
    build_internvl(internvl_cg_world(vocab), seed=seed).save_pretrained(path)
    _copy_tokenizer(world / "tokenizer", path)
    return path


def _stage2_parts(final_c: Path, world: Path, init: Path, seed: int) -> tuple[Path, Path]:
    """The stage-1 InternViT as its own checkpoint, and a new small LLaMA (world tokenizer) for assembly."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from internvl.models.internvl_cg import InternVLModel
    from internvl.models.internvl_chat import world_chat_config

    vit_dir, llm_dir = init / "intern_vit", init / "llama"
    InternVLModel.from_pretrained(final_c).vision_model.save_pretrained(vit_dir)
    tok = AutoTokenizer.from_pretrained(world / "tokenizer")
    cfg = world_chat_config(len(tok), eos_token_id=tok.convert_tokens_to_ids("<|im_end|>"))
    llm_cfg = cfg.llm_config if isinstance(cfg.llm_config, LlamaConfig) else LlamaConfig(**cfg.llm_config)
    torch.manual_seed(seed)
    LlamaForCausalLM(llm_cfg).save_pretrained(llm_dir)
    _copy_tokenizer(world / "tokenizer", llm_dir)
    return vit_dir, llm_dir


def _copy_tokenizer(src: Path, dst: Path) -> None:
    dst.mkdir(parents=True, exist_ok=True)
    for f in src.iterdir():
        if f.is_file():
            shutil.copy2(f, dst / f.name)


# -- evaluation -------------------------------------------------------------------------------------------
def _retrieval_results(path: Path, world: Path) -> dict:
    from internvl.data.datasets import read_flickr_captions

    metrics = json.loads(path.read_text())["metrics"]
    test = read_flickr_captions(world / "flickr" / "world_test_karpathy.txt", world / "images")
    return {
        **metrics,
        "images": len(test),
        "captions": sum(len(r.captions) for r in test),
        "chance_r1": round(1 / len(test), 4),
    }


def _test_questions(world: Path, limit: int) -> list[dict]:
    lines = (world / "qa" / "world_test.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines[:limit]]


def _norm(s: str) -> str:
    return s.strip().strip(".").strip().lower()


def _chat_answers(final_chat: Path, world: Path, rows: list[dict], batch: int = 100) -> tuple[list[str], list[str]]:
    """Greedy answers of the trained chat model (`load_pretrained` + `batch_chat`, as `internvl chat`), one
    model load and one image decode for two prompt layouts: each row's ``prompt`` (the user turn as the
    world's SFT file writes it, ``<image>`` placed), and the bare question, which `batch_chat` prefixes with
    the image (the model card's layout)."""
    from PIL import Image

    from internvl.inference import chat as api
    from internvl.inference.loading import load_pretrained

    loaded = load_pretrained(final_chat)
    model, tok = loaded.model, loaded.tokenizer
    as_trained: list[str] = []
    image_first: list[str] = []
    gen = {"max_new_tokens": 6, "do_sample": False}
    for i in range(0, len(rows), batch):
        chunk = rows[i : i + batch]
        images = [Image.open(world / "images" / r["image"]).convert("RGB") for r in chunk]
        pixels, patches = api.load_images(model, images)
        prompts = [r.get("prompt", r["question"]) for r in chunk]
        as_trained += model.batch_chat(tok, pixels, prompts, gen, num_patches_list=patches)
        questions = [r["question"] for r in chunk]
        image_first += model.batch_chat(tok, pixels, questions, gen, num_patches_list=patches)
    return as_trained, image_first


def _chat_accuracy(final_chat: Path, world: Path, limit: int) -> dict:
    """Exact-match accuracy per question type on held-out images, beside the majority answer's share; the
    world's prompt layout (what SFT trained) is the headline, the model card's image-first one is shown too."""
    rows = _test_questions(world, limit)
    answers, image_first = _chat_answers(final_chat, world, rows)
    per: dict[str, dict] = {}
    for r, a, a_first in zip(rows, answers, image_first, strict=True):
        d = per.setdefault(r["type"], {"n": 0, "correct": 0, "correct_image_first": 0, "answers": Counter()})
        d["n"] += 1
        d["correct"] += _norm(a) == _norm(r["answer"])
        d["correct_image_first"] += _norm(a_first) == _norm(r["answer"])
        d["answers"][_norm(r["answer"])] += 1
    types = {
        t: {
            "accuracy": round(d["correct"] / d["n"], 4),
            "accuracy_image_first": round(d["correct_image_first"] / d["n"], 4),
            "chance": round(d["answers"].most_common(1)[0][1] / d["n"], 4),
            "majority_answer": d["answers"].most_common(1)[0][0],
            "questions": d["n"],
        }
        for t, d in sorted(per.items())
    }
    mean = sum(v["accuracy"] for v in types.values()) / len(types)
    mean_first = sum(v["accuracy_image_first"] for v in types.values()) / len(types)
    chance = sum(v["chance"] for v in types.values()) / len(types)
    examples = [
        {"image": r["image"], "type": r["type"], "question": r["question"], "answer": r["answer"], "predicted": a}
        for r, a in zip(rows[:60], answers[:60], strict=True)
    ]
    return {
        "mean_accuracy": round(mean, 4),
        "mean_accuracy_image_first": round(mean_first, 4),
        "prompt_layout": _layout(rows),
        "mean_chance": round(chance, 4),
        "per_type": types,
        "questions": len(rows),
        "examples": examples,
    }


def _layout(rows: list[dict]) -> str:
    """How the world's prompts place the image: question-first, image-first or mixed."""
    first = sum(r.get("prompt", "").endswith("<image>") for r in rows)
    return "question, then image" if first == len(rows) else "image, then question" if first == 0 else "mixed"


def _mme_results(bench_dir: Path) -> dict:
    files = sorted(bench_dir.rglob("*.json"))
    for f in files:
        data = json.loads(f.read_text())
        if isinstance(data, dict) and ("mme" in f.name.lower() or "scores" in data):
            return {"file": str(f), **data}
    return {"files": [str(f) for f in files]}


def _curves(run_dir: Path) -> dict:
    from internvl.training.engine import read_metrics

    rows = read_metrics(run_dir)
    loss = [(r["step"], r["loss"]) for r in rows if "loss" in r and "step" in r]
    val = [(r["step"], r["val/image_retrieval_recall@1"]) for r in rows if "val/image_retrieval_recall@1" in r]
    return {"loss": loss, "val_t2i_r1": val}


# -- plots ------------------------------------------------------------------------------------------------
def _plots(output: Path, results: dict, final_c: Path, final_chat: Path, world: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    s1, s2 = results["training"]["stage1"], results["training"]["stage2"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, curve, title in (
        (axes[0], s1["loss"], "Stage 1: InternVL-C contrastive loss"),
        (axes[1], s2["loss"], "Stage 2: InternVL-Chat SFT loss (answer tokens)"),
    ):
        if curve:
            ax.plot(*zip(*curve, strict=True), color="tab:blue")
        ax.set(title=title, xlabel="optimizer step", ylabel="training loss")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    paths.append(_save(fig, output / "loss_curves.png"))

    fig, ax = plt.subplots(figsize=(6, 3.8))
    chance = results["retrieval"]["chance_r1"]
    if s1["val_t2i_r1"]:
        ax.plot(*zip(*s1["val_t2i_r1"], strict=True), marker="o", label="held-out text→image R@1")
    ax.axhline(chance, color="gray", ls="--", label=f"chance ({chance:.3f})")
    ax.set(
        title=f"Stage 1: retrieval on {results['retrieval']['images']} held-out images",
        xlabel="optimizer step",
        ylabel="recall@1",
        ylim=(0, 1.02),
    )
    ax.legend(loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    paths.append(_save(fig, output / "recall_over_training.png"))

    paths.append(_grid(output, results, final_c, world, plt))
    return paths


def _save(fig, path: Path) -> str:
    fig.savefig(path, dpi=100)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return str(path)


def _grid(output: Path, results: dict, final_c: Path, world: Path, plt) -> str:
    """Held-out images with their top-1 retrieved caption (of all test captions) and chat answers, marked."""
    import textwrap

    import torch
    from PIL import Image

    from internvl.data.datasets import read_flickr_captions
    from internvl.data.transforms import build_transform
    from internvl.inference.embedding import embed_images, embed_texts
    from internvl.inference.loading import load_pretrained

    test = read_flickr_captions(world / "flickr" / "world_test_karpathy.txt", world / "images")
    loaded = load_pretrained(final_c)
    model, tok = loaded.model, loaded.tokenizer
    captions = [c for r in test for c in r.captions]
    owner = [i for i, r in enumerate(test) for _ in r.captions]
    with torch.no_grad():
        shown = test[:6]
        img = embed_images(
            model,
            [Image.open(r.image_path).convert("RGB") for r in shown],
            build_transform("retrieval", model.image_size),
        )
        txt = embed_texts(model, tok, captions)
    best = (img @ txt.T).argmax(dim=1).tolist()
    by_image: dict[str, list[dict]] = {}
    for e in results["chat"]["examples"]:
        by_image.setdefault(e["image"], []).append(e)
    fig, axes = plt.subplots(2, 3, figsize=(13, 8.6))
    for k, (ax, rec) in enumerate(zip(axes.flat, shown, strict=True)):
        ax.imshow(Image.open(rec.image_path).convert("RGB"), interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        ok = owner[best[k]] == k
        lines = [textwrap.fill(("✔ " if ok else "✘ ") + "top caption: " + captions[best[k]], 62)]
        for e in by_image.get(rec.image_path.name, [])[:3]:
            right = _norm(e["predicted"]) == _norm(e["answer"])
            line = f"{'✔' if right else '✘'} {e['question']} → {e['predicted'].strip()!r}"
            lines.append(textwrap.fill(line + ("" if right else f" (truth {e['answer']!r})"), 62))
        ax.set_title(rec.image_path.name, fontsize=9)
        ax.text(0.0, -0.03, "\n".join(lines), transform=ax.transAxes, va="top", fontsize=7.5)
    fig.suptitle("Held-out images: top retrieved caption (stage 1) and chat answers (stage 2); ✔ right, ✘ wrong")
    fig.subplots_adjust(left=0.02, right=0.98, top=0.93, bottom=0.2, wspace=0.25, hspace=0.8)
    return _save(fig, output / "heldout_grid.png")


def _first_test_image(world: Path) -> Path:
    return world / "images" / json.loads((world / "qa" / "world_test.jsonl").read_text().splitlines()[0])["image"]


def _print_table(console, results: dict) -> None:
    from rich.table import Table

    table = Table(title="internvl demo: held-out results beside chance")
    for col in ("stage", "metric", "measured", "chance"):
        table.add_column(col)
    r = results["retrieval"]
    for key, label in (
        ("image_retrieval_recall@1", "text→image R@1"),
        ("image_retrieval_recall@5", "text→image R@5"),
        ("text_retrieval_recall@1", "image→text R@1"),
    ):
        if key in r:
            chance = min(1.0, r["chance_r1"] * (5 if key.endswith("@5") else 1))
            table.add_row(
                "1 InternVL-C",
                f"{label} ({r['images']} images, {r['captions']} captions)",
                f"{r[key]:.3f}",
                f"{chance:.3f}",
            )
    c = results["chat"]
    for t, v in c["per_type"].items():
        table.add_row(
            "2 InternVL-Chat",
            f"{t} ({v['questions']} questions)",
            f"{v['accuracy']:.3f}",
            f"{v['chance']:.3f} ('{v['majority_answer']}')",
        )
    table.add_row(
        "2 InternVL-Chat",
        f"mean over types ({c['prompt_layout']}, as trained)",
        f"[bold]{c['mean_accuracy']:.3f}[/bold]",
        f"{c['mean_chance']:.3f}",
    )
    table.add_row(
        "2 InternVL-Chat", "mean over types (image, then question)", f"{c['mean_accuracy_image_first']:.3f}", ""
    )
    console.print(table)


def _bound(seconds: float, steps: int | None) -> list[str]:
    """Recipe overrides ending a stage: on the clock (the default) or after a number of steps."""
    if steps is None:
        return ["--set", f"schedule.max_seconds={seconds}"]
    return ["--set", f"schedule.max_steps={steps}"]
