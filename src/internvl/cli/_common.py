"""Helpers shared by the CLI verbs: image folder listing and a transient progress bar."""

from __future__ import annotations

from pathlib import Path

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff")


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

    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                        transient=True)

    def start(description: str, total: int):
        task = progress.add_task(f"{label}: {description}", total=total)
        return lambda n: progress.advance(task, n)

    return progress, start
