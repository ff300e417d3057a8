"""Crash-safe, resumable result files for long evaluation runs.

A run appends each finished batch to a JSONL file (one JSON object per line, flushed and fsynced per
batch), next to a small JSON file holding the settings that produced it. A later run with the same
settings reads the lines back and only does the rest; different settings raise instead of mixing
results. Final outputs are written with ``write_json_atomic`` so a crash never leaves half a file.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path

from internvl.core.errors import ConfigError, DataFormatError
from internvl.core.io import write_json_atomic

logger = logging.getLogger(__name__)

SETTINGS_VERSION = 1


def file_fingerprint(folder: str | os.PathLike, patterns: Sequence[str]) -> dict[str, dict[str, int]]:
    """``{name: {"bytes", "mtime_ns"}}`` of the top-level files of ``folder`` matching a glob of ``patterns``.

    Cheap (no hashing of multi-GB weights) and catches the usual trap: a checkpoint folder that was
    overwritten in place by a newer training run.
    """
    out: dict[str, dict[str, int]] = {}
    for entry in sorted(Path(folder).iterdir()):
        if any(fnmatch.fnmatchcase(entry.name, p) for p in patterns) and entry.is_file():
            st = entry.stat()
            out[entry.name] = {"bytes": st.st_size, "mtime_ns": st.st_mtime_ns}
    return out


class PartialResults:
    """An append-only JSONL of finished results plus the settings file that guards it.

    Use ``PartialResults.open(...)`` to validate/resume or start fresh, then ``append`` per batch. ``done``
    maps each finished key (e.g. an image id) to its row, in file order.
    """

    def __init__(self, path: Path, settings_path: Path, key: str, done: dict, handle) -> None:
        self.path = path
        self.settings_path = settings_path
        self.key = key
        self.done = done
        self.resumed = len(done)
        self._handle = handle

    @classmethod
    def open(
        cls,
        path: str | os.PathLike,
        settings_path: str | os.PathLike,
        settings: dict,
        *,
        details: dict | None = None,
        key: str,
        fields: Sequence[str],
        resume: bool = True,
    ) -> PartialResults:
        """Resume ``path`` when it exists and was written with ``settings``; otherwise start a new one.

        Args:
            path: the JSONL file.
            settings_path: the JSON file recording ``settings`` (compared on resume) and ``details``
                (recorded for the reader, never compared: batch size, device, limit, ...).
            key: the field that identifies a row (``image_id``).
            fields: fields every row must have (``key`` included).
            resume: ``False`` discards an existing file and starts over.

        Raises:
            ConfigError: the existing file was written with different settings, or its settings file is
                missing or unreadable.
            DataFormatError: a complete line of the existing file is not a valid row.
        """
        path, settings_path = Path(path), Path(settings_path)
        settings = json.loads(json.dumps(settings))  # the JSON view (tuples -> lists), as it will read back
        record = {
            "version": SETTINGS_VERSION,
            "settings": settings,
            "details": details or {},
            "results_file": path.name,
        }
        if path.exists() and not resume:
            logger.warning("--overwrite: discarding %s (%d lines) and starting over", path, _count_lines(path))
            path.unlink()
        done: dict = {}
        if path.exists():
            _check_settings(path, settings_path, settings)
            done = _read_rows(path, key, fields)
            logger.debug("resuming from %s: %d results already there", path, len(done))
        write_json_atomic(settings_path, record)  # same settings; the details become this run's
        handle = open(path, "a", encoding="utf-8")
        return cls(path, settings_path, key, done, handle)

    def append(self, rows: Sequence[dict]) -> None:
        """Append ``rows`` (one line each), flush and fsync, so they survive a crash or a power cut."""
        if not rows:
            return
        self._handle.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
        self._handle.flush()
        os.fsync(self._handle.fileno())
        for r in rows:
            self.done[r[self.key]] = r

    def close(self) -> None:
        self._handle.close()

    def __enter__(self) -> PartialResults:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_results(
    path: str | os.PathLike, settings_path: str | os.PathLike, settings: dict, *, key: str, fields: Sequence[str]
) -> dict:
    """The complete rows of a results file another process may own, without modifying it.

    Same checks as `PartialResults.open` (settings guard, valid rows), but an unterminated last line is
    only skipped, never cut off: the file may belong to a process that is still appending (one file per
    rank in a sharded run).
    """
    path, settings_path = Path(path), Path(settings_path)
    settings = json.loads(json.dumps(settings))
    _check_settings(path, settings_path, settings)
    return _read_rows(path, key, fields, truncate=False)


def _count_lines(path: Path) -> int:
    with open(path, "rb") as f:
        return sum(1 for _ in f)


def _check_settings(path: Path, settings_path: Path, settings: dict) -> None:
    fix = f"pass --overwrite to discard {path.name} and start over, or use another --output folder"
    if not settings_path.exists():
        raise ConfigError(
            f"{path} exists but its settings file {settings_path} is missing, so it cannot be checked "
            f"against this run; {fix}"
        )
    try:
        old = json.loads(settings_path.read_text(encoding="utf-8"))["settings"]
    except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{settings_path}: unreadable settings ({type(e).__name__}: {e}); {fix}") from None
    changed = [k for k in sorted(set(old) | set(settings)) if old.get(k) != settings.get(k)]
    if changed:
        lines = "\n".join(f"  {k}: before {old.get(k)!r}, now {settings.get(k)!r}" for k in changed)
        raise ConfigError(
            f"{path} holds results of a run with different settings ({settings_path}):\n{lines}\n"
            f"Resuming would mix them; {fix}."
        )


def _read_rows(path: Path, key: str, fields: Sequence[str], truncate: bool = True) -> dict:
    """The rows of the complete lines; an unterminated last line (a crash mid-write) is cut off the file."""
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1  # bytes after the last newline were never completed
    if end < len(data) and truncate:
        fragment = data[end:].decode("utf-8", errors="replace")
        logger.warning(
            "%s: the last line is incomplete (an interrupted write?), ignoring it and redoing that work: %.120r",
            path,
            fragment,
        )
        with open(path, "r+b") as f:
            f.truncate(end)  # so the next append starts on a fresh line
    done: dict = {}
    for lineno, raw in enumerate(data[:end].split(b"\n")[:-1], start=1):
        if not raw.strip():
            continue
        try:
            row = json.loads(raw.decode("utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise DataFormatError(
                f"{path}:{lineno}: not valid JSON ({e}); only the last line may be incomplete. Fix or delete "
                "the line, or pass --overwrite to start over"
            ) from None
        missing = [f for f in fields if not isinstance(row, dict) or f not in row]
        if missing:
            raise DataFormatError(
                f"{path}:{lineno}: missing field(s) {missing}; expected an object with {list(fields)}. Fix or "
                "delete the line, or pass --overwrite to start over"
            )
        done[row[key]] = row
    return done


__all__ = ["PartialResults", "file_fingerprint", "read_results", "write_json_atomic"]
