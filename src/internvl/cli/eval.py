"""`internvl eval retrieval|caption`: the reference benchmarks on the standard datasets.

Thin: argument parsing and the results table; the work is in `internvl.evaluation`.
"""

from __future__ import annotations

import os
from pathlib import Path

import typer

from internvl.cli._common import parse_dtype, parse_mode, parse_output
from internvl.core.caption_defaults import CAPTION_BATCH_SIZE, GENERATION, PROMPT

_DATA_ROOT_HELP = "Folder that replaces ./data in the built-in dataset paths (and in relative registry paths)."
_REGISTRY_HELP = (
    "YAML/JSON file with extra or overriding dataset entries (repeatable); see README.md, section Evaluation."
)


# More DataLoader workers than cores only adds contention (and a torch warning) on small machines.
DEFAULT_WORKERS = min(4, os.cpu_count() or 1)


def register(app: typer.Typer) -> None:
    sub = typer.Typer(
        help="Benchmarks: retrieval recall@k, zero-shot captioning, and chat-model benchmarks (bench).",
        no_args_is_help=True,
    )
    app.add_typer(sub, name="eval")

    @sub.command("retrieval")
    def retrieval(
        model: Path = typer.Option(
            ..., "--model", "-m", help="InternVL-C/G checkpoint directory (with tokenizer files)."
        ),
        dataset: str = typer.Option(
            "flickr30k", "--dataset", "-d", help="flickr30k, coco, mscoco_captions, or any registry entry name."
        ),
        output: str = typer.Option(
            ...,
            "--output",
            "-o",
            help="Result JSON file (clip_benchmark's schema); an existing folder or a path "
            "ending in / gets <dataset>_<language>_retrieval.json inside.",
        ),
        language: str | None = typer.Option(
            None, "--language", help="en or cn, for the short dataset names (default en)."
        ),
        mode: str = typer.Option(
            "InternVL-C",
            "--mode",
            callback=parse_mode,
            help="Image embedding: InternVL-C or InternVL-G (any case, or C / G).",
        ),
        data_root: Path | None = typer.Option(None, "--data-root", help=_DATA_ROOT_HELP),
        registry: list[Path] | None = typer.Option(None, "--registry", help=_REGISTRY_HELP),
        batch_size: int = typer.Option(64, "--batch-size", min=1, help="Images per step (their captions go together)."),
        limit: int | None = typer.Option(None, "--limit", min=1, help="Only the first N images (smoke runs)."),
        device: str | None = typer.Option(None, "--device", help="cuda, cuda:1, cpu (default: cuda if available)."),
        dtype: str | None = typer.Option(
            None, "--dtype", callback=parse_dtype, help="fp16, bf16, fp32 (default: fp16 on CUDA, else fp32)."
        ),
        amp: bool = typer.Option(True, "--amp/--no-amp", help="fp16 autocast on CUDA, as clip_benchmark."),
        num_workers: int = typer.Option(
            DEFAULT_WORKERS, "--num-workers", min=0, help="Image decoding processes (default: min(4, CPU cores))."
        ),
        append: bool = typer.Option(
            False, "--append", help="Append one JSON line instead of overwriting (clip_benchmark)."
        ),
    ) -> None:
        """Image->text and text->image recall@1/5/10 with clip_benchmark's protocol."""
        output = parse_output(output)  # keeps a trailing / (a folder)
        from internvl.cli._common import check_model_dir, output_file

        check_model_dir(model, "--model")
        output = output_file(output, f"{dataset}_{language or 'en'}_retrieval.json")

        from internvl.evaluation.retrieval import run_retrieval

        result = run_retrieval(
            model,
            dataset,
            language=language,
            mode=mode,
            data_root=data_root,
            registry_files=registry or (),
            batch_size=batch_size,
            limit=limit,
            device=device,
            dtype=dtype,
            amp=amp,
            num_workers=num_workers,
            output=output,
            append=append,
        )
        _print_retrieval(result, output)

    @sub.command("caption")
    def caption(
        model: Path = typer.Option(..., "--model", "-m", help="InternVL checkpoint directory (with tokenizer files)."),
        dataset: str = typer.Option(
            ..., "--dataset", "-d", help="coco, flickr30k, nocaps, or any registry entry name."
        ),
        output: Path = typer.Option(
            ...,
            "--output",
            "-o",
            help="Directory for <dataset>_captions.json, _metrics.json and the resumable _captions.partial.jsonl.",
        ),
        data_root: Path | None = typer.Option(None, "--data-root", help=_DATA_ROOT_HELP),
        registry: list[Path] | None = typer.Option(None, "--registry", help=_REGISTRY_HELP),
        batch_size: int = typer.Option(
            CAPTION_BATCH_SIZE,
            "--batch-size",
            min=1,
            help="Images per generate call (as `caption`; the reference ran 1: equal up to fp16 rounding).",
        ),
        limit: int | None = typer.Option(None, "--limit", min=1, help="Only the first N images (smoke runs)."),
        device: str | None = typer.Option(None, "--device", help="cuda, cuda:1, cpu (default: cuda if available)."),
        dtype: str | None = typer.Option(
            None, "--dtype", callback=parse_dtype, help="fp16, bf16, fp32 (default: fp16 on CUDA, else fp32)."
        ),
        num_workers: int = typer.Option(
            min(2, DEFAULT_WORKERS),
            "--num-workers",
            min=0,
            help="Image decoding processes (default: min(2, CPU cores)).",
        ),
        num_beams: int = typer.Option(GENERATION["num_beams"], "--num-beams", min=1, help="Beam width (reference: 5)."),
        min_new_tokens: int = typer.Option(
            GENERATION["min_new_tokens"], "--min-new-tokens", min=0, help="Reference: 8."
        ),
        max_new_tokens: int = typer.Option(
            GENERATION["max_new_tokens"], "--max-new-tokens", min=1, help="Reference: 30."
        ),
        prompt: str = typer.Option(
            PROMPT,
            "--prompt",
            help="Text after the query tokens (reference: 'English caption:' for every "
            "dataset, Chinese ones included); part of the resume settings.",
        ),
        resume: bool = typer.Option(
            True,
            "--resume/--no-resume",
            " /--overwrite",
            help="Continue <dataset>_captions.partial.jsonl in --output if it was written with the same model, "
            "dataset, prompt, generation settings and dtype (else: error). --overwrite/--no-resume: discard it "
            "and start over.",
        ),
        score: bool = typer.Option(
            True,
            "--score/--no-score",
            help="--no-score: only generate (no ground truth or Java needed); a later run "
            "without it scores the saved captions without generating again.",
        ),
    ) -> None:
        """Zero-shot captions ("English caption:", beam 5, 8-30 tokens) scored with pycocoevalcap."""
        from internvl.cli._common import check_model_dir, output_folder, set_interrupt_note

        if min_new_tokens > max_new_tokens:
            from internvl.core.errors import ConfigError

            raise ConfigError(f"--min-new-tokens {min_new_tokens} is more than --max-new-tokens {max_new_tokens}")
        check_model_dir(model, "--model")
        output = output_folder(output)
        set_interrupt_note(
            f"the captions finished so far are in {output}/*_captions.partial.jsonl; run the same "
            "command again to continue from there"
        )

        from internvl.evaluation.captioning import run_caption_eval

        summary = run_caption_eval(
            model,
            dataset,
            output,
            data_root=data_root,
            registry_files=registry or (),
            batch_size=batch_size,
            limit=limit,
            device=device,
            dtype=dtype,
            num_workers=num_workers,
            num_beams=num_beams,
            min_new_tokens=min_new_tokens,
            max_new_tokens=max_new_tokens,
            resume=resume,
            score=score,
            prompt=prompt,
        )
        _print_caption(summary, output)

    @sub.command("bench")
    def bench(
        model: Path | None = typer.Option(
            None, "--model", "-m", help="InternVL-Chat checkpoint directory (with tokenizer files)."
        ),
        benchmark: str = typer.Option(
            ..., "--benchmark", "-b", help="Comma-separated names, e.g. mme,pope,mmbench_dev_en ('list' prints them)."
        ),
        data: Path | None = typer.Option(
            None,
            "--data",
            help="Folder laid out like the reference's internvl_chat/data (README.md, Chat-model benchmarks).",
        ),
        output: Path | None = typer.Option(
            None, "--output", "-o", help="Results folder: <name>.json, summary.md, answer caches."
        ),
        limit: int | None = typer.Option(None, "--limit", min=1, help="Only the first N questions per benchmark."),
        batch_size: int = typer.Option(1, "--batch-size", min=1, help="Questions per generate call (reference: 1)."),
        num_beams: int = typer.Option(
            1, "--num-beams", min=1, help="1 for V1-2 (the reference forces 1 above 20B parameters; 5 below)."
        ),
        device: str | None = typer.Option(
            None, "--device", help="cuda, cuda:1, cpu (default: cuda:LOCAL_RANK if available)."
        ),
        dtype: str | None = typer.Option(
            None, "--dtype", callback=parse_dtype, help="bf16, fp16, fp32 (default: bf16 on CUDA, else fp32)."
        ),
        device_map: str | None = typer.Option(
            None, "--device-map", help="'auto' (or balanced) to split one model over the GPUs; one process."
        ),
        resume: bool = typer.Option(
            True,
            "--resume/--overwrite",
            help="Reuse cached answers written with the same settings (default), or discard them.",
        ),
        progress: bool = typer.Option(True, "--progress/--no-progress", help="Progress bars."),
    ) -> None:
        """Model-card benchmarks (MME, MMBench, POPE, TextVQA, ...) with the reference's prompts and scoring;
        shards over `torchrun --nproc_per_node N` ranks and resumes from cached answers."""
        if benchmark.strip() == "list":
            from internvl.evaluation.mllm.registry import get_benchmark, list_benchmarks

            for name in list_benchmarks():
                typer.echo(f"{name:18} {get_benchmark(name).about}")
            return
        from internvl.cli._common import check_model_dir, output_folder
        from internvl.core.errors import ConfigError, DataFormatError

        absent = [flag for flag, value in (("--model", model), ("--data", data), ("--output", output)) if value is None]
        if absent:
            raise ConfigError(f"eval bench needs {', '.join(absent)} (only '--benchmark list' runs without them)")
        check_model_dir(model, "--model")  # paths before torch and the model stack are imported
        if not data.is_dir():
            raise DataFormatError(
                f"--data {data}: " + ("is a file, expected a folder" if data.exists() else "no such folder")
            )
        output_folder(output)

        from internvl.core.distributed import DistContext
        from internvl.evaluation.mllm.runner import run_benchmarks

        dist = DistContext.from_env()
        dist.init()
        try:
            results = run_benchmarks(
                model,
                [b.strip() for b in benchmark.split(",") if b.strip()],
                data,
                output,
                limit=limit,
                batch_size=batch_size,
                num_beams=num_beams,
                dtype=dtype,
                device=device,
                device_map=device_map,
                resume=resume,
                progress=progress,
                dist=dist,
            )
        finally:
            dist.close()
        if dist.is_main:
            for name, r in results.items():
                score = "server" if r["score"] is None else f"{r['score']:.2f}"
                c = r["counts"]
                typer.echo(
                    f"{name}: {r['metric']} {score} ({c['questions']} questions, {c['problems']} problems, "
                    f"{c['failed']} failed, {c['unparsed']} unparsed)"
                )
            typer.echo(f"summary: {output / 'summary.md'}")


