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
rows. The first layer is linear in a, so its crossings are solved for, not searched. Each deeper
layer is computed (a matmul) only at the points known before it; at the crossings it adds, every
layer found so far is linear, so their values there are interpolated, and a piece's masks come
from its two ends. The layers under the last hidden one keep their masks between two of the
points known before it, so the pieces of such a group are summed before the backward pass: on
the fraud v2 MLP (64-32; ~38 first-layer points and ~54 pieces a row) that is ~75 rows of matmul
a row where computing each piece's masks with a forward pass took ~145.
The weights come from the model's torch artifact (streaming.explain.gradients).

A network with two hidden layers (the fraud models') has the same integral in C as well
(``C_IG``, streaming/explain/_relu_ig.c; setup.py builds it where a compiler is found): the
first layer's pieces are walked in order, the second layer's values kept up to date by one
column per crossing and its on-lengths taken per piece in closed form, so a row costs about
15,000 multiply-adds instead of 200,000; a call of 16 rows or more lets go of the GIL while it
runs (the explainer shares the process with the decoding thread; a shorter call would spend
more handing the GIL over and back). ``attributions`` uses it; ``explain`` (pieces,
completeness gap) and the numpy below remain the reference the tests hold it to.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from streaming.explain.types import IGResult

try:
    from streaming.explain import _relu_ig as C_IG
except ImportError:  # built without a C compiler: numpy alone, the same attributions
    C_IG = None  # type: ignore[assignment]

Layer = tuple[np.ndarray, np.ndarray]
"""(weight (out, in), bias (out,)), float64."""


class PiecewiseLinearIG:
    """Integrated gradients, exact, for ``Linear (ReLU Linear)*`` with one output (the logit)."""

    method = "integrated-gradients"

    def __init__(
        self, layers: Sequence[Layer], baseline: np.ndarray, native: bool = C_IG is not None
    ) -> None:
        """``native``: a two-hidden-layer network's ``attributions`` in C (module docstring)."""
        self.layers = [
            (np.asarray(w, dtype=np.float64), np.asarray(c, dtype=np.float64)) for w, c in layers
        ]
        self.baseline = np.asarray(baseline, dtype=np.float64).reshape(-1)
        if self.layers[0][0].shape[1] != self.baseline.size or self.layers[-1][0].shape[0] != 1:
            raise ValueError(
                f"layers take {self.layers[0][0].shape[1]} inputs and give "
                f"{self.layers[-1][0].shape[0]} outputs; expected {self.baseline.size} and 1"
            )
        w1, c1 = self.layers[0]
        self._w1t = np.ascontiguousarray(w1.T)
        self._z0 = self.baseline @ w1.T + c1
        """The first layer's pre-activations at the baseline: z1(a) = z0 + a * (delta @ w1.T)."""
        self._hidden = [(np.ascontiguousarray(w.T), c) for w, c in self.layers[1:]]
        self._native: tuple[np.ndarray, ...] | None = None
        """C_IG's weights (w1, z0, W2.T, c2, (W2 * w3).T, baseline), for two hidden layers."""
        if native and C_IG is not None and len(self.layers) == 3:
            (w2, c2), (w3, _) = self.layers[1], self.layers[2]
            self._native = tuple(
                np.ascontiguousarray(a, dtype=np.float64)
                for a in (w1, self._z0, w2.T, c2, (w2 * w3[0][:, None]).T, self.baseline)
            )

    @property
    def cheap(self) -> bool:
        """In C (about 11 us a row): explained in the batch (``reasons.when: auto``)."""
        return self._native is not None

    def attributions(self, features: np.ndarray) -> np.ndarray:
        """(n, d) -> (n, d) float64 attributions in logit space."""
        if self._native is not None:
            x = np.ascontiguousarray(features, dtype=np.float64)
            if x.ndim == 2 and x.shape[1] == self.baseline.size:
                out = np.empty_like(x)
                if len(x):
                    C_IG.relu2_attributions(*self._native, x, out)
                return out
        return self._integrate(features)[0]

    def logits(self, features: np.ndarray) -> np.ndarray:
        """(n, d) -> (n,) float64 logits of the same network."""
        h = np.asarray(features, dtype=np.float64)
        for w, c in self.layers[:-1]:
            h = np.maximum(_mm(h, w.T) + c, 0.0)
        w, c = self.layers[-1]
        return (_mm(h, w.T) + c).reshape(-1)

    def explain(self, features: np.ndarray) -> IGResult:
        """Attributions, with the pieces of each row's path and its completeness gap."""
        x = np.asarray(features, dtype=np.float64)
        attr, pieces, points = self._integrate(x)
        ends = self.logits(np.concatenate([x, self.baseline[None]]))
        gap = np.abs(attr.sum(axis=1) - (ends[:-1] - ends[-1]))
        return IGResult(attr, pieces, gap, model_rows=points)

    def _integrate(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
        """Attributions, pieces per row, and the points the network was evaluated at."""
        x = np.asarray(features, dtype=np.float64)
        n = len(x)
        delta = x - self.baseline
        if n == 0 or len(self.layers) == 1:
            return delta * self.layers[0][0][0], np.ones(n, dtype=np.int64), n
        d1 = _mm(delta, self._w1t)  # (n, h1): the first layer's slope along each path
        with np.errstate(divide="ignore", invalid="ignore"):
            cross = -self._z0 / d1
        r, u = np.nonzero((cross > 0) & (cross < 1))
        rows = np.concatenate([np.arange(n), np.arange(n), r])
        alphas = np.concatenate([np.zeros(n), np.ones(n), cross[r, u]])
        rows, alphas = _sorted(rows, alphas)
        w_out = self._hidden[-1][0][:, 0]
        if len(self._hidden) == 1:  # one hidden layer: its pieces are the first layer's
            lo = np.flatnonzero(rows[1:] == rows[:-1])
            mid = (alphas[lo] + alphas[lo + 1]) / 2
            mask = self._z0 + mid[:, None] * d1[rows[lo]] > 0
            g = mask * w_out * (alphas[lo + 1] - alphas[lo])[:, None]
            pieces = np.bincount(rows[lo], minlength=n)
            return self._finish(delta, g, rows[lo], n), pieces, len(alphas)
        # deeper layers: each one's pre-activations at the points known so far (a matmul),
        # then its zero crossings between consecutive points; every layer found so far is
        # linear between those two points, so its values at a crossing are interpolated
        zs: list[np.ndarray] = []
        evaluated = 0
        fixed = np.ones(len(rows), dtype=bool)
        for depth, (wt, c) in enumerate(self._hidden[:-1], start=1):
            below = self._z0 + alphas[:, None] * d1[rows] if depth == 1 else zs[-1]
            zs.append(_mm(np.maximum(below, 0.0), wt) + c)
            evaluated += len(rows)
            if depth == len(self._hidden) - 1:
                # the points so far bound the groups: the layers under the last hidden one
                # keep their masks between two of them, so the backward pass runs per group
                fixed = np.ones(len(rows), dtype=bool)
            rows, alphas, zs, fixed = _add_crossings(rows, alphas, zs, fixed)
        # the pieces: the last hidden layer's mask inside each, from its two ends
        lo = np.flatnonzero(rows[1:] == rows[:-1])
        z_last = zs[-1]
        mask = (z_last[lo] + z_last[lo + 1]) > 0
        g = mask * w_out * (alphas[lo + 1] - alphas[lo])[:, None]
        group_of_piece = np.flatnonzero(fixed[lo])  # a group starts at a fixed point
        g = np.add.reduceat(g, group_of_piece, axis=0)
        # each group's interval, between two consecutive fixed points of one row
        fp = np.flatnonzero(fixed)
        inner = rows[fp[1:]] == rows[fp[:-1]]
        gl, gh = fp[:-1][inner], fp[1:][inner]
        mid = (alphas[gl] + alphas[gh]) / 2
        masks = [self._z0 + mid[:, None] * d1[rows[gl]] > 0]
        masks += [(z[gl] + z[gh]) > 0 for z in zs[:-1]]
        for (wt, _), m in zip(self._hidden[-2::-1], masks[::-1], strict=True):
            g = _mm(g, wt.T) * m
        evaluated += len(gl)
        return self._finish(delta, g, rows[gl], n), np.bincount(rows[lo], minlength=n), evaluated

    def _finish(self, delta: np.ndarray, g: np.ndarray, g_rows: np.ndarray, n: int) -> np.ndarray:
        """Sum the first layer's weighted gradients per row (``g_rows`` ascending, every row
        present), then back through the first layer, times x - baseline."""
        starts = np.flatnonzero(np.concatenate([[True], g_rows[1:] != g_rows[:-1]]))
        return delta * _mm(np.add.reduceat(g, starts, axis=0), self.layers[0][0])

    def _forward(
        self, d1: np.ndarray, rows: np.ndarray, alphas: np.ndarray, depth: int
    ) -> tuple[np.ndarray, list[np.ndarray]]:
        """Pre-activations of hidden layer ``depth`` (0 = the first) at each (row, a) point,
        and the ReLU masks of layers 0..depth."""
        z = self._z0 + alphas[:, None] * d1[rows]
        masks = [z > 0]
        for wt, c in self._hidden[:depth]:
            z = _mm(np.where(masks[-1], z, 0.0), wt) + c
            masks.append(z > 0)
        return z, masks


BLAS_SINGLE_THREAD_MNK = 262_144
"""OpenBLAS (numpy's BLAS) runs a matmul of more multiply-adds than this on several threads.
At these sizes the threads' start-up costs more than the arithmetic, and on a busy machine much
more (measured: 10 rows took 14 ms with threads, 1.4 ms without), so larger products are cut
into row blocks at most this big."""


def _mm(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a @ b, in row blocks small enough for OpenBLAS to stay on the calling thread."""
    per_row = b.shape[0] * b.shape[1]
    block = max(1, BLAS_SINGLE_THREAD_MNK // max(per_row, 1))
    if len(a) <= block:
        return a @ b
    return np.concatenate([a[i : i + block] @ b for i in range(0, len(a), block)])


def _sorted(rows: np.ndarray, alphas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Points ordered by row, then by a (a lies in [0, 1], so 2 * row + a orders both)."""
    order = np.argsort(2.0 * rows + alphas, kind="stable")
    return rows[order], alphas[order]


def _add_crossings(
    rows: np.ndarray, alphas: np.ndarray, zs: list[np.ndarray], fixed: np.ndarray
) -> tuple[np.ndarray, np.ndarray, list[np.ndarray], np.ndarray]:
    """The points plus every zero crossing of ``zs[-1]`` between consecutive points of a
    row, in order. Every layer of ``zs`` is linear between two consecutive points, so its
    values at a crossing are interpolated, not computed; new points are not ``fixed``."""
    z = zs[-1]
    za, zb = z[:-1], z[1:]
    pair, unit = np.nonzero((za * zb) < 0)
    if pair.size:
        keep = rows[pair] == rows[pair + 1]
        pair, unit = pair[keep], unit[keep]
    if not pair.size:
        return rows, alphas, zs, fixed
    t = za[pair, unit] / (za[pair, unit] - zb[pair, unit])
    a0 = alphas[pair]
    rows = np.concatenate([rows, rows[pair]])
    alphas = np.concatenate([alphas, a0 + (alphas[pair + 1] - a0) * t])
    tc = t[:, None]
    zs = [np.concatenate([v, v[pair] + tc * (v[pair + 1] - v[pair])]) for v in zs]
    fixed = np.concatenate([fixed, np.zeros(pair.size, dtype=bool)])
    order = np.argsort(2.0 * rows + alphas, kind="stable")
    return rows[order], alphas[order], [v[order] for v in zs], fixed[order]


class ReluGradientTimesInput:
    """gradient(x) x (x - baseline) of a ReLU network, in numpy: the cheap option.

    One forward and one backward over the rows, no path: not complete (its sum is not the
    logit's change), for where ranking the reasons is enough."""

    method = "grad-x-input"

    def __init__(self, layers: Sequence[Layer], baseline: np.ndarray) -> None:
        self._exact = PiecewiseLinearIG(layers, baseline)
        self.baseline = self._exact.baseline

    def attributions(self, features: np.ndarray) -> np.ndarray:
        """(n, d) -> (n, d) float64."""
        ig = self._exact
        x = np.asarray(features, dtype=np.float64)
        delta = x - ig.baseline
        if len(ig.layers) == 1:
            return delta * ig.layers[0][0][0]
        d1 = _mm(delta, ig._w1t)
        _, masks = ig._forward(d1, np.arange(len(x)), np.ones(len(x)), len(ig._hidden) - 1)
        g = masks[-1] * ig._hidden[-1][0][:, 0]
        for (wt, _), mask in zip(ig._hidden[-2::-1], masks[-2::-1], strict=True):
            g = _mm(g, wt.T) * mask
        return delta * _mm(g, ig.layers[0][0])
