"""The exception hierarchy: every user-triggerable failure raises a subclass of `InternVLError`.

Messages say what was received, what was expected and how to fix it.
"""

from __future__ import annotations


class InternVLError(Exception):
    """Base class of all errors raised by this package on bad input."""


class ConfigError(InternVLError, ValueError):
    """A configuration value is missing, inconsistent or of the wrong type."""


class CheckpointError(InternVLError):
    """A checkpoint directory cannot be read or does not match the model."""


class DataFormatError(InternVLError, ValueError):
    """A data or annotation file does not have the expected format (names file, line and field)."""


class RequestError(InternVLError, ValueError):
    """A chat request or generation option is invalid (a server answers it with HTTP 400)."""


class UnknownNameError(InternVLError, KeyError):
    """A registry lookup (model preset, dataset, template) for a name that is not registered."""


class UnknownModelError(UnknownNameError):
    """A lookup for a model / preset name that is not registered (kept as the historical name)."""
