"""Exact attributions of a linear (logistic) model: coefficient x (x - baseline).

For logit(f(x)) = w.x + c, the sum of w_j (x_j - b_j) is logit(f(x)) - logit(f(b)) exactly,
and each term is the logit the row loses when feature j alone is set to the baseline: the
explanation and brute-force occlusion agree by construction. numpy only, no model call.
"""

from __future__ import annotations

import numpy as np


class ExactLinear:
    """Attributions of a model whose logit is ``coef . x + intercept``."""

    method = "exact-linear"
    cheap = True
    """A few numpy calls a batch: explained in the batch (``reasons.when: auto``)."""

    def __init__(self, coef: np.ndarray, intercept: float, baseline: np.ndarray) -> None:
        self.coef = np.asarray(coef, dtype=np.float64).reshape(-1)
        self.intercept = float(intercept)
        self.baseline = np.asarray(baseline, dtype=np.float64).reshape(-1)
        if self.coef.shape != self.baseline.shape:
            raise ValueError(
                f"{self.coef.size} coefficients for a baseline of {self.baseline.size} features"
            )

    def attributions(self, features: np.ndarray) -> np.ndarray:
        """(n, d) -> (n, d) float64; exact, in logit space."""
        x = np.asarray(features, dtype=np.float64)
        return (x - self.baseline) * self.coef

    def logits(self, features: np.ndarray) -> np.ndarray:
        """(n, d) -> (n,) float64 logits of the same model (used by occlusion checks)."""
        return np.asarray(features, dtype=np.float64) @ self.coef + self.intercept
