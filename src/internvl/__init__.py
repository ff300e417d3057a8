"""internvl: InternViT, InternVL-C/G and InternVL-Chat on current PyTorch and transformers.

Loads the official checkpoints without ``trust_remote_code`` and reproduces the reference numerics.
Heavy submodules are imported lazily so that ``import internvl`` stays cheap.
"""

from __future__ import annotations

__version__ = "0.1.0"

from internvl.core.errors import (  # noqa: F401
    CheckpointError,
    ConfigError,
    DataFormatError,
    InternVLError,
    UnknownModelError,
)
