"""`internvl demo`: run every component end to end on small, randomly initialised models.

Nothing is downloaded: the models are built in-process from tiny configs and the inputs come from the
built-in synthetic world. The outputs are therefore meaningless (the models are UNTRAINED); the demo
shows that each stage runs and what it produces, and leaves its files in the output directory.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command("demo")
    def demo(
        output: Path = typer.Option(Path("demo_output"), "--output", "-o", help="Directory for the demo's files."),
        seed: int = typer.Option(0, help="Seed for the random models and synthetic images."),
    ) -> None:
        """Build tiny untrained models and run every stage on synthetic images (no downloads)."""
        from rich.console import Console

        console = Console()
        console.rule("[bold]internvl demo")
        console.print(
            "[yellow]The models below are tiny and randomly initialised (UNTRAINED): their outputs are "
            "meaningless. The demo shows that every stage runs end to end on this machine.[/yellow]"
        )
        output.mkdir(parents=True, exist_ok=True)
        report: dict = {}
        for title, step in STEPS:
            console.rule(title)
            report[title] = step(output, seed, console)
        (output / "demo_report.json").write_text(json.dumps(report, indent=2))
        console.print(f"\n[green]done[/green]: files in {output}/, summary in {output / 'demo_report.json'}")


def _vision_step(output: Path, seed: int, console) -> dict:
    import torch

    from internvl.data.synthetic import synthetic_image
    from internvl.data.transforms import build_transform
    from internvl.inference.loading import load_pretrained
    from internvl.models.checkpoint_info import describe_checkpoint
    from internvl.models.registry import create_model

    model = create_model("intern_vit_tiny", seed=seed)
    model_dir = output / "intern_vit_tiny"
    model.save_pretrained(model_dir)
    reloaded = load_pretrained(model_dir).model
    info = describe_checkpoint(model_dir)
    console.print(f"saved and reloaded {model_dir}: {info['parameters']:,} parameters, image size {info['image_size']}")
    transform = build_transform("retrieval", reloaded.config.image_size)
    pixels = torch.stack([transform(synthetic_image(seed + i)) for i in range(4)])
    with torch.no_grad():
        out = reloaded(pixels, output_hidden_states=True)
    console.print(
        f"InternViT forward on 4 synthetic images: last_hidden_state {tuple(out.last_hidden_state.shape)}, "
        f"{len(out.hidden_states)} hidden states, pooler norm {out.pooler_output.norm(dim=-1).mean():.3f}"
    )
    reloaded.resize_position_embeddings(reloaded.config.image_size * 2)
    with torch.no_grad():
        big = reloaded(torch.stack([build_transform("retrieval", reloaded.config.image_size)(synthetic_image(seed))]))
    console.print(f"after resizing position embeddings to {reloaded.config.image_size}px: {tuple(big.last_hidden_state.shape)}")
    return {"checkpoint": str(model_dir), "parameters": info["parameters"],
            "last_hidden_state": list(out.last_hidden_state.shape)}


def _cg_step(output: Path, seed: int, console) -> dict:
    import torch

    from internvl.data.synthetic import build_tokenizer, synthetic_image
    from internvl.data.tokenization import InternVLTextTokenizer
    from internvl.data.transforms import build_transform
    from internvl.inference.captioning import generate_captions
    from internvl.inference.embedding import classify, embed_images, embed_texts, zero_shot_classifier
    from internvl.inference.loading import load_pretrained
    from internvl.models.registry import create_model

    model_dir = output / "internvl_cg_tiny"
    build_tokenizer(model_dir)
    vocab = len(InternVLTextTokenizer.from_pretrained(model_dir).tokenizer)
    create_model("internvl_cg_tiny", seed=seed, vocab_size=vocab).save_pretrained(model_dir)
    loaded = load_pretrained(model_dir)
    model, tok = loaded.model, loaded.tokenizer
    images = [synthetic_image(seed + i) for i in range(3)]
    texts = ["a red square", "two cats sit on a red sofa", "一只狗在草地上奔跑"]
    img = embed_images(model, images, build_transform("retrieval", model.image_size), mode="InternVL-G")
    txt = embed_texts(model, tok, texts)
    sims = (img @ txt.T).tolist()
    console.print(f"InternVL-G image embeddings {tuple(img.shape)}, text embeddings {tuple(txt.shape)}")
    console.print("cosine similarity (images x texts): " + "; ".join(", ".join(f"{v:+.2f}" for v in row) for row in sims))
    classes = ["dog", "cat", "square"]
    clf = zero_shot_classifier(model, tok, classes, ["a photo of a {}."])
    top = classify(embed_images(model, images, build_transform("classification", model.image_size)), clf, top_k=1)
    predictions = [classes[i] for i in top.indices[:, 0].tolist()]
    console.print(f"zero-shot classification over {classes}: {predictions}")
    pixels = torch.stack([build_transform("caption", model.image_size)(im) for im in images])
    captions = generate_captions(model, tok, pixels, num_beams=2, min_new_tokens=4, max_new_tokens=6)
    console.print(f"captions (beam search, untrained so gibberish): {captions}")
    return {"checkpoint": str(model_dir), "similarity": sims, "classification": predictions, "captions": captions}


def _chat_step(output: Path, seed: int, console) -> dict:
    from transformers import AutoTokenizer

    from internvl.data.synthetic import CHAT_SPECIAL_TOKENS, build_tokenizer, synthetic_image
    from internvl.inference import chat as api
    from internvl.inference.loading import load_pretrained
    from internvl.models.registry import create_model

    model_dir = output / "internvl_chat_tiny"
    build_tokenizer(model_dir, special_tokens=CHAT_SPECIAL_TOKENS, chat_template_tokens=["<|im_start|>", "<|im_end|>"],
                    add_bos_token=False)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    tiny = create_model("internvl_chat_tiny", seed=seed, vocab_size=len(tokenizer),
                        eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"))
    api.save_chat_model(tiny, tokenizer, model_dir)
    loaded = load_pretrained(model_dir)
    model, tokenizer = loaded.model, loaded.tokenizer
    gen = {"max_new_tokens": 8, "do_sample": False}
    pixels, patches = api.load_images(model, [synthetic_image(seed + i) for i in range(2)])
    text = model.chat(tokenizer, None, "hello, who are you?", gen)
    one, history = model.chat(tokenizer, pixels[:1], "what is in the image?", gen, return_history=True)
    follow_up = model.chat(tokenizer, pixels[:1], "and the colours?", gen, history=history)
    both = model.chat(tokenizer, pixels, "Image-1: <image>\nImage-2: <image>\ncompare them", gen, num_patches_list=patches)
    batch = model.batch_chat(tokenizer, pixels, ["describe image 1", "describe image 2"], gen, num_patches_list=patches)
    streamed = list(model.stream_chat(tokenizer, pixels[:1], "what is in the image?", gen))
    rows = {"pure text": text, "one image": one, "second round": follow_up, "two images": both,
            "batch": batch, "streamed pieces": streamed}
    for name, answer in rows.items():
        console.print(f"{name:>16}: {answer!r}")
    console.print("(answers are arbitrary tokens: the model is untrained)")
    return {"checkpoint": str(model_dir), **rows}


STEPS = [
    ("InternViT (vision encoder)", _vision_step),
    ("InternVL-C / InternVL-G (QLLaMA)", _cg_step),
    ("InternVL-Chat-V1-2 layout (chat modes)", _chat_step),
]
