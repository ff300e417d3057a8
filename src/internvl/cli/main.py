"""The `internvl` entry point: a typer app assembled from one module per verb.

Each module in `COMMAND_MODULES` exposes ``register(app)``. ``main(argv)`` runs the CLI in-process
and returns the exit code, so tests call it without a subprocess.
"""

from __future__ import annotations

import importlib
import logging
import sys

import typer

COMMAND_MODULES = ["info", "demo", "eval", "embed", "classify", "caption", "chat", "data", "train", "serve"]


def _print_version(value: bool) -> None:
    if value:
        from internvl import __version__

        typer.echo(f"internvl {__version__}")
        raise typer.Exit(0)


def build_app() -> typer.Typer:
    app = typer.Typer(
        name="internvl",
        help="InternViT, InternVL-C/G and InternVL-Chat: inspect, embed, caption, chat and evaluate.",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
    )

    @app.callback()
    def _root(
        verbose: bool = typer.Option(False, "--verbose", "-v", help="Show debug logs."),
        version: bool = typer.Option(
            False, "--version", is_eager=True, callback=_print_version, help="Print the version and exit."
        ),
        max_image_pixels: int | None = typer.Option(
            None,
            "--max-image-pixels",
            min=1,
            envvar="INTERNVL_MAX_IMAGE_PIXELS",
            help="Refuse images with more pixels than this, before decoding (default 89,478,485 = PIL's limit).",
        ),
    ) -> None:
        if max_image_pixels is not None:
            import os

            os.environ["INTERNVL_MAX_IMAGE_PIXELS"] = str(max_image_pixels)  # DataLoader workers inherit it
        logging.basicConfig(
            level=logging.DEBUG if verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
        )
        if verbose:  # PIL logs every PNG chunk of every image at debug level: it would bury ours
            logging.getLogger("PIL").setLevel(logging.INFO)

    for name in COMMAND_MODULES:
        importlib.import_module(f"internvl.cli.{name}").register(app)
    return app


def main(argv: list[str] | None = None) -> int:
    """Run the CLI with ``argv`` (default: ``sys.argv[1:]``) and return the exit code."""
    from internvl.cli._common import interrupted_message, set_interrupt_note
    from internvl.core.errors import InternVLError

    set_interrupt_note("nothing was saved")  # a command that saves as it goes replaces it

    app = build_app()
    try:
        # With standalone_mode=False click returns the code of a `typer.Exit` instead of raising it, and
        # typer turns Ctrl-C (KeyboardInterrupt) into a returned 130.
        code = app(args=argv if argv is not None else sys.argv[1:], prog_name="internvl", standalone_mode=False)
    except InternVLError as e:
        _close_progress_bars()  # an error raised mid-loop starts on a line of its own too
        typer.echo(f"error: {one_line(e)}", err=True)
        return 2
    except KeyboardInterrupt:
        code = 130
    except typer.Exit as e:
        return int(e.exit_code or 0)
    except typer.Abort:
        code = 130  # click's Abort: Ctrl-C or end of input at a prompt
    except SystemExit as e:
        return int(e.code or 0)
    except Exception as e:
        # Usage errors (bad option, missing argument): click's, or the copy typer >= 0.20 vendors.
        # Show them as click would in standalone mode; anything else is a real bug and propagates.
        if _is_click_exception(e):
            e.show()
            return int(e.exit_code)
        raise
    if code == 130:
        _close_progress_bars()  # so the note starts on a line of its own, after the bar's last state
        typer.echo(f"interrupted: {interrupted_message()}", err=True)
    return code if isinstance(code, int) else 0


def _close_progress_bars() -> None:
    """Close tqdm bars an interrupt or error left open (each ends its line), so messages after it are not glued on."""
    tqdm_module = sys.modules.get("tqdm")
    for bar in list(getattr(getattr(tqdm_module, "tqdm", None), "_instances", ()) or ()):
        bar.close()


def one_line(e: BaseException) -> str:
    """The message of ``e``; for an error re-raised from a DataLoader worker, only the original message.

    torch re-raises a worker's exception with the worker's whole traceback in the message; its last
    line is ``module.ErrorClass: original message``.
    """
    text = str(e)
    if "Original Traceback" not in text:
        return text
    last = [line for line in text.strip().splitlines() if line.strip()][-1]
    name, sep, rest = last.partition(": ")
    return rest if sep and "." in name and " " not in name else last


def _is_click_exception(e: BaseException) -> bool:
    return any(
        cls.__name__ == "ClickException" and cls.__module__.endswith("click.exceptions") for cls in type(e).__mro__
    )


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())


if __name__ == "__main__":
    run()
