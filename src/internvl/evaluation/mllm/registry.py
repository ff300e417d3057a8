"""Benchmark name -> `Benchmark` instance."""

from __future__ import annotations

import difflib

from internvl.core.errors import UnknownModelError
from internvl.evaluation.mllm.base import Benchmark
from internvl.evaluation.mllm.benchmarks import BENCHMARKS

_REGISTRY: dict[str, type[Benchmark]] = {cls.name: cls for cls in BENCHMARKS}


def list_benchmarks() -> list[str]:
    return list(_REGISTRY)


def get_benchmark(name: str) -> Benchmark:
    """The registered benchmark; an unknown name lists the close matches and every name."""
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, _REGISTRY, n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise UnknownModelError(f"unknown benchmark {name!r}{hint}; known: {', '.join(_REGISTRY)}")
    return _REGISTRY[name]()


__all__ = ["get_benchmark", "list_benchmarks"]
