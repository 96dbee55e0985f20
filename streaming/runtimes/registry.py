"""Framework name -> runtime class, imported lazily so ``import streaming`` never loads torch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from streaming.runtimes.base import Runtime

FRAMEWORKS = ("onnx", "torch")


def create_runtime(
    framework: str, directory: Path, device: str = "cpu", threads: int = 1, **options: Any
) -> Runtime:
    if framework == "onnx":
        from streaming.runtimes.onnx import OnnxRuntime

        if options.get("half") or options.get("cuda_graphs"):
            raise ValueError("half and cuda_graphs are options of runtime: torch")
        return OnnxRuntime(directory, device, threads)
    if framework == "torch":
        from streaming.runtimes.torch import TorchRuntime

        return TorchRuntime(directory, device, threads, **options)
    raise ValueError(f"unknown runtime {framework!r}; choose one of {', '.join(FRAMEWORKS)}")
