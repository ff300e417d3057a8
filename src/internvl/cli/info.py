"""`internvl info MODEL_DIR`: architecture, parameter counts, dtype and image size of a checkpoint."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command("info")
    def info(
        model_dir: Path = typer.Argument(..., help="Checkpoint directory with config.json and weights."),
        json_out: bool = typer.Option(False, "--json", help="Print machine-readable JSON instead of a table."),
    ) -> None:
        """Show what a checkpoint directory holds: model type, sizes, parameter counts, dtype, image size."""
        import json

        from rich.console import Console
        from rich.table import Table

        from internvl.cli._common import check_model_dir
        from internvl.models.checkpoint_info import describe_checkpoint

        check_model_dir(model_dir)  # a file, or a hub id, before anything else is read
        summary = describe_checkpoint(model_dir)
        if json_out:
            typer.echo(json.dumps(summary, indent=2))
            return
        table = Table(title=str(model_dir), show_header=False)
        for key, value in summary.items():
            if isinstance(value, dict):
                value = ", ".join(f"{k}: {_fmt(v)}" for k, v in value.items())
            table.add_row(key, _fmt(value))
        Console().print(table)


def _fmt(value) -> str:
    if isinstance(value, int) and value >= 10_000:
        return f"{value:,} ({value / 1e6:.1f}M)" if value < 1e9 else f"{value:,} ({value / 1e9:.2f}B)"
    return str(value)
