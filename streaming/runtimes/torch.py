"""TorchScript models on cpu or cuda.

On cuda, a batch of a captured size is one CUDA graph that holds the whole trip: a copy from a
pinned host buffer to the device, the model, and a copy back into a pinned host buffer. The
Python side writes the rows into the input buffer (numpy), replays the graph, synchronises the
stream and reads the scores: two calls that release the GIL. Each release matters in this
engine, because the decoding thread holds the GIL in between, so every return costs up to the
switch interval; the eager trip (copy, copy, model, copy, synchronise) pays it five times. Where
the installed torch cannot capture the copies, the graph holds the model alone and the copies
run around it; where it cannot capture at all, or a graph's scores differ from eager ones at
warm-up, that size runs eagerly. A batch smaller than a captured size is padded up to it; the
padding rows' scores are dropped before anyone sees them.

The choices (which size a batch runs at, graph or eager, which dtype) are plain functions,
tested on cpu; only the copies and the replay need a GPU.
"""

from __future__ import annotations

import bisect
import logging
from dataclasses import dataclass, field
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


@dataclass(slots=True)
class CapturedGraph:
    """A CUDA graph for one batch size and the buffers it reads and writes.

    With ``copies`` the graph also copies ``host_in`` to the device and the scores back into
    ``host_out``; without, the caller does both around the replay.
    """

    graph: torch.cuda.CUDAGraph
    host_in: torch.Tensor  # pinned (rows, dim) float32
    host_out: torch.Tensor  # pinned (rows,) float32
    static_in: torch.Tensor  # device (rows, dim) float32
    static_out: torch.Tensor  # device (rows,) float32
    copies: bool
    host_in_rows: np.ndarray = field(init=False)  # numpy views of the pinned buffers
    host_out_rows: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.host_in_rows = self.host_in.numpy()
        self.host_out_rows = self.host_out.numpy()

    @property
    def rows(self) -> int:
        return int(self.host_in.shape[0])


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
    OPTIONS = ("half", "cuda_graphs")

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
        self._graphs: dict[int, CapturedGraph] = {}
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
        """Pinned buffers of the eager path, grown to hold ``rows``."""
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
            log.info(
                "%s/%s on %s: CUDA graphs at %s (copies inside: %s); other sizes run eagerly",
                self.metadata.name,
                self.metadata.version,
                self.device,
                self._captured,
                [n for n in self._captured if self._graphs[n].copies],
            )

    def _capture(self, rows: int) -> None:
        """A graph at ``rows`` with the copies inside, else without them, else none."""
        for copies in (True, False):
            graph = self._try_capture(rows, copies)
            if graph is None:
                continue
            if self._agrees_with_eager(graph):
                self._graphs[rows] = graph
                return
            log.warning(
                "cuda graph at batch %d (copies inside: %s) scores unlike eager execution; "
                "not used",
                rows,
                copies,
            )
        log.warning("no cuda graph at batch %d: that size runs eagerly", rows)

    def _try_capture(self, rows: int, copies: bool) -> CapturedGraph | None:
        assert self._model is not None
        model, dtype, dev = self._model, self.dtype, self._torch_device
        dim = self.metadata.input_dim
        host_in = torch.zeros((rows, dim), dtype=torch.float32).pin_memory()
        host_out = torch.zeros((rows,), dtype=torch.float32).pin_memory()
        static_in = torch.zeros((rows, dim), dtype=torch.float32, device=dev)

        def forward() -> torch.Tensor:
            return model(static_in.to(dtype)).reshape(-1).float()

        try:
            # cuda:N: capture on that device's streams (torch's default capture stream is
            # made once, on whatever device is current then)
            with torch.cuda.device(dev):
                current = torch.cuda.current_stream(dev)
                side = torch.cuda.Stream(dev)
                side.wait_stream(current)
                with torch.inference_mode(), torch.cuda.stream(side):
                    for _ in range(3):  # warm-up on a side stream, as capture requires
                        static_in.copy_(host_in, non_blocking=True)
                        host_out.copy_(forward(), non_blocking=True)
                current.wait_stream(side)
                torch.cuda.synchronize(dev)
                graph = torch.cuda.CUDAGraph()
                with torch.inference_mode(), torch.cuda.graph(graph, stream=side):
                    if copies:
                        static_in.copy_(host_in, non_blocking=True)
                    static_out = forward()
                    if copies:
                        host_out.copy_(static_out, non_blocking=True)
                torch.cuda.synchronize(dev)
        except Exception as exc:  # noqa: BLE001 - "where the model allows"
            log.info("cuda graph capture at batch %d (copies: %s) failed: %s", rows, copies, exc)
            return None
        return CapturedGraph(graph, host_in, host_out, static_in, static_out, copies)

    def _agrees_with_eager(self, graph: CapturedGraph) -> bool:
        """A graph serves traffic only once it has scored a random batch as eager code does."""
        assert self._model is not None
        rows = graph.rows
        x = np.random.default_rng(rows).standard_normal((rows, self.metadata.input_dim))
        x = x.astype(np.float32)
        try:
            got = self._replay(graph, x)
        except Exception as exc:  # noqa: BLE001 - a graph that cannot replay is not used
            log.info("cuda graph at batch %d failed its first replay: %s", rows, exc)
            return False
        with torch.inference_mode():
            inputs = torch.from_numpy(x).to(self._torch_device, self.dtype)
            want = self._model(inputs).reshape(-1).float().cpu().numpy()
        return bool(np.allclose(got, want, rtol=1e-3 if self.half else 1e-5, atol=1e-5))

    # ------------------------------------------------------------------ inference

    def _run(self, features: np.ndarray) -> np.ndarray:
        assert self._model is not None, "load() first"
        if not self.on_cuda:
            with torch.inference_mode():
                return self._model(torch.from_numpy(features)).reshape(-1).numpy()
        plan = plan_batch(features.shape[0], self._captured, self.cuda_graphs)
        if plan.graph:
            return self._replay(self._graphs[plan.size], features)
        return self._run_eager(features)

    def _replay(self, graph: CapturedGraph, features: np.ndarray) -> np.ndarray:
        rows = features.shape[0]
        host_in, host_out = graph.host_in_rows, graph.host_out_rows
        host_in[:rows] = features
        if graph.rows > rows:
            host_in[rows:] = 0.0  # padding rows: scored, never returned
        with torch.inference_mode():
            if not graph.copies:
                graph.static_in.copy_(graph.host_in, non_blocking=True)
            graph.graph.replay()
            if not graph.copies:
                graph.host_out.copy_(graph.static_out, non_blocking=True)
        self._synchronize()
        return host_out[:rows].copy()

    def _run_eager(self, features: np.ndarray) -> np.ndarray:
        assert self._model is not None
        rows = features.shape[0]
        self._ensure_buffers(rows)
        host_in, host_out = self._host_in, self._host_out
        assert host_in is not None and host_out is not None and self._dev_in is not None
        host_in[:rows].copy_(torch.from_numpy(features))
        with torch.inference_mode():
            dev_in = self._dev_in[:rows]
            dev_in.copy_(host_in[:rows], non_blocking=True)
            out = self._model(dev_in).reshape(-1)
            host_out[:rows].copy_(out.float(), non_blocking=True)
        self._synchronize()
        return host_out[:rows].numpy().copy()

    def _synchronize(self) -> None:
        """Wait for the batch's copies and kernels (nothing to wait for on cpu)."""
        if self.on_cuda:
            torch.cuda.current_stream(self._torch_device).synchronize()
