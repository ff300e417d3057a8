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
    from internvl.inference.inspect import describe_checkpoint
    from internvl.models.intern_vit import PRESETS, InternViT, build_intern_vit

    model = build_intern_vit(PRESETS["intern_vit_tiny"], seed=seed)
    model_dir = output / "intern_vit_tiny"
    model.save_pretrained(model_dir)
    reloaded = InternViT.from_pretrained(model_dir)
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


STEPS = [("InternViT (vision encoder)", _vision_step)]
