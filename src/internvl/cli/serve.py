"""`internvl serve`: the OpenAI-compatible server (chat for InternVL-Chat, embeddings for InternVL-C/G)."""

from __future__ import annotations

import logging
from pathlib import Path

import typer

from internvl.cli._common import parse_dtype, parse_mode

log = logging.getLogger(__name__)
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def build_server_app(
    model_dir: Path,
    *,
    model_name: str | None = None,
    api_key: str | None = None,
    dtype: str | None = None,
    device: str | None = None,
    mode: str = "InternVL-C",
    limits=None,
    **settings,
):
    """Load the checkpoint (chat or C/G, from its config.json) and build the app; no network is opened."""
    from internvl.core.errors import ConfigError
    from internvl.core.specs import EMBEDDING_MODES, canonical_mode
    from internvl.models.checkpoint import read_config

    try:
        from internvl.serving.app import ServeSettings, create_app, env_api_key
        from internvl.serving.schemas import Limits
    except ImportError as e:
        raise ConfigError(
            f"internvl serve needs the serve extra ({e.name} is missing): pip install 'internvl[serve]'"
        ) from None
    canonical = canonical_mode(mode)
    if canonical is None:
        raise ConfigError(f"--mode {mode!r}; expected one of {', '.join(EMBEDDING_MODES)}")
    mode = canonical
    config = read_config(model_dir)
    if config.get("model_type") == "internvl_chat":
        from internvl.inference.pipeline import ChatPipeline

        model = ChatPipeline.load(model_dir, dtype=dtype, device_map=device)
    else:
        from internvl.evaluation.runtime import load_model_and_tokenizer, pick_device, pick_dtype
        from internvl.serving.worker import Embedder

        dev = pick_device(device)
        cg, tokenizer = load_model_and_tokenizer(model_dir, dtype=pick_dtype(dtype, dev), device=dev)
        model = Embedder(cg.eval(), tokenizer, mode=mode)
    name = model_name or Path(model_dir).resolve().name
    key = api_key or env_api_key()
    return create_app(model, ServeSettings(model_name=name, api_key=key, limits=limits or Limits(), **settings))


def register(app: typer.Typer) -> None:
    @app.command("serve")
    def serve(
        model_dir: Path = typer.Argument(..., help="InternVL-Chat or InternVL-C/G checkpoint directory."),
        host: str = typer.Option("127.0.0.1", help="Interface to listen on (loopback by default)."),
        port: int = typer.Option(8000, min=1, max=65535, help="TCP port."),
        api_key: str | None = typer.Option(
            None, "--api-key", help="Require 'Authorization: Bearer KEY' (default: $INTERNVL_API_KEY)."
        ),
        model_name: str | None = typer.Option(None, help="Model id clients send (default: the directory name)."),
        dtype: str | None = typer.Option(
            None, "--dtype", callback=parse_dtype, help="fp32 / bf16 / fp16 (default: as stored; C/G: fp16 on CUDA)."
        ),
        device: str | None = typer.Option(None, help="Chat: a device_map ('auto', 'cuda:0'); C/G: a device."),
        mode: str = typer.Option(
            "InternVL-C", callback=parse_mode, help="Default image-embedding mode of a C/G checkpoint (any case)."
        ),
        max_queue: int = typer.Option(64, min=1, help="Queued requests beyond which clients get 429."),
        max_batch_size: int = typer.Option(8, min=1, help="Most chat requests generated together."),
        request_timeout: float = typer.Option(300.0, min=0.1, help="Seconds a request may wait and run (504 after)."),
        max_body_bytes: int = typer.Option(32 * 2**20, min=1, help="Largest request body (413 above)."),
        max_image_bytes: int = typer.Option(16 * 2**20, min=1, help="Largest encoded image (413 above)."),
        max_image_pixels: int = typer.Option(4096 * 4096, min=1, help="Largest width x height (decompression bombs)."),
        max_images: int = typer.Option(8, min=0, help="Most images per request."),
        max_messages: int = typer.Option(64, min=1, help="Most messages per request."),
        max_tokens: int = typer.Option(2048, min=1, help="Largest max_tokens a request may ask for."),
        default_max_tokens: int = typer.Option(512, min=1, help="max_tokens when a request sends none."),
        max_embedding_inputs: int = typer.Option(64, min=1, help="Most inputs per embeddings request."),
        allow_fetch_host: list[str] = typer.Option(
            [], "--allow-fetch-host", help="Host whose http(s) image URLs may be fetched (repeatable)."
        ),
    ) -> None:
        """Serve MODEL_DIR over an OpenAI-compatible API (/v1/chat/completions, /v1/embeddings) and a chat page at /."""
        from internvl.cli._common import check_model_dir
        from internvl.core.errors import CheckpointError, ConfigError

        check_model_dir(model_dir)  # before uvicorn, fastapi and torch are imported
        if not (model_dir / "config.json").is_file():
            raise CheckpointError(f"MODEL_DIR {model_dir}: no config.json; expected an InternVL-Chat or C/G checkpoint")
        from internvl.core.devices import pick_device, resolve_dtype

        try:  # an unknown --dtype, and CUDA on a machine without it: errors before loading
            resolve_dtype(dtype)
        except ConfigError as e:
            raise ConfigError(f"--dtype {dtype}: {e}") from None
        if device is not None and device not in ("auto", "balanced", "balanced_low_0", "sequential"):
            pick_device(device)

        try:
            import uvicorn
        except ImportError:
            raise ConfigError("internvl serve needs uvicorn: pip install 'internvl[serve]'") from None
        from internvl.serving.schemas import Limits

        limits = Limits(
            max_body_bytes=max_body_bytes,
            max_image_bytes=max_image_bytes,
            max_image_pixels=max_image_pixels,
            max_images=max_images,
            max_messages=max_messages,
            max_tokens=max_tokens,
            default_max_tokens=min(default_max_tokens, max_tokens),
            max_embedding_inputs=max_embedding_inputs,
            allow_fetch_hosts=tuple(allow_fetch_host),
        )
        app_ = build_server_app(
            model_dir,
            model_name=model_name,
            api_key=api_key,
            dtype=dtype,
            device=device,
            mode=mode,
            limits=limits,
            max_queue=max_queue,
            max_batch_size=max_batch_size,
            request_timeout=request_timeout,
        )
        if host not in LOOPBACK and not app_.state.settings.api_key:
            log.warning("listening on %s without an API key: anyone who can reach it can use the model", host)
        log.info("serving %s on http://%s:%d (chat page at /)", app_.state.settings.model_name, host, port)
        uvicorn.run(app_, host=host, port=port, log_level="info", timeout_graceful_shutdown=10)
