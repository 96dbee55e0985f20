"""The explainer's contract: what the decision stage and the tests code against.

Kept apart from the implementations so that importing the contract never imports torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np

from streaming.runtimes.base import ModelLoadError

Method = Literal["exact-linear", "integrated-gradients", "grad-x-input"]
METHODS: tuple[str, ...] = ("auto", "exact-linear", "integrated-gradients", "grad-x-input")
"""``auto`` picks ``exact-linear`` for a linear model, else ``integrated-gradients``."""


class ExplainError(ModelLoadError):
    """A model cannot be explained as configured; the message says why and the fix.

    A ModelLoadError, so that the worker reports it at start like any other model problem.
    """


class Explainer(Protocol):
    """Attributions of a batch of model inputs, in logit space, relative to a baseline."""

    method: str
    """``exact-linear`` | ``integrated-gradients`` | ``grad-x-input``."""
    baseline: np.ndarray
    """(d,) float64: the training mean of the features, the point attributions start from."""

    def attributions(self, features: np.ndarray) -> np.ndarray:
        """(n, d) float32 model inputs -> (n, d) float64 attributions in logit space, relative
        to the baseline, so that sum(attr[i]) ~= logit(f(x_i)) - logit(f(baseline))."""
        ...


@dataclass(frozen=True, slots=True)
class Reason:
    """One reason code of one explained row, as it appears in a prediction's ``reasons``."""

    code: str
    text: str
    weight: float
    """The code's share of the row's logit above the baseline (sum over its features)."""


@dataclass(frozen=True, slots=True)
class IGResult:
    """Attributions with what they cost: the grid each row ended on, and its gap."""

    attributions: np.ndarray
    """(n, d) float64."""
    steps: np.ndarray
    """(n,) intervals each row was integrated over: grid steps, or linear pieces of the path."""
    gap: np.ndarray
    """(n,) |sum(attr) - (logit(x) - logit(b))|, both logits from the explainer's own copy of
    the model (float64)."""
    model_rows: int
    """Points on the paths the model was evaluated at (forward and backward), all rounds."""
