"""Training: stage-2 retrieval fine-tuning (losses, optimizer groups, recipes, the engine).

Imports evaluation, inference, models, data and core; never serving or cli (tests/unit/test_layering.py).
"""

from __future__ import annotations

# The oldest transformers the training stack (Trainer hooks, accumulation, DeepSpeed glue) was tested on;
# inference and evaluation support older releases (pyproject.toml). The `train` extra requires it too.
MIN_TRANSFORMERS = (5, 23)


def training_supported() -> bool:
    """Whether the installed transformers is one the training engine was tested with."""
    from internvl.core.compat import transformers_version

    return transformers_version() >= MIN_TRANSFORMERS


def check_training_stack() -> None:
    """A clear error before any model loads when transformers is older than the training engine needs."""
    if not training_supported():
        from internvl.core.compat import transformers_version
        from internvl.core.errors import ConfigError

        have = ".".join(map(str, transformers_version()))
        need = ".".join(map(str, MIN_TRANSFORMERS))
        raise ConfigError(f"training needs transformers >= {need} (installed {have}): pip install 'internvl[train]'")
