"""`internvl chat`: talk to an InternVL-Chat checkpoint, one-shot or interactively (streaming, with history)."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from internvl.cli._common import parse_dtype


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
        dtype: str | None = typer.Option(
            None, "--dtype", callback=parse_dtype, help="fp32 / bf16 / fp16 (default: as stored)."
        ),
        device_map: str | None = typer.Option(None, help="'auto' to split over GPUs, or a device such as cuda:0."),
        device: str | None = typer.Option(None, "--device", help="cuda, cuda:1, cpu (one device; see --device-map)."),
        load_in_8bit: bool = typer.Option(False, "--8bit", help="int8 weights via bitsandbytes (CUDA only)."),
    ) -> None:
        """Chat with a model: `internvl chat MODEL_DIR [--image P]... [--video P] [QUESTION]`.

        Without QUESTION, reads questions from stdin and streams each answer, keeping the conversation
        history; `/exit` or end of input quits.
        """
        from internvl.cli._common import check_files, check_model_dir, require_images, set_interrupt_note
        from internvl.core.errors import ConfigError, DataFormatError, InternVLError

        # Everything a user can get wrong is checked here, before torch and the model load.
        if image and video:
            raise DataFormatError("give either --image or --video, not both")
        if device is not None and device_map is not None:
            raise ConfigError("give either --device or --device-map, not both")
        if question is not None and not question.strip():
            raise ConfigError("QUESTION is empty; ask something, or leave it out for an interactive session")
        if num_segments < 1:
            raise ConfigError(f"--num-segments {num_segments}; expected >= 1")
        set_interrupt_note("the conversation is not kept on disk; nothing to resume")
        check_model_dir(model_dir)
        check_files(list(image))
        require_images(list(image))  # header check: non-images and the pixel limit
        if video is not None:
            check_files([video], "video")

        from internvl.core.devices import pick_device
        from internvl.inference.pipeline import ChatPipeline
        from internvl.inference.requests import ChatRequest, GenerationOptions

        try:  # range checks of every option, even those --greedy ignores (a --top-p 2 is a mistake either way)
            GenerationOptions(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p)
        except InternVLError as e:
            raise ConfigError(f"--{str(e).split('=', 1)[0].replace('_', '-')}: {e}") from None
        options = GenerationOptions(
            max_new_tokens=max_new_tokens,
            do_sample=do_sample,
            temperature=temperature if do_sample else None,
            top_p=top_p if do_sample else None,
        )
        if device is not None:
            pick_device(device)  # CUDA asked for on a machine without one: an error now
        elif device_map is not None and device_map not in ("auto", "balanced", "balanced_low_0", "sequential"):
            pick_device(device_map)  # e.g. --device-map cuda on a machine without a GPU
        if video is not None:
            from internvl.data.video import video_info

            video_info(video)  # not a video / no frames: an error now, not after loading the model
        pipe = ChatPipeline.load(
            model_dir, dtype=dtype, device=device, device_map=device_map, load_in_8bit=load_in_8bit
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
