"""make_explainer: the explainer a model version's artifacts allow.

ONNX models are explained through the torch module they were exported from, not an exported
gradient graph: onnxruntime's CPU build has no gradient operators, and a second graph would
be one more export to keep in step. models/export.py writes, from the same module and weights
as model.onnx and checksummed in the metadata like it:

- ``explain.npz``, for a logistic model or a ReLU MLP (fraud v1, v2): its Linear layers'
  weights. These are explained in numpy, exactly, and torch is never imported (importing it
  costs a worker +4.7 s of start-up and +220 MB, measured here).
- ``model.pt`` (TorchScript), for any other network: torch autograd on its logit submodule.

The tests hold them to the ONNX model: completeness is checked against the ONNX model's logit.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from streaming.config_sections import ReasonsConfig
from streaming.explain.baseline import REBUILD, read_explain_metadata
from streaming.explain.types import METHODS, Explainer, ExplainError
from streaming.runtimes.base import METADATA_FILE, sha256_file

TORCH_ARTIFACT = "model.pt"


def make_explainer(
    version_dir: Path,
    metadata: Mapping[str, Any],
    method: str = "auto",
    *,
    steps: int = 16,
    max_steps: int = 512,
    tolerance: float = 1e-3,
    piecewise: bool = True,
) -> Explainer:
    """The explainer of one model version; fails at start (ExplainError) with the fix.

    ``method``: ``auto`` (exact for a linear model, else integrated gradients),
    ``exact-linear``, ``integrated-gradients`` or ``grad-x-input``. Integrated gradients of a
    ReLU network are exact and in numpy (streaming.explain.piecewise, gradient x input too)
    unless ``piecewise`` is False; other networks, or ``piecewise=False``, use torch autograd
    and integrate on a refined grid that ``steps``, ``max_steps`` and ``tolerance`` shape
    (streaming.explain.gradients).
    """
    if method not in METHODS:
        raise ExplainError(f"explain method {method!r}: expected one of {', '.join(METHODS)}")
    version_dir = Path(version_dir)
    meta = read_explain_metadata(version_dir, metadata)
    if meta.layers_file is not None and piecewise:
        # a ReLU MLP or a linear model, its weights saved for numpy: no torch at all
        source = _verified(version_dir, metadata, meta.layers_file)
        layers = _read_layers(source)
        module = None
    else:
        source = _verified(version_dir, metadata, TORCH_ARTIFACT)
        from streaming.explain import gradients  # torch, only for the models that need it

        module = gradients.load_logit_module(source, meta.logit_module)
        layers = gradients.relu_layers(module)
    if layers is not None and layers[0][0].shape[1] != meta.baseline.size:
        raise ExplainError(
            f"{source}: {layers[0][0].shape[1]} inputs, metadata baseline has "
            f"{meta.baseline.size}; {REBUILD}"
        )
    linear = layers is not None and len(layers) == 1
    if method in ("auto", "exact-linear") and linear:
        from streaming.explain.linear import ExactLinear

        (weight, bias), *_ = layers
        return ExactLinear(weight.reshape(-1), float(bias[0]), meta.baseline)
    if method == "exact-linear":
        raise ExplainError(
            f"{source}: exact-linear needs a model whose logit is one linear layer; "
            "use method auto, integrated-gradients or grad-x-input"
        )
    if layers is not None and piecewise:
        from streaming.explain import piecewise as relu

        if method == "grad-x-input":
            return relu.ReluGradientTimesInput(layers, meta.baseline)
        return relu.PiecewiseLinearIG(layers, meta.baseline)
    assert module is not None  # layers from the npz are always piecewise
    from streaming.explain import gradients

    if method == "grad-x-input":
        return gradients.GradientTimesInput(module, meta.baseline)
    return gradients.IntegratedGradients(
        module, meta.baseline, steps=steps, max_steps=max_steps, tolerance=tolerance
    )


def explainer_for(
    reasons: ReasonsConfig, version_dir: Path, metadata: Mapping[str, Any]
) -> Explainer:
    """make_explainer with a pipeline's ``reasons`` settings (method, grid)."""
    return make_explainer(
        version_dir,
        metadata,
        reasons.method,
        steps=reasons.steps,
        max_steps=reasons.max_steps,
        tolerance=reasons.tolerance,
    )


def _verified(version_dir: Path, metadata: Mapping[str, Any], name: str) -> Path:
    """An artifact, checked against the metadata's checksum like the runtimes check theirs."""
    path = version_dir / name
    files = metadata.get("files") or {}
    if not path.is_file():
        raise ExplainError(
            f"{path}: missing; explanations read it, and models/export.py writes it beside "
            f"model.onnx; {REBUILD}"
        )
    expected = files.get(name)
    if expected is None:
        raise ExplainError(f"{version_dir / METADATA_FILE}: lists no {name}; {REBUILD}")
    if sha256_file(path) != expected:
        raise ExplainError(
            f"{path}: checksum does not match the metadata's; the artifact is corrupt or from "
            f"another build; {REBUILD}"
        )
    return path


def _read_layers(path: Path) -> list[tuple[np.ndarray, np.ndarray]]:
    """w0, b0, w1, b1, ... from explain.npz (arrays only: no pickles are loaded)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            count = len(data.files) // 2
            layers = [
                (data[f"w{i}"].astype(np.float64), data[f"b{i}"].astype(np.float64))
                for i in range(count)
            ]
    except (OSError, ValueError, KeyError) as exc:
        raise ExplainError(f"{path}: unreadable layer weights ({exc}); {REBUILD}") from exc
    if not layers or layers[-1][0].shape[0] != 1:
        raise ExplainError(f"{path}: expected layers ending in one output; {REBUILD}")
    return layers
