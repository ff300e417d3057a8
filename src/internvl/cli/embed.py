"""`internvl embed`: image and/or text embeddings of an InternVL-C/G checkpoint, written to .npy or .safetensors."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from internvl.cli._common import IMAGE_SUFFIXES, list_images, parse_dtype, parse_mode, parse_output, progress_bar  # noqa: F401 (re-exported)


def register(app: typer.Typer) -> None:
    @app.command("embed")
    def embed(
        model_dir: Path = typer.Argument(
            ..., help="InternVL-C/G checkpoint directory (config.json, weights, tokenizer)."
        ),
        image: list[Path] | None = typer.Option(None, "--image", "-i", help="Image file to embed (repeatable)."),
        images_dir: Path | None = typer.Option(
            None, "--images-dir", help="Embed every image file in this folder (sorted)."
        ),
        text: list[str] | None = typer.Option(None, "--text", "-t", help="Text to embed (repeatable)."),
        output: str = typer.Option(
            ...,
            "--output",
            "-o",
            help="out.npy (images OR texts) or out.safetensors (image_embeds and/or text_embeds).",
        ),
        mode: str = typer.Option(
            "InternVL-C",
            "--mode",
            callback=parse_mode,
            help="Image embedding: InternVL-C or InternVL-G (any case, or C / G).",
        ),
        batch_size: int = typer.Option(32, "--batch-size", min=1, help="Items per forward pass."),
        normalize: bool = typer.Option(True, "--normalize/--no-normalize", help="L2-normalise the embeddings."),
        device: str | None = typer.Option(None, "--device", help="cuda, cuda:1, cpu (default: cuda if available)."),
        dtype: str | None = typer.Option(
            None, "--dtype", callback=parse_dtype, help="fp16, bf16, fp32 (default: fp16 on CUDA, else fp32)."
        ),
        amp: bool = typer.Option(
            True, "--amp/--no-amp", help="Run an fp16 model under CUDA autocast, as clip_benchmark."
        ),
    ) -> None:
        """Embed images (retrieval transform) and texts ("summarize:" prefix) into the shared space.

        Rows follow the order given (images from --image first, then --images-dir). A .safetensors output
        also records the image paths and texts in its metadata.
        """
        output = parse_output(output) if output is not None else None  # keeps a trailing / (a folder)
        from internvl.cli._common import check_files, check_model_dir, output_file, require_images
        from internvl.core.errors import ConfigError

        check_files(list(image or []))
        images = [*(image or []), *(list_images(images_dir) if images_dir else [])]
        texts = list(text or [])
        if not images and not texts:
            raise ConfigError("nothing to embed: pass --image, --images-dir and/or --text")
        output = output_file(output, "embeddings.safetensors")
        suffix = output.suffix.lower()
        if suffix not in (".npy", ".safetensors"):
            raise ConfigError(f"--output {output}: use a .npy or .safetensors file name")
        if suffix == ".npy" and images and texts:
            raise ConfigError("a .npy file holds one array; embed images and texts separately or use .safetensors")
        check_model_dir(model_dir)
        require_images(images)  # non-images and the pixel limit, from the headers: before the model loads

        from internvl.core.devices import pick_device, pick_dtype
        from internvl.data.transforms import build_transform
        from internvl.inference.embedding import embed_images, embed_texts
        from internvl.inference.loading import load_pretrained

        dev = pick_device(device)
        loaded = load_pretrained(model_dir, dtype=pick_dtype(dtype, dev), device=dev, model_types=("internvl",))
        model, tokenizer = loaded.model, loaded.tokenizer
        result = {}
        bar, start = progress_bar("embedding")
        with bar:
            if images:
                transform = build_transform("retrieval", model.image_size)
                result["image_embeds"] = embed_images(
                    model,
                    images,
                    transform,
                    batch_size,
                    mode,
                    normalize=normalize,
                    progress=start("images", len(images)),
                    amp=amp,
                )
            if texts:
                result["text_embeds"] = embed_texts(
                    model,
                    tokenizer,
                    texts,
                    batch_size,
                    normalize=normalize,
                    progress=start("texts", len(texts)),
                    amp=amp,
                )
        output.parent.mkdir(parents=True, exist_ok=True)
        if suffix == ".npy":
            import numpy as np

            np.save(output, next(iter(result.values())).numpy())
        else:
            from safetensors.torch import save_file

            meta = {
                "mode": mode,
                "normalized": str(normalize),
                "images": json.dumps([str(p) for p in images]),
                "texts": json.dumps(texts, ensure_ascii=False),
            }
            save_file({k: v.contiguous() for k, v in result.items()}, str(output), metadata=meta)
        shapes = ", ".join(f"{k} {tuple(v.shape)}" for k, v in result.items())
        typer.echo(f"wrote {output}: {shapes}")
