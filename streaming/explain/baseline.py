"""What the model's metadata says about explaining it: the baseline and the logit module."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from streaming.explain.types import ExplainError

REBUILD = "rebuild the model (make models)"


@dataclass(frozen=True, slots=True)
class ExplainMetadata:
    """The ``explain`` entry that models/export.py writes beside each model."""

    baseline: np.ndarray
    """(d,) float64 training mean of the feature matrix."""
    logit_module: str | None
    """Submodule of the torch artifact that outputs the logit; None: the logit of the
    artifact's output (a probability) is taken."""
    layers_file: str | None = None
    """The logit module's Linear layers for numpy (``explain.npz``), when it is a ReLU MLP."""


def read_explain_metadata(version_dir: Path, metadata: Mapping[str, Any]) -> ExplainMetadata:
    """The baseline and logit module, or an ExplainError naming the file and the fix."""
    where = Path(version_dir) / "metadata.json"
    entry = metadata.get("explain")
    if not isinstance(entry, Mapping) or "baseline" not in entry:
        raise ExplainError(
            f"{where}: no explain.baseline (the training mean of the features): the model was "
            f"built before explanations existed; {REBUILD}"
        )
    try:
        baseline = np.asarray(entry["baseline"], dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ExplainError(
            f"{where}: explain.baseline is not a list of numbers; {REBUILD}"
        ) from exc
    dim = int(metadata.get("input_dim", len(baseline)))
    if baseline.shape != (dim,) or not np.all(np.isfinite(baseline)):
        raise ExplainError(
            f"{where}: explain.baseline must be {dim} finite numbers (got shape "
            f"{baseline.shape}); {REBUILD}"
        )
    module = entry.get("logit_module")
    if module is not None and not isinstance(module, str):
        raise ExplainError(f"{where}: explain.logit_module must be a name; {REBUILD}")
    if entry.get("output", "probability") != "probability":
        raise ExplainError(f"{where}: explain.output must be 'probability'; {REBUILD}")
    layers = entry.get("layers")
    if layers is not None and not isinstance(layers, str):
        raise ExplainError(f"{where}: explain.layers must be a file name; {REBUILD}")
    return ExplainMetadata(baseline=baseline, logit_module=module, layers_file=layers)
