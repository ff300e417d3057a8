"""`internvl classify`: zero-shot classification of images against class names with InternVL-C/G."""

from __future__ import annotations

from pathlib import Path

import typer

from internvl.cli._common import parse_dtype, parse_mode, parse_output


def read_classes(classes: str | None, classes_file: Path | None) -> list[str]:
    """Class names from ``a,b,c`` or a file with one name per line (blank lines skipped)."""
    from internvl.core.errors import ConfigError, DataFormatError

    if (classes is None) == (classes_file is None):
        raise ConfigError("pass exactly one of --classes a,b,c and --classes-file FILE")
    if classes is not None:
        names = [c.strip() for c in classes.split(",")]
    else:
        if not classes_file.is_file():
            raise DataFormatError(f"{classes_file}: classes file not found")
        try:
            lines = classes_file.read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError as e:
            raise DataFormatError(
                f"--classes-file {classes_file}: not valid UTF-8 ({e.reason} at byte {e.start}); save it as UTF-8"
            ) from None
        names = [line.strip() for line in lines]
    names = [n for n in names if n]
    if not names:
        raise ConfigError("no class names given")
    return names


def register(app: typer.Typer) -> None:
    @app.command("classify")
    def classify_cmd(
        model_dir: Path = typer.Argument(
            ..., help="InternVL-C/G checkpoint directory (config.json, weights, tokenizer)."
        ),
        images: list[Path] | None = typer.Argument(None, help="Image files to classify (or --image)."),
        image: list[Path] | None = typer.Option(
            None, "--image", "-i", help="Image file (repeatable; the spelling embed and chat use)."
        ),
        classes: str | None = typer.Option(None, "--classes", help="Comma-separated class names."),
        classes_file: Path | None = typer.Option(None, "--classes-file", help="File with one class name per line."),
        templates: list[str] | None = typer.Option(
            None,
            "--templates",
            help='Prompt template with {} for the class name (repeatable; default "a photo of a {}.").',
        ),
        top_k: int = typer.Option(5, "--top-k", min=1, help="Predictions to report per image."),
        output: str | None = typer.Option(
            None,
            "--output",
            "-o",
            help="Write the predictions as JSON here (an existing folder or a path "
            "ending in / gets predictions.json inside).",
        ),
        mode: str = typer.Option(
            "InternVL-C",
            "--mode",
            callback=parse_mode,
            help="Image embedding: InternVL-C or InternVL-G (any case, or C / G).",
        ),
        batch_size: int = typer.Option(32, "--batch-size", min=1, help="Items per forward pass."),
        device: str | None = typer.Option(None, "--device", help="cuda, cuda:1, cpu (default: cuda if available)."),
        dtype: str | None = typer.Option(
            None, "--dtype", callback=parse_dtype, help="fp16, bf16, fp32 (default: fp16 on CUDA, else fp32)."
        ),
        amp: bool = typer.Option(
            True, "--amp/--no-amp", help="Run an fp16 model under CUDA autocast, as clip_benchmark."
        ),
    ) -> None:
        """Rank class names for each image (classification transform; classifier = mean of template embeddings)."""
        output = parse_output(output) if output is not None else None  # keeps a trailing / (a folder)
        from internvl.cli._common import check_files, check_model_dir, output_file, require_images
        from internvl.core.errors import ConfigError

        images = [*(images or []), *(image or [])]
        if not images:
            raise ConfigError("no images: pass image files (positional or --image)")
        names = read_classes(classes, classes_file)
        temps = list(templates or ["a photo of a {}."])
        bad = [t for t in temps if "{}" not in t]
        if bad:
            raise ConfigError(f"--templates must contain '{{}}' for the class name; got {bad}")
        check_model_dir(model_dir)
        check_files(images)
        require_images(images)  # non-images and the pixel limit, from the headers: before the model loads
        if output is not None:
            output = output_file(output, "predictions.json")

        from rich.console import Console
        from rich.table import Table

        from internvl.cli._common import progress_bar
        from internvl.core.devices import pick_device, pick_dtype
        from internvl.core.io import write_json_atomic
        from internvl.data.transforms import build_transform
        from internvl.inference.embedding import DEFAULT_TEMPLATES, classify, embed_images, zero_shot_classifier
        from internvl.inference.loading import load_pretrained

        if not templates:
            temps = list(DEFAULT_TEMPLATES)
        dev = pick_device(device)
        loaded = load_pretrained(model_dir, dtype=pick_dtype(dtype, dev), device=dev, model_types=("internvl",))
        model, tokenizer = loaded.model, loaded.tokenizer
        bar, start = progress_bar("classifying")
        with bar:
            classifier = zero_shot_classifier(
                model,
                tokenizer,
                names,
                temps,
                batch_size,
                progress=start("class prompts", len(names) * len(temps)),
                amp=amp,
            )
            emb = embed_images(
                model,
                images,
                build_transform("classification", model.image_size),
                batch_size,
                mode,
                progress=start("images", len(images)),
                amp=amp,
            )
        result = classify(emb, classifier, top_k)
        records = [
            {
                "image": str(path),
                "predictions": [
                    {"label": names[int(i)], "score": round(float(p), 6)} for p, i in zip(probs, idx, strict=True)
                ],
            }
            for path, probs, idx in zip(images, result.probs, result.indices, strict=True)
        ]
        table = Table(title=f"zero-shot {mode}, {len(names)} classes")
        table.add_column("image")
        table.add_column(f"top-{result.indices.shape[1]}")
        for rec in records:
            table.add_row(rec["image"], ", ".join(f"{p['label']} ({p['score']:.3f})" for p in rec["predictions"]))
        Console().print(table)
        if output is not None:
            write_json_atomic(output, records)
            typer.echo(f"wrote {output}")
