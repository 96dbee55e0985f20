"""Runtime name -> the module and class that implement it, imported only when asked for, so
``import streaming`` never loads torch or onnxruntime. A third runtime is one module and one
line here."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from streaming.runtimes.base import Runtime

RUNTIMES: dict[str, tuple[str, str]] = {
    "onnx": ("streaming.runtimes.onnx", "OnnxRuntime"),
    "torch": ("streaming.runtimes.torch", "TorchRuntime"),
}
FRAMEWORKS = tuple(RUNTIMES)


def create_runtime(
    framework: str, directory: Path, device: str = "cpu", threads: int = 1, **options: Any
) -> Runtime:
    """The runtime named ``framework``; ``options`` are its own keyword arguments (a runtime
    that takes none refuses any that is set)."""
    entry = RUNTIMES.get(framework)
    if entry is None:
        raise ValueError(f"unknown runtime {framework!r}; choose one of {', '.join(FRAMEWORKS)}")
    module, name = entry
    cls: type[Runtime] = getattr(importlib.import_module(module), name)
    allowed = set(getattr(cls, "OPTIONS", ()))
    unknown = sorted(k for k, v in options.items() if k not in allowed and v)
    if unknown:
        raise ValueError(f"{' and '.join(unknown)}: not options of runtime {framework}")
    kwargs = {k: v for k, v in options.items() if k in allowed}
    return cls(directory, device, threads, **kwargs)
