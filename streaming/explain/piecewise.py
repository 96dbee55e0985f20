"""Exact integrated gradients of a ReLU network (Linear, ReLU, ..., Linear), in numpy.

Along the straight path x(a) = b + a (x - b), a in [0, 1], a ReLU network's logit is piecewise
linear, so its gradient is constant between the points where some unit's pre-activation
crosses zero. Find those points and the integral of the gradient is a finite sum: each linear
piece's length times the gradient inside it. Completeness then holds to float64 rounding.

The points are found layer by layer. Between two consecutive known points, every earlier layer
is linear in a, so the next layer's pre-activations are linear there too; a unit whose sign
differs at the two ends crosses zero once, where linear interpolation puts it. Adding those
crossings makes the layer's output linear between consecutive points, and so on upwards.

Why not a uniform grid: measured on the fraud v2 MLP (64-32), 512 trapezoid steps still left
completeness gaps up to 0.015 for rows above the review threshold, because the gradient jumps at
each kink and rows far from the mean cross many. These rows had 20-80 pieces each.

All rows of a batch are one flat array of (row, a) points: a few matmuls per layer, no loop over
rows. The weights come from the model's torch artifact (streaming.explain.gradients).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from streaming.explain.types import IGResult

Layer = tuple[np.ndarray, np.ndarray]
"""(weight (out, in), bias (out,)), float64."""


class PiecewiseLinearIG:
    """Integrated gradients, exact, for ``Linear (ReLU Linear)*`` with one output (the logit)."""

    method = "integrated-gradients"

    def __init__(self, layers: Sequence[Layer], baseline: np.ndarray) -> None:
        self.layers = [
            (np.asarray(w, dtype=np.float64), np.asarray(c, dtype=np.float64)) for w, c in layers
        ]
        self.baseline = np.asarray(baseline, dtype=np.float64).reshape(-1)
        if self.layers[0][0].shape[1] != self.baseline.size or self.layers[-1][0].shape[0] != 1:
            raise ValueError(
                f"layers take {self.layers[0][0].shape[1]} inputs and give "
                f"{self.layers[-1][0].shape[0]} outputs; expected {self.baseline.size} and 1"
            )

    def attributions(self, features: np.ndarray) -> np.ndarray:
        """(n, d) -> (n, d) float64 attributions in logit space."""
        return self.explain(features).attributions

    def logits(self, features: np.ndarray) -> np.ndarray:
        """(n, d) -> (n,) float64 logits of the same network."""
        h = np.asarray(features, dtype=np.float64)
        for w, c in self.layers[:-1]:
            h = np.maximum(h @ w.T + c, 0.0)
        w, c = self.layers[-1]
        return (h @ w.T + c).reshape(-1)

    def explain(self, features: np.ndarray) -> IGResult:
        """Attributions, with the pieces of each row's path and its completeness gap."""
        x = np.asarray(features, dtype=np.float64)
        n, d = x.shape
        delta = x - self.baseline
        rows = np.repeat(np.arange(n), 2)
        alphas = np.tile(np.array([0.0, 1.0]), n)
        for depth in range(1, len(self.layers)):
            z = self._pre_activations(delta, rows, alphas, depth)
            rows, alphas = self._add_crossings(rows, alphas, z)
        # pieces between consecutive points of one row; the gradient at each midpoint
        same = rows[1:] == rows[:-1]
        lo, hi, piece_rows = alphas[:-1][same], alphas[1:][same], rows[:-1][same]
        length = hi - lo
        grads = self._gradients(delta, piece_rows, (lo + hi) / 2)
        avg = np.zeros((n, d))
        np.add.at(avg, piece_rows, grads * length[:, None])
        attr = delta * avg
        ends = self.logits(np.concatenate([x, self.baseline[None]]))
        gap = np.abs(attr.sum(axis=1) - (ends[:n] - ends[n]))
        pieces = np.bincount(piece_rows, minlength=n)
        return IGResult(attr, pieces, gap, model_rows=len(alphas) + len(lo))

    def _pre_activations(
        self, delta: np.ndarray, rows: np.ndarray, alphas: np.ndarray, depth: int
    ) -> np.ndarray:
        """Pre-activations of hidden layer ``depth`` (1 = the first) at each (row, a) point."""
        h = self.baseline + alphas[:, None] * delta[rows]
        for i, (w, c) in enumerate(self.layers[:depth]):
            z = h @ w.T + c
            if i + 1 < depth:
                h = np.maximum(z, 0.0)
        return z

    @staticmethod
    def _add_crossings(
        rows: np.ndarray, alphas: np.ndarray, z: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """The points plus every zero crossing of ``z`` between consecutive points of a row,
        sorted by (row, a)."""
        same = rows[1:] == rows[:-1]
        za, zb = z[:-1], z[1:]
        pair, _unit = np.nonzero(((za * zb) < 0) & same[:, None])
        if pair.size:
            a0, a1 = alphas[pair], alphas[pair + 1]
            zp, zq = za[pair, _unit], zb[pair, _unit]
            cross = a0 + (a1 - a0) * (zp / (zp - zq))
            rows = np.concatenate([rows, rows[pair]])
            alphas = np.concatenate([alphas, cross])
        order = np.lexsort((alphas, rows))
        return rows[order], alphas[order]

    def _gradients(self, delta: np.ndarray, rows: np.ndarray, alphas: np.ndarray) -> np.ndarray:
        """d logit / d input at each (row, a) point: the active units' weights multiplied."""
        h = self.baseline + alphas[:, None] * delta[rows]
        masks = []
        for w, c in self.layers[:-1]:
            z = h @ w.T + c
            masks.append(z > 0)
            h = np.maximum(z, 0.0)
        g = np.broadcast_to(self.layers[-1][0], (len(alphas), self.layers[-1][0].shape[1]))
        for (w, _), mask in zip(reversed(self.layers[:-1]), reversed(masks), strict=True):
            g = (g * mask) @ w
        return g
