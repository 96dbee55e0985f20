"""onnxruntime on cpu, or on cuda where the installed onnxruntime has the CUDA provider."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

from streaming.runtimes.base import ModelLoadError, Runtime


def providers_for(device: str, available: list[str]) -> list[str | tuple[str, dict[str, str]]]:
    """Execution providers for a device; a clear error when cuda is asked for but missing."""
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if "CUDAExecutionProvider" not in available:
        raise ModelLoadError(
            f"device {device!r} requested but this onnxruntime ({ort.__version__}) has no CUDA "
            f"provider (available: {', '.join(available)}); install onnxruntime-gpu on a CUDA "
            "machine, use runtime: torch, or set device: cpu"
        )
    device_id = device.split(":", 1)[1] if ":" in device else "0"
    return [("CUDAExecutionProvider", {"device_id": device_id}), "CPUExecutionProvider"]


class OnnxRuntime(Runtime):
    framework = "onnx"

    def __init__(self, directory: Path, device: str = "cpu", threads: int = 1) -> None:
        super().__init__(directory, device, threads)
        self._session: ort.InferenceSession | None = None

    def load(self) -> None:
        path = self.metadata.verified_file(self.directory, "model.onnx")
        providers = providers_for(self.device, ort.get_available_providers())
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = self.threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # The worker's other threads need the cores between batches: do not spin.
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self._session = ort.InferenceSession(str(path), opts, providers=providers)
        except Exception as exc:
            raise ModelLoadError(f"{path}: onnxruntime cannot load it: {exc}") from exc
        self._input = self._session.get_inputs()[0].name
        self._outputs = [self._session.get_outputs()[0].name]

    def _run(self, features: np.ndarray) -> np.ndarray:
        assert self._session is not None, "load() first"
        return self._session.run(self._outputs, {self._input: features})[0]
