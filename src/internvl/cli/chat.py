"""`internvl chat`: talk to an InternVL-Chat checkpoint, one-shot or interactively (streaming, with history)."""

from __future__ import annotations

import sys
from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command("chat")
    def chat_command(
        model_dir: Path = typer.Argument(..., help="Checkpoint directory (config.json, weights, tokenizer)."),
        question: str | None = typer.Argument(None, help="Ask once and exit; omit for an interactive session."),
        image: list[Path] = typer.Option(
            [], "--image", "-i", help="Image file (repeatable; several become Image-1, Image-2, ...)."
        ),
        video: Path | None = typer.Option(None, "--video", help="Video file; frames are sampled as in the model card."),
        num_segments: int = typer.Option(8, help="Frames sampled from --video."),
        system: str | None = typer.Option(
            None, "--system", help="System message (default: checkpoint config, else template)."
        ),
        max_new_tokens: int = typer.Option(512, help="Maximum tokens per answer."),
        do_sample: bool = typer.Option(
            False, "--sample/--greedy", help="Sample (temperature/top-p) or decode greedily."
        ),
        temperature: float = typer.Option(0.7, help="Sampling temperature (with --sample)."),
        top_p: float = typer.Option(0.95, help="Nucleus sampling threshold (with --sample)."),
        dtype: str | None = typer.Option(None, help="fp32 / bf16 / fp16 (default: as stored)."),
        device_map: str | None = typer.Option(None, help="'auto' to split over GPUs, or a device such as cuda:0."),
        load_in_8bit: bool = typer.Option(False, "--8bit", help="int8 weights via bitsandbytes (CUDA only)."),
    ) -> None:
        """Chat with a model: `internvl chat MODEL_DIR [--image P]... [--video P] [QUESTION]`.

        Without QUESTION, reads questions from stdin and streams each answer, keeping the conversation
        history; `/exit` or end of input quits.
        """
        from internvl.core.errors import DataFormatError
        from internvl.inference.pipeline import ChatPipeline
        from internvl.inference.requests import ChatRequest, GenerationOptions

        if image and video:
            raise DataFormatError("give either --image or --video, not both")
        pipe = ChatPipeline.load(model_dir, dtype=dtype, device_map=device_map, load_in_8bit=load_in_8bit)
        options = GenerationOptions(
            max_new_tokens=max_new_tokens, do_sample=do_sample,
            temperature=temperature if do_sample else None, top_p=top_p if do_sample else None,
        )
        visuals = None  # preprocessed once, reused by every turn
        if video is not None:
            visuals = pipe.prepare_video(video, num_segments=num_segments)
        elif image:
            visuals = pipe.prepare_images([str(p) for p in image])

        if question is not None:
            typer.echo(pipe.answer(ChatRequest(question, visuals=visuals, system_message=system, options=options)).text)
            return

        history = None
        session = pipe.session()  # each turn prefills only its new tokens (KV cache and image features kept)
        stdin = sys.stdin
        while True:
            typer.echo("user> ", nl=False)
            line = stdin.readline()
            if not line:  # EOF
                typer.echo("")
                break
            text = line.rstrip("\n")
            if text.strip() in ("/exit", "/quit"):
                break
            if not text.strip():
                continue
            typer.echo("assistant> ", nl=False)
            req = ChatRequest(text, visuals=visuals, history=history, system_message=system, options=options)
            stream = session.stream(req)
            for piece in stream:
                typer.echo(piece, nl=False)
            typer.echo("")
            history = stream.response.history
