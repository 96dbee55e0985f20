"""TorchScript models on cpu or cuda.

On cuda a batch goes: numpy -> a pinned host buffer (reused) -> non-blocking copy to a static
device buffer -> a CUDA graph replay captured for that batch size (or eager) -> non-blocking
copy into a pinned output buffer -> one stream synchronise. A batch smaller than a captured
size is padded up to it; the padding rows' scores are dropped before anyone sees them.

The choices (which size a batch runs at, graph or eager, which dtype) are plain functions,
tested on cpu; only the copies and the replay need a GPU.
"""

from __future__ import annotations

import bisect
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from streaming.runtimes.base import ModelLoadError, Runtime

log = logging.getLogger(__name__)

# Padding a batch of 3 to a graph of 256 would waste the GPU: pad at most this factor.
MAX_PAD_FACTOR = 2.0


@dataclass(frozen=True, slots=True)
class RunPlan:
    """How one batch of ``rows`` runs: at ``size`` rows (>= rows), by graph replay or eagerly."""

    rows: int
    size: int
    graph: bool


def plan_batch(rows: int, captured: list[int], graphs: bool) -> RunPlan:
    """Run at the smallest captured size that holds the batch without too much padding."""
    if graphs and captured:
        i = bisect.bisect_left(captured, rows)
        if i < len(captured) and captured[i] <= rows * MAX_PAD_FACTOR:
            return RunPlan(rows, captured[i], True)
    return RunPlan(rows, rows, False)


def buffer_rows(rows: int) -> int:
    """Pinned buffers grow in powers of two so that a stream of odd sizes reallocates rarely."""
    return 1 << max(0, (rows - 1).bit_length())


def parse_device(device: str) -> tuple[str, int | None]:
    if device == "cpu":
        return "cpu", None
    if device == "cuda":
        return "cuda", 0
    if device.startswith("cuda:") and device[5:].isdigit():
        return "cuda", int(device[5:])
    raise ModelLoadError(f"device {device!r}: expected cpu, cuda or cuda:N")


def check_device(device: str, half: bool) -> None:
    """Fail at start, with the fix, when the device cannot run this configuration."""
    kind, index = parse_device(device)
    if kind == "cpu":
        if half:
            raise ModelLoadError(
                "half: true is for cuda; on cpu float16 matmuls are slower than float32, "
                "so set half: false (or device: cuda)"
            )
        return
    if not torch.cuda.is_available():
        built = "with" if torch.version.cuda else "without"
        raise ModelLoadError(
            f"device {device!r} requested but torch sees no CUDA device (torch "
            f"{torch.__version__}, built {built} CUDA); set device: cpu or run on a GPU node"
        )
    if index is not None and index >= torch.cuda.device_count():
        raise ModelLoadError(
            f"device {device!r} requested but only {torch.cuda.device_count()} CUDA device(s) "
            "are visible; check CUDA_VISIBLE_DEVICES and the pod's nvidia.com/gpu limit"
        )


