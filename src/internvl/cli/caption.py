"""`internvl caption`: zero-shot captions for a folder of images with InternVL-G's QLLaMA."""

from __future__ import annotations

import json
from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command("caption")
    def caption(
        model_dir: Path = typer.Argument(..., help="InternVL-C/G checkpoint directory (config.json, weights, tokenizer)."),
        images_dir: Path = typer.Argument(..., help="Folder of images (every image file directly inside, sorted)."),
        output: Path = typer.Option(..., "--output", "-o", help='captions.json: [{"image": name, "caption": text}, ...].'),
        batch_size: int = typer.Option(8, "--batch-size", min=1, help="Images per generate call."),
        num_beams: int = typer.Option(5, "--num-beams", min=1, help="Beam width (reference: 5)."),
        min_new_tokens: int = typer.Option(8, "--min-new-tokens", min=0, help="Reference: 8."),
        max_new_tokens: int = typer.Option(30, "--max-new-tokens", min=1, help="Reference: 30."),
        prompt: str = typer.Option("English caption:", "--prompt", help="Text after the query tokens."),
        device: str | None = typer.Option(None, "--device", help="cuda, cuda:1, cpu (default: cuda if available)."),
        dtype: str | None = typer.Option(None, "--dtype", help="fp16, bf16, fp32 (default: fp16 on CUDA, else fp32)."),
    ) -> None:
        """Caption every image of a folder with the reference settings (beam 5, 8-30 new tokens)."""
        import torch
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        from internvl.cli._common import list_images
        from internvl.core.devices import pick_device, pick_dtype
        from internvl.data.transforms import build_transform, load_image
        from internvl.inference.captioning import generate_captions
        from internvl.inference.loading import load_pretrained

        files = list_images(images_dir)
        dev = pick_device(device)
        loaded = load_pretrained(model_dir, dtype=pick_dtype(dtype, dev), device=dev, model_types=("internvl",))
        model, tokenizer = loaded.model, loaded.tokenizer
        transform = build_transform("caption", model.image_size)
        records = []
        columns = (TextColumn("captioning"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
        with Progress(*columns, transient=True) as progress:
            task = progress.add_task("caption", total=len(files))
            for start in range(0, len(files), batch_size):
                chunk = files[start : start + batch_size]
                pixel_values = torch.stack([transform(load_image(p)) for p in chunk])
                texts = generate_captions(model, tokenizer, pixel_values, prompt=prompt, num_beams=num_beams,
                                          min_new_tokens=min_new_tokens, max_new_tokens=max_new_tokens)
                records += [{"image": p.name, "caption": t} for p, t in zip(chunk, texts, strict=True)]
                progress.advance(task, len(chunk))
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(records, indent=2, ensure_ascii=False))
        avg = sum(len(r["caption"].split()) for r in records) / max(len(records), 1)
        typer.echo(f"wrote {output}: {len(records)} captions, average length {avg:.4f} words")
