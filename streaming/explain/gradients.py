"""Gradient attributions of torch models: integrated gradients, and gradient x input.

The only module of streaming.explain that imports torch; streaming.explain.factory imports it
only for networks that are not linear or ReLU MLPs (those are explained in numpy from their
explain.npz), so most workers never load torch for explanations.

Integrated gradients (Sundararajan et al. 2017) with the trapezoid rule on a uniform grid of
the straight path from the baseline b to x, for a whole batch in one call: n rows x (steps + 1)
points are one forward and one backward pass. The path's two ends are the logits at b and at
x, so each row's completeness gap |sum(attr) - (logit(x) - logit(b))| comes for free; rows
above the tolerance are refined by halving the grid (the midpoints are new points, the old
ones are reused) until they meet it or reach ``max_steps``. A ReLU network's gradient jumps
where the path crosses a unit's kink, so how many steps a row needs depends on the row:
refining only the rows that need it keeps the cost near that of the easy rows.

The model runs in float64 (a copy of the float32 weights): float32 sums over hundreds of grid
points would put their own rounding into the gap being measured.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from streaming.explain.types import ExplainError, IGResult

MAX_ROWS_PER_CALL = 32_768
"""Rows (batch rows x grid points) per forward/backward pass: bounds the memory of a call."""


def load_logit_module(model_pt: Path, logit_module: str | None) -> torch.nn.Module:
    """The torch artifact's logit submodule, in float64 and eval mode, gradients off for
    its weights (only inputs need them)."""
    try:
        module = torch.jit.load(str(model_pt), map_location="cpu")
    except (RuntimeError, OSError, ValueError) as exc:
        raise ExplainError(f"{model_pt}: cannot load the torch artifact ({exc})") from exc
    if logit_module is not None:
        if not hasattr(module, logit_module):
            raise ExplainError(
                f"{model_pt}: has no submodule {logit_module!r} (metadata explain.logit_module); "
                "rebuild the model (make models)"
            )
        module = getattr(module, logit_module)
    else:
        module = _LogitOf(module)
    module = module.double().eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module


class _LogitOf(torch.nn.Module):
    """logit(p) of a model that outputs probabilities: for artifacts with no logit submodule
    (in float64 it stays accurate until p is within ~1e-12 of 0 or 1)."""

    def __init__(self, scored: torch.nn.Module) -> None:
        super().__init__()
        self.scored = scored

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.logit(self.scored(x))


def relu_layers(module: torch.nn.Module) -> list[tuple[np.ndarray, np.ndarray]] | None:
    """The (weight, bias) of each Linear when the logit module is ``Linear (ReLU Linear)*``
    with one output (a logistic model is the one-layer case), else None."""
    name = getattr(module, "original_name", type(module).__name__)
    children = list(module.children()) if name == "Sequential" else [module]
    kinds = [getattr(c, "original_name", type(c).__name__) for c in children]
    if not kinds or len(kinds) % 2 == 0:
        return None
    if any(k != ("Linear" if i % 2 == 0 else "ReLU") for i, k in enumerate(kinds)):
        return None
    layers = []
    for child in children[::2]:
        weight = child.weight.detach().cpu().numpy().astype(np.float64)
        bias = child.bias
        bias_np = (
            bias.detach().cpu().numpy().astype(np.float64)
            if bias is not None
            else np.zeros(weight.shape[0])
        )
        layers.append((weight, bias_np))
    if layers[-1][0].shape[0] != 1:
        return None
    return layers


def _logits_and_grads(module: torch.nn.Module, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(m, d) float64 -> logits (m,) and d logit / d input (m, d), in chunks."""
    logits = np.empty(len(points), dtype=np.float64)
    grads = np.empty_like(points)
    for start in range(0, len(points), MAX_ROWS_PER_CALL):
        stop = start + MAX_ROWS_PER_CALL
        inp = torch.from_numpy(points[start:stop]).requires_grad_(True)
        out = module(inp).reshape(-1)
        (grad,) = torch.autograd.grad(out.sum(), inp)
        logits[start:stop] = out.detach().numpy()
        grads[start:stop] = grad.numpy()
    return logits, grads


class IntegratedGradients:
    """Integrated gradients in logit space, batched and refined per row (module docstring)."""

    method = "integrated-gradients"

    def __init__(
        self,
        module: torch.nn.Module,
        baseline: np.ndarray,
        *,
        steps: int = 16,
        max_steps: int = 512,
        tolerance: float = 1e-3,
    ) -> None:
        if steps < 1 or max_steps < steps:
            raise ValueError(f"need 1 <= steps ({steps}) <= max_steps ({max_steps})")
        self.module = module
        self.baseline = np.asarray(baseline, dtype=np.float64).reshape(-1)
        self.steps = steps
        self.max_steps = max_steps
        self.tolerance = tolerance

    def attributions(self, features: np.ndarray) -> np.ndarray:
        """(n, d) -> (n, d) float64 attributions in logit space."""
        return self.explain(features).attributions

    def explain(self, features: np.ndarray) -> IGResult:
        """Attributions, with the grid size and completeness gap of each row."""
        x = np.asarray(features, dtype=np.float64)
        n, d = x.shape
        delta = x - self.baseline
        m = self.steps
        # first grid: m + 1 points, both ends included (they give logit(b) and logit(x))
        alphas = np.arange(m + 1, dtype=np.float64) / m
        logits, grads = self._on_path(delta, alphas)
        logits, grads = logits.reshape(n, m + 1), grads.reshape(n, m + 1, d)
        target = logits[:, -1] - logits[:, 0]
        # trapezoid rule: ends weigh half
        total = grads[:, 1:-1].sum(axis=1) + 0.5 * (grads[:, 0] + grads[:, -1])
        model_rows = n * (m + 1)
        avg = total / m
        steps = np.full(n, m, dtype=np.int64)
        gap = np.abs((delta * avg).sum(axis=1) - target)
        todo = np.flatnonzero(gap > self.tolerance)
        while todo.size and m < self.max_steps:
            # halve the grid for the rows still above the tolerance: new points at midpoints
            mids = (np.arange(m, dtype=np.float64) + 0.5) / m
            _, g = self._on_path(delta[todo], mids)
            total[todo] += g.reshape(todo.size, m, d).sum(axis=1)
            model_rows += todo.size * m
            m *= 2
            avg[todo] = total[todo] / m
            steps[todo] = m
            gap[todo] = np.abs((delta[todo] * avg[todo]).sum(axis=1) - target[todo])
            todo = todo[gap[todo] > self.tolerance]
        return IGResult(delta * avg, steps, gap, model_rows)

    def _on_path(self, delta: np.ndarray, alphas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Logits and gradients at baseline + alpha * delta, for every row and alpha."""
        points = self.baseline + alphas[None, :, None] * delta[:, None, :]
        return _logits_and_grads(self.module, points.reshape(-1, delta.shape[1]))


class GradientTimesInput:
    """gradient(x) x (x - baseline): one pass over the rows, no completeness guarantee.

    Exact for a linear model; for a ReLU network it is the first-order term only, so use it
    where ranking the reasons is enough and integrated gradients cost too much."""

    method = "grad-x-input"

    def __init__(self, module: torch.nn.Module, baseline: np.ndarray) -> None:
        self.module = module
        self.baseline = np.asarray(baseline, dtype=np.float64).reshape(-1)

    def attributions(self, features: np.ndarray) -> np.ndarray:
        """(n, d) -> (n, d) float64."""
        x = np.asarray(features, dtype=np.float64)
        _, grads = _logits_and_grads(self.module, x)
        return grads * (x - self.baseline)
