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
        from internvl.data.conversation import add_image_placeholder
        from internvl.inference import chat as api

        if image and video:
            raise DataFormatError("give either --image or --video, not both")
        model, tokenizer = api.load_chat_model(model_dir, dtype=dtype, device_map=device_map, load_in_8bit=load_in_8bit)
        gen: dict = {"max_new_tokens": max_new_tokens, "do_sample": do_sample}
        if do_sample:
            gen.update(temperature=temperature, top_p=top_p)

        pixel_values, patches, prefix = None, None, ""
        if video is not None:
            from internvl.data.video import load_video, video_prompt_prefix

            pixel_values, patches = load_video(video, num_segments=num_segments, settings=api.image_settings(model))
            prefix = video_prompt_prefix(len(patches))
        elif image:
            pixel_values, patches = api.load_images(model, [str(p) for p in image])
            if len(image) > 1:
                prefix = "".join(f"Image-{k + 1}: <image>\n" for k in range(len(image)))

        if question is not None:
            answer = api.chat(
                model, tokenizer, pixel_values, prefix + question, gen,
                num_patches_list=patches, system_message=system,
            )
            typer.echo(answer)
            return

        history = None
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
            asked = prefix + text if history is None else text
            typer.echo("assistant> ", nl=False)
            pieces = []
            for piece in api.stream_chat(
                model, tokenizer, pixel_values, asked, gen,
                history=history, num_patches_list=patches, system_message=system,
            ):
                pieces.append(piece)
                typer.echo(piece, nl=False)
            typer.echo("")
            stored = add_image_placeholder(asked, bool(patches), history)
            history = [*(history or []), (stored, "".join(pieces))]
