"""Moved to `internvl.models.checkpoint_info` (checkpoint I/O, not inference); re-exported for old imports."""

from internvl.models.checkpoint_info import describe_checkpoint  # noqa: F401
