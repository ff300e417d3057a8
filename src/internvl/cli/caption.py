"""`internvl caption`: zero-shot captions for a folder of images with InternVL-G's QLLaMA.

Crash-safe like `eval caption`: each batch goes to ``<output>.partial.jsonl`` as it finishes, a rerun
with the same settings only captions the rest, and the final JSON is written atomically. An image that
cannot be read is skipped, named and counted (exit 2), unless ``--strict`` rejects the run up front.
"""

from __future__ import annotations

from pathlib import Path

import typer

from internvl.cli._common import parse_dtype, parse_output
from internvl.core.caption_defaults import CAPTION_BATCH_SIZE, GENERATION, PROMPT

CAPTIONS_FILE = "captions.json"


def register(app: typer.Typer) -> None:
    @app.command("caption")
    def caption(
        model_dir: Path = typer.Argument(
            ..., help="InternVL-C/G checkpoint directory (config.json, weights, tokenizer)."
        ),
        images_dir: Path = typer.Argument(..., help="Folder of images (every image file directly inside, sorted)."),
        output: str = typer.Option(
            ...,
            "--output",
            "-o",
            help='JSON file [{"image": name, "caption": text}, ...]; an existing folder '
            f"(or a path ending in /) gets {CAPTIONS_FILE} inside.",
        ),
        batch_size: int = typer.Option(
            CAPTION_BATCH_SIZE, "--batch-size", min=1, help="Images per generate call (as `eval caption`)."
        ),
        num_beams: int = typer.Option(GENERATION["num_beams"], "--num-beams", min=1, help="Beam width (reference: 5)."),
        min_new_tokens: int = typer.Option(
            GENERATION["min_new_tokens"], "--min-new-tokens", min=0, help="Reference: 8."
        ),
        max_new_tokens: int = typer.Option(
            GENERATION["max_new_tokens"], "--max-new-tokens", min=1, help="Reference: 30."
        ),
        prompt: str = typer.Option(PROMPT, "--prompt", help="Text after the query tokens."),
        device: str | None = typer.Option(None, "--device", help="cuda, cuda:1, cpu (default: cuda if available)."),
        dtype: str | None = typer.Option(
            None, "--dtype", callback=parse_dtype, help="fp16, bf16, fp32 (default: fp16 on CUDA, else fp32)."
        ),
        resume: bool = typer.Option(
            True,
            "--resume/--overwrite",
            help="Continue <output>.partial.jsonl of an interrupted run with the same "
            "settings (default), or discard it.",
        ),
        strict: bool = typer.Option(
            False,
            "--strict",
            help="Decode every image first and stop before any work if one is unreadable "
            "(default: skip it, list it in the output, exit 2).",
        ),
    ) -> None:
        """Caption every image of a folder with the reference settings (beam 5, 8-30 new tokens)."""
        output = parse_output(output)  # keeps a trailing / (a folder)
        from internvl.cli._common import check_model_dir, list_images, output_file, require_images, set_interrupt_note
        from internvl.core.errors import ConfigError, DataFormatError

        if min_new_tokens > max_new_tokens:
            raise ConfigError(f"--min-new-tokens {min_new_tokens} is more than --max-new-tokens {max_new_tokens}")
        check_model_dir(model_dir)
        files = list_images(images_dir)
        output = output_file(output, CAPTIONS_FILE)
        if strict:
            require_images(files, decode=True)

        import torch
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        from internvl.core.devices import pick_device, pick_dtype
        from internvl.data.transforms import build_transform, load_image
        from internvl.evaluation.captioning import MODEL_FILES
        from internvl.evaluation.partial_results import PartialResults, file_fingerprint, write_json_atomic
        from internvl.inference.captioning import generate_captions
        from internvl.inference.loading import load_pretrained

        dev = pick_device(device)
        dt = pick_dtype(dtype, dev)
        settings = {
            "model": str(model_dir.resolve()),
            "model_files": file_fingerprint(model_dir, MODEL_FILES),
            "images_dir": str(images_dir.resolve()),
            "prompt": prompt,
            "dtype": dt,
            "generation": {"num_beams": num_beams, "min_new_tokens": min_new_tokens, "max_new_tokens": max_new_tokens},
        }
        partial_path = output.with_name(output.name + ".partial.jsonl")
        partial = PartialResults.open(
            partial_path,
            output.with_name(output.name + ".partial.settings.json"),
            settings,
            details={"batch_size": batch_size, "device": str(dev)},
            key="image",
            fields=("image", "caption"),
            resume=resume,
        )
        with partial:
            todo = [p for p in files if p.name not in partial.done]
            if partial.resumed:
                typer.echo(f"resuming: {len(files) - len(todo)} of {len(files)} captions already in {partial_path}")
            set_interrupt_note(
                f"the captions finished so far are in {partial_path}; run the same command again "
                "to caption only the rest"
            )
            failed: dict[str, str] = {}
            if todo:
                loaded = load_pretrained(model_dir, dtype=dt, device=dev, model_types=("internvl",))
                model, tokenizer = loaded.model, loaded.tokenizer
                transform = build_transform("caption", model.image_size)
                columns = (TextColumn("captioning"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
                with Progress(*columns, transient=True) as progress:
                    task = progress.add_task("caption", total=len(todo))
                    for start in range(0, len(todo), batch_size):
                        chunk, pixels = [], []
                        for p in todo[start : start + batch_size]:
                            try:
                                pixels.append(transform(load_image(p)))
                                chunk.append(p)
                            except DataFormatError as e:
                                failed[p.name] = str(e)
                        if chunk:
                            texts = generate_captions(
                                model,
                                tokenizer,
                                torch.stack(pixels),
                                prompt=prompt,
                                num_beams=num_beams,
                                min_new_tokens=min_new_tokens,
                                max_new_tokens=max_new_tokens,
                            )
                            partial.append([{"image": p.name, "caption": t} for p, t in zip(chunk, texts, strict=True)])
                        progress.advance(task, len(todo[start : start + batch_size]))
        set_interrupt_note(f"the captions are in {partial_path}; run the same command again to write {output}")
        records = [partial.done[p.name] for p in files if p.name in partial.done]
        records += [{"image": name, "caption": None, "error": msg} for name, msg in failed.items()]
        write_json_atomic(output, records)
        good = [r for r in records if r["caption"] is not None]
        avg = sum(len(r["caption"].split()) for r in good) / max(len(good), 1)
        typer.echo(f"wrote {output}: {len(good)} captions, average length {avg:.4f} words")
        if failed:
            first = next(iter(failed.values()))
            raise DataFormatError(
                f"{len(failed)} of {len(files)} images could not be read and were skipped (listed "
                f"in {output} with their error; fix them and rerun to caption only those): {first}"
            )