def _print_retrieval(result: dict, output: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    m = result["metrics"]
    ks = sorted({int(k.rsplit("@", 1)[1]) for k in m if "@" in k})
    table = Table(
        title=f"{result['dataset']} ({result['language']}), {result['mode']}: "
        f"{result['num_images']} images, {result['num_texts']} texts"
    )
    table.add_column("direction")
    for k in ks:
        table.add_column(f"R@{k}", justify="right")
    table.add_row("image->text (text_retrieval)", *[f"{100 * m[f'text_retrieval_recall@{k}']:.2f}" for k in ks])
    table.add_row("text->image (image_retrieval)", *[f"{100 * m[f'image_retrieval_recall@{k}']:.2f}" for k in ks])
    console = Console()
    console.print(table)
    console.print(f"mean recall {100 * m['mean_recall']:.2f}; written to {output}")


def _print_caption(summary: dict, output: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    title = f"{summary['dataset']}: {summary['num_images']} images, average length {summary['average_length']:.4f}"
    console = Console()
    if summary["metrics"] is None:
        console.print(f"{title}; not scored (--no-score)")
    else:
        table = Table(title=title)
        for name in summary["metrics"]:
            table.add_column(name, justify="right")
        table.add_row(*[f"{v:.5f}" for v in summary["metrics"].values()])
        console.print(table)
    if summary.get("resumed_images"):
        console.print(
            f"{summary['resumed_images']} captions reused from {summary['partial_file']}, "
            f"{summary['generated_images']} generated now"
        )
    console.print(
        f"captions: {summary['captions_file']}; metrics: {Path(output) / (summary['dataset'] + '_metrics.json')}"
    )
