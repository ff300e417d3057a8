"""`internvl data synth`: write the built-in synthetic world in the real dataset formats."""

from __future__ import annotations

from pathlib import Path

import typer


def synth(
    out: Path = typer.Option(..., "--out", "-o", help="Directory to write the world into."),
    seed: int = typer.Option(0, help="Seed of the world: the same seed writes the same files."),
    train: int = typer.Option(5000, help="Training images."),
    val: int = typer.Option(200, help="Validation images."),
    test: int = typer.Option(500, help="Test images (held out: no caption of theirs occurs in train)."),
    min_objects: int = typer.Option(
        2, help="Fewest objects per scene (1-3); 1 adds one-object scenes (harder to retrieve)."
    ),
) -> None:
    """Draw scenes with captions and questions; write Flickr/COCO caption files, SFT meta + JSONL, MME and
    MMBench files and a tokenizer."""
    from internvl.cli._common import output_folder

    output_folder(out, "--out")  # an existing file: an error before the world is drawn
    from internvl.data.synthetic.world import write_world

    summary = write_world(out, seed, {"train": train, "val": val, "test": test}, min_objects=min_objects)
    typer.echo(f"wrote the world (seed {seed}: {summary['sizes']}) to {out}/")
    typer.echo(
        f"  dataset registry: {out / 'registry.yaml'}  (e.g. --registry {out / 'registry.yaml'} "
        "--dataset world_flickr_format_test)"
    )
    typer.echo(f"  tokenizer: {out / 'tokenizer'}/   summary: {out / 'world.json'}")