class TorchRuntime(Runtime):
    framework = "torch"

    def __init__(
        self,
        directory: Path,
        device: str = "cpu",
        threads: int = 1,
        half: bool = False,
        cuda_graphs: bool | None = None,
    ) -> None:
        super().__init__(directory, device, threads)
        self.half = half
        kind, _ = parse_device(device)
        self.on_cuda = kind == "cuda"
        self.cuda_graphs = self.on_cuda if cuda_graphs is None else cuda_graphs
        if self.cuda_graphs and not self.on_cuda:
            raise ModelLoadError("cuda_graphs: true needs device: cuda")
        self._model: torch.jit.ScriptModule | None = None
        self._graphs: dict[int, tuple[torch.cuda.CUDAGraph, torch.Tensor, torch.Tensor]] = {}
        self._captured: list[int] = []
        self._host_in: torch.Tensor | None = None
        self._host_out: torch.Tensor | None = None
        self._dev_in: torch.Tensor | None = None

    @property
    def dtype(self) -> torch.dtype:
        return torch.float16 if self.half else torch.float32

    def load(self) -> None:
        check_device(self.device, self.half)
        path = self.metadata.verified_file(self.directory, "model.pt")
        self._torch_device = torch.device(self.device)
        if not self.on_cuda:
            torch.set_num_threads(self.threads)
        try:
            model = torch.jit.load(str(path), map_location=self._torch_device)
        except Exception as exc:
            raise ModelLoadError(f"{path}: torch cannot load it: {exc}") from exc
        model.eval()
        if self.half:
            model = model.half()
        self._model = model

    # ------------------------------------------------------------------ cuda buffers

    def _ensure_buffers(self, rows: int) -> None:
        have = 0 if self._host_in is None else self._host_in.shape[0]
        if rows <= have:
            return
        n = buffer_rows(rows)
        dim = self.metadata.input_dim
        self._host_in = torch.zeros((n, dim), dtype=torch.float32).pin_memory()
        self._host_out = torch.zeros((n,), dtype=torch.float32).pin_memory()
        self._dev_in = torch.zeros((n, dim), dtype=self.dtype, device=self._torch_device)

    def warm_up(self, batch_sizes: tuple[int, ...] = (1,)) -> None:
        super().warm_up(batch_sizes)
        if self.on_cuda and self.cuda_graphs:
            for n in sorted(set(batch_sizes)):
                self._capture(n)
            self._captured = sorted(self._graphs)

    def _capture(self, rows: int) -> None:
        """Capture a CUDA graph at ``rows``; a model that cannot be captured runs eagerly."""
        assert self._model is not None
        static_in = torch.zeros(
            (rows, self.metadata.input_dim), dtype=self.dtype, device=self._torch_device
        )
        try:
            side = torch.cuda.Stream(self._torch_device)
            side.wait_stream(torch.cuda.current_stream(self._torch_device))
            with torch.inference_mode(), torch.cuda.stream(side):
                for _ in range(3):
                    self._model(static_in)
            torch.cuda.current_stream(self._torch_device).wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.inference_mode(), torch.cuda.graph(graph):
                static_out = self._model(static_in).reshape(-1)
            self._graphs[rows] = (graph, static_in, static_out)
        except Exception as exc:  # noqa: BLE001 - "where the model allows"
            log.warning("cuda graph capture at batch %d failed (%s); running eagerly", rows, exc)

    # ------------------------------------------------------------------ inference

    def _run(self, features: np.ndarray) -> np.ndarray:
        assert self._model is not None, "load() first"
        if not self.on_cuda:
            with torch.inference_mode():
                return self._model(torch.from_numpy(features)).reshape(-1).numpy()
        return self._run_cuda(features)

    def _run_cuda(self, features: np.ndarray) -> np.ndarray:
        assert self._model is not None
        rows = features.shape[0]
        plan = plan_batch(rows, self._captured, self.cuda_graphs)
        self._ensure_buffers(plan.size)
        host_in, host_out = self._host_in, self._host_out
        assert host_in is not None and host_out is not None and self._dev_in is not None
        host_in[:rows].copy_(torch.from_numpy(features))
        if plan.size > rows:
            host_in[rows : plan.size].zero_()  # padding rows: scored, never returned
        stream = torch.cuda.current_stream(self._torch_device)
        with torch.inference_mode():
            if plan.graph:
                graph, static_in, static_out = self._graphs[plan.size]
                static_in.copy_(host_in[: plan.size], non_blocking=True)
                graph.replay()
                out = static_out
            else:
                dev_in = self._dev_in[: plan.size]
                dev_in.copy_(host_in[: plan.size], non_blocking=True)
                out = self._model(dev_in).reshape(-1)
            host_out[: plan.size].copy_(out.float(), non_blocking=True)
        stream.synchronize()
        return host_out[:rows].numpy().copy()
