"""`internvl data check|convert-boxes`: validate an SFT meta mixture; convert RefCOCO boxes.

Thin: option parsing, the tables and exit codes; the work is in `internvl.data.sft_check` and
`internvl.data.boxes`.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from internvl.cli._common import parse_output

PROBLEMS_SHOWN = 20
REPORT_FILE = "check_report.json"  # `data check --report FOLDER/`
BOXES_REPORT_FILE = "convert_report.json"  # `data convert-boxes --report FOLDER/`


def register(app: typer.Typer) -> None:
    from internvl.cli.synth import synth

    sub = typer.Typer(
        help="Data: validate an SFT mixture, convert RefCOCO boxes, write the built-in world.", no_args_is_help=True
    )
    app.add_typer(sub, name="data")
    sub.command("synth")(synth)

    @sub.command("check")
    def check(
        meta: Path = typer.Argument(..., help="Meta JSON {name: {root, annotation, repeat_time, ...}}."),
        model: Path | None = typer.Option(
            None,
            "--model",
            "-m",
            help="Chat checkpoint: template, tiling and tokens per tile from its config.json, "
            "tokenizer from its files (the options below override).",
        ),
        tokenizer: Path | None = typer.Option(None, "--tokenizer", help="Tokenizer directory (default: --model)."),
        template: str | None = typer.Option(
            None, "--template", help="Conversation template (default: the model's, else Hermes-2)."
        ),
        max_length: int = typer.Option(2048, "--max-length", min=1, help="max_seq_length of the run."),
        num_image_token: int | None = typer.Option(
            None, "--num-image-token", min=1, help="Visual tokens per tile (default: the model's, else 256)."
        ),
        image_size: int | None = typer.Option(None, "--image-size", min=1, help="Tile size (default 448)."),
        dynamic: bool | None = typer.Option(None, "--dynamic/--no-dynamic", help="Dynamic tiling (V1-2: off)."),
        max_dynamic_patch: int | None = typer.Option(None, "--max-dynamic-patch", min=1),
        use_thumbnail: bool | None = typer.Option(None, "--thumbnail/--no-thumbnail"),
        decode_images: bool = typer.Option(
            True,
            "--decode-images/--headers-only",
            help="Decode every image fully (finds truncated files) or read headers only.",
        ),
        report: str | None = typer.Option(
            None, "--report", "-o", help=f"Write the full JSON report here (a folder gets {REPORT_FILE} inside)."
        ),
        strict: bool = typer.Option(
            False, "--strict", help="Count truncated (over max_length, text-only cut) samples as problems."
        ),
    ) -> None:
        """Validate every record of a meta mixture as training would read it; exit 2 on problems."""
        from internvl.cli._common import check_files, check_model_dir, output_file
        from internvl.core.errors import DataFormatError

        # Paths first, before the data stack (and torch) is imported: a typo is reported at once.
        check_files([meta], "meta JSON")
        if model is not None:
            check_model_dir(model, "--model")
            if not (model / "config.json").is_file():
                raise DataFormatError(f"--model {model}: no config.json; pass a chat checkpoint folder or --tokenizer")
        if tokenizer is not None:
            check_model_dir(tokenizer, "--tokenizer")
        if tokenizer is None and model is None:
            raise DataFormatError("pass --model CHECKPOINT or --tokenizer DIR (token counts need the tokenizer)")
        if report is not None:
            report = output_file(parse_output(str(report)), REPORT_FILE, "--report")
        if template is not None:
            from internvl.data.conversation import list_conv_templates

            if template not in list_conv_templates():
                from difflib import get_close_matches

                close = get_close_matches(template, list_conv_templates(), n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise DataFormatError(
                    f"--template {template!r}: unknown conversation template{hint} (known: "
                    f"{', '.join(list_conv_templates())})"
                )

        import dataclasses

        from rich.console import Console
        from rich.table import Table

        from internvl.data.datasets.sft_meta import read_sft_meta
        from internvl.data.image_processing import ChatImageSettings
        from internvl.data.sft import SFTDataConfig, SFTDataset
        from internvl.data.sft_check import check_sft_data
        from internvl.data.text_encoders import load_text_encoder

        settings, default_template, default_tokens = ChatImageSettings(), "Hermes-2", 256
        if model is not None:
            from internvl.models.internvl_chat import InternVLChatConfig

            cfg_file = model / "config.json"
            raw = json.loads(cfg_file.read_text())
            settings = ChatImageSettings.from_config_dict(raw)
            config = InternVLChatConfig.from_dict(raw)
            default_template, default_tokens = config.template or default_template, config.num_image_token
        overrides = {
            k: v
            for k, v in {
                "image_size": image_size,
                "dynamic_image_size": dynamic,
                "max_dynamic_patch": max_dynamic_patch,
                "use_thumbnail": use_thumbnail,
            }.items()
            if v is not None
        }
        settings = dataclasses.replace(settings, **overrides)
        tok_dir = tokenizer or model
        data_config = SFTDataConfig(
            template=template or default_template,
            num_image_token=num_image_token or default_tokens,
            max_length=max_length,
            image=settings,
        )
        dataset = SFTDataset(read_sft_meta(meta), load_text_encoder(tok_dir), data_config)
        console = Console(stderr=True)
        from rich.progress import Progress

        with Progress(console=console, transient=True) as bar:
            task = bar.add_task("checking", total=sum(1 for _ in set(dataset.index)))
            result = check_sft_data(dataset, decode_images=decode_images, progress=lambda n: bar.advance(task, n))

        table = Table(title=f"{meta} (max_length {max_length}, template {data_config.template})")
        for col in ("dataset", "records", "samples", "images", "est. tokens", "truncated", "problems"):
            table.add_column(col, justify="left" if col in ("dataset", "problems") else "right")
        for d in result.datasets:
            kinds = ", ".join(f"{k} {n}" for k, n in sorted(d.problems.items())) or "-"
            table.add_row(
                d.name, str(d.records), str(d.samples), str(d.images), f"{d.tokens:,}", str(d.truncated), kinds
            )
        Console().print(table)
        shown = result.problems + (result.warnings if strict else [])
        for p in shown[:PROBLEMS_SHOWN]:
            typer.echo(f"{p.kind}: {p.message}", err=True)
        if len(shown) > PROBLEMS_SHOWN:
            typer.echo(f"... and {len(shown) - PROBLEMS_SHOWN} more (see --report)", err=True)
        if report is not None:
            report.parent.mkdir(parents=True, exist_ok=True)
            report.write_text(json.dumps(result.to_dict(), indent=2, ensure_ascii=False))
        if shown:
            raise typer.Exit(code=2)

    @sub.command("convert-boxes")
    def convert_boxes(
        annotation: Path = typer.Argument(..., help="Input JSONL (LLaVA-1.5 [x1, y1, x2, y2] boxes in 0-1)."),
        output: str = typer.Option(
            ...,
            "--output",
            "-o",
            help="New JSONL with <box>[[...]]</box> in 0-1000 (a folder gets the input's file name inside).",
        ),
        report: str | None = typer.Option(
            None, "--report", help=f"Write the conversion report (JSON) here (a folder: {BOXES_REPORT_FILE} inside)."
        ),
    ) -> None:
        """Convert RefCOCO boxes (0-1 floats) to the V1-2-Plus <box> format (integers in 0-1000)."""
        from internvl.cli._common import check_files, output_file

        check_files([annotation], "annotation")
        output = output_file(parse_output(output), annotation.name)  # a folder gets the input's name inside
        if report is not None:
            report = output_file(parse_output(report), BOXES_REPORT_FILE, "--report")
        from internvl.data.boxes import convert_boxes_file

        result = convert_boxes_file(annotation, output)
        typer.echo(
            f"{result.records} records: {result.records_changed} changed, {result.boxes_converted} boxes "
            f"converted, {result.boxes_already_converted} already in <box> form -> {output}"
        )
        if report is not None:
            report.parent.mkdir(parents=True, exist_ok=True)
            report.write_text(json.dumps(result.to_dict(), indent=2))
