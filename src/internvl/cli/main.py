"""The `internvl` entry point: a typer app assembled from one module per verb.

Each module in `COMMAND_MODULES` exposes ``register(app)``. ``main(argv)`` runs the CLI in-process
and returns the exit code, so tests call it without a subprocess.
"""

from __future__ import annotations

import importlib
import logging
import sys

import typer

COMMAND_MODULES = ["info", "demo", "eval", "embed", "classify", "caption", "chat", "synth"]


def build_app() -> typer.Typer:
    app = typer.Typer(
        name="internvl",
        help="InternViT, InternVL-C/G and InternVL-Chat: inspect, embed, caption, chat and evaluate.",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
    )

    @app.callback()
    def _root(verbose: bool = typer.Option(False, "--verbose", "-v", help="Show debug logs.")) -> None:
        logging.basicConfig(
            level=logging.DEBUG if verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
        )

    for name in COMMAND_MODULES:
        importlib.import_module(f"internvl.cli.{name}").register(app)
    return app


def main(argv: list[str] | None = None) -> int:
    """Run the CLI with ``argv`` (default: ``sys.argv[1:]``) and return the exit code."""
    from internvl.core.errors import InternVLError

    app = build_app()
    try:
        app(args=argv if argv is not None else sys.argv[1:], prog_name="internvl", standalone_mode=False)
    except InternVLError as e:
        typer.echo(f"error: {e}", err=True)
        return 2
    except typer.Exit as e:
        return int(e.exit_code or 0)
    except typer.Abort:
        return 1
    except SystemExit as e:
        return int(e.code or 0)
    except Exception as e:
        # Usage errors (bad option, missing argument): click's, or the copy typer >= 0.20 vendors.
        # Show them as click would in standalone mode; anything else is a real bug and propagates.
        if _is_click_exception(e):
            e.show()
            return int(e.exit_code)
        raise
    return 0


def _is_click_exception(e: BaseException) -> bool:
    return any(cls.__name__ == "ClickException" and cls.__module__.endswith("click.exceptions")
               for cls in type(e).__mro__)


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())


if __name__ == "__main__":
    run()
