"""Helpers shared by the CLI verbs: the conventions every verb follows, checked before heavy imports.

Only the standard library, typer and PIL are imported at module level, so a verb can reject a wrong
path or option value in well under a second, before torch and the model stack load.
"""

from __future__ import annotations

import os
from pathlib import Path

from internvl.core.specs import EMBEDDING_MODES as MODES  # standard library only, like this module
from internvl.core.specs import canonical_mode

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff")

_interrupt_note = "nothing was saved"


def set_interrupt_note(note: str) -> None:
    """What a Ctrl-C at this point keeps and how to resume; ``main`` prints it as ``interrupted: <note>``."""
    global _interrupt_note
    _interrupt_note = note


def interrupted_message() -> str:
    return _interrupt_note


def parse_mode(value: str) -> str:
    """``--mode`` case-insensitively (``internvl-g``, ``G``) -> the canonical ``InternVL-C`` / ``InternVL-G``."""
    import typer

    mode = canonical_mode(value)
    if mode is not None:
        return mode
    raise typer.BadParameter(f"{value!r}; expected one of {', '.join(MODES)} (any case, or C / G)")


# The names `internvl.core.devices.resolve_dtype` accepts (a unit test keeps them equal), checked here
# without importing torch.
DTYPE_NAMES = ("fp32", "bf16", "fp16", "float32", "bfloat16", "float16", "auto")


def parse_dtype(value: str | None) -> str | None:
    """typer ``callback=`` for every ``--dtype``: a known name (any case), else one ``error:`` line while the
    arguments are parsed, before anything is imported or loaded."""
    from internvl.core.errors import ConfigError

    if value is None or value.lower() in DTYPE_NAMES:
        return value if value is None else value.lower()
    raise ConfigError(f"--dtype {value}: unknown; expected fp32, bf16 or fp16 (or float32, bfloat16, float16, auto)")


class OutputPath(type(Path())):
    """An ``--output`` value that remembers a trailing separator (pathlib drops it): ``res/`` means a folder."""

    as_folder = False


def parse_output(raw: str) -> Path:
    """typer ``parser=`` for every ``--output``: the path, marked as a folder when it ends with ``/``."""
    p = OutputPath(raw)
    p.as_folder = raw.endswith(("/", os.sep))
    return p


def output_file(output: Path, default_name: str, option: str = "--output") -> Path:
    """The one rule for a verb that writes one result file: ``--output`` names the file, unless it is an
    existing folder or ends with a path separator, in which case the file is ``default_name`` inside it.

    Checked before any work, so a finished run never fails on its output path.
    """
    from internvl.core.errors import ConfigError

    if output.is_dir() or getattr(output, "as_folder", False):
        output = output / default_name
    if output.is_dir():
        raise ConfigError(f"{option} {output}: is a folder; give a file name")
    parent = output.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if parent.exists() and not parent.is_dir():
        raise ConfigError(f"{option} {output}: {parent} is a file, not a folder")
    return output


def output_folder(output: Path, option: str = "--output") -> Path:
    """For verbs that write several files: ``--output`` is a folder (created if missing), never a file."""
    from internvl.core.errors import ConfigError

    if output.exists() and not output.is_dir():
        raise ConfigError(f"{option} {output}: is a file; this command writes several files, give a folder")
    return output


def check_model_dir(path: Path, option: str = "MODEL_DIR") -> Path:
    """A checkpoint folder must exist locally; a hub id (``OpenGVLab/InternVL-14B-224px``) gets the download hint."""
    from internvl.core.errors import CheckpointError
    from internvl.core.io import hub_id_hint

    if path.is_dir():
        return path
    if path.exists():
        raise CheckpointError(f"{option} {path}: is a file; expected a checkpoint folder (config.json, weights)")
    raise CheckpointError(f"{option} {path}: no such folder{hub_id_hint(path)}")


def check_files(paths: list[Path], what: str = "image") -> None:
    """Every path is an existing file (a typo is reported before anything is imported or loaded)."""
    from internvl.core.errors import DataFormatError

    for p in paths:
        if not p.exists():
            raise DataFormatError(f"{what} file not found: {p}")
        if p.is_dir():
            raise DataFormatError(f"{p}: is a folder, expected an {what} file")


def check_images(paths: list[Path], *, decode: bool = False) -> list[tuple[Path, str]]:
    """The paths that cannot be used, with the reason: missing, not an image, over the pixel limit (from
    the header, before decoding), and with ``decode`` truncated or corrupt (full decode)."""
    from internvl.core.errors import DataFormatError
    from internvl.core.images import open_image, read_image

    bad = []
    for p in paths:
        try:
            if decode:
                read_image(p)
            else:
                open_image(p).close()
        except DataFormatError as e:
            bad.append((p, str(e)))
    return bad


def require_images(paths: list[Path], *, decode: bool = False) -> None:
    """`check_images`, raising a `DataFormatError` that names the first bad file and counts the others."""
    from internvl.core.errors import DataFormatError

    bad = check_images(paths, decode=decode)
    if bad:
        more = f" (and {len(bad) - 1} more bad image(s))" if len(bad) > 1 else ""
        raise DataFormatError(f"{bad[0][1]}{more}")


def list_images(images_dir: Path) -> list[Path]:
    """Image files directly inside ``images_dir``, sorted by name."""
    from internvl.core.errors import DataFormatError

    if not images_dir.is_dir():
        raise DataFormatError(f"{images_dir}: not a directory")
    files = sorted(p for p in images_dir.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DataFormatError(f"{images_dir}: no image files ({', '.join(IMAGE_SUFFIXES)})")
    return files


def progress_bar(label: str):
    """A transient rich progress bar; returns (context manager, start(total) -> advance(n) callback)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    progress = Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), transient=True
    )

    def start(description: str, total: int):
        task = progress.add_task(f"{label}: {description}", total=total)
        return lambda n: progress.advance(task, n)

    return progress, start
