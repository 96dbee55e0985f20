"""make_explainer: the explainer a model version's artifacts allow.

ONNX models are explained through their torch artifact (model.pt), not an exported gradient
graph: models/export.py writes model.pt from the same module and weights as model.onnx (both
checksummed in the metadata), torch's autograd gives the gradient of any architecture with no
second export to keep in step, and onnxruntime's CPU build has no gradient operators. The
tests hold the two to the same numbers: completeness is checked against the ONNX model's logit.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

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
    and integrate on a refined grid that ``steps``,
    ``max_steps`` and ``tolerance`` shape (streaming.explain.gradients).
    """
    if method not in METHODS:
        raise ExplainError(f"explain method {method!r}: expected one of {', '.join(METHODS)}")
    version_dir = Path(version_dir)
    meta = read_explain_metadata(version_dir, metadata)
    model_pt = _verified_torch_artifact(version_dir, metadata)

    from streaming.explain import gradients  # torch, only for the models that need it

    module = gradients.load_logit_module(model_pt, meta.logit_module)
    layers = gradients.relu_layers(module)
    if layers is not None and layers[0][0].shape[1] != meta.baseline.size:
        raise ExplainError(
            f"{model_pt}: {layers[0][0].shape[1]} inputs, metadata baseline has "
            f"{meta.baseline.size}; {REBUILD}"
        )
    linear = layers is not None and len(layers) == 1
    if method in ("auto", "exact-linear") and linear:
        from streaming.explain.linear import ExactLinear

        (weight, bias), *_ = layers
        return ExactLinear(weight.reshape(-1), float(bias[0]), meta.baseline)
    if method == "exact-linear":
        raise ExplainError(
            f"{model_pt}: exact-linear needs a model whose logit is one linear layer; "
            "use method auto, integrated-gradients or grad-x-input"
        )
    if layers is not None and piecewise:
        from streaming.explain import piecewise as relu

        if method == "grad-x-input":
            return relu.ReluGradientTimesInput(layers, meta.baseline)
        return relu.PiecewiseLinearIG(layers, meta.baseline)
    if method == "grad-x-input":
        return gradients.GradientTimesInput(module, meta.baseline)
    return gradients.IntegratedGradients(
        module, meta.baseline, steps=steps, max_steps=max_steps, tolerance=tolerance
    )


def _verified_torch_artifact(version_dir: Path, metadata: Mapping[str, Any]) -> Path:
    """model.pt, checked against the metadata's checksum like the runtimes check theirs."""
    path = version_dir / TORCH_ARTIFACT
    files = metadata.get("files") or {}
    if not path.is_file():
        raise ExplainError(
            f"{path}: missing; explanations read the model's torch artifact, which "
            f"models/export.py writes beside model.onnx; {REBUILD}"
        )
    expected = files.get(TORCH_ARTIFACT)
    if expected is None:
        raise ExplainError(f"{version_dir / METADATA_FILE}: lists no {TORCH_ARTIFACT}; {REBUILD}")
    if sha256_file(path) != expected:
        raise ExplainError(
            f"{path}: checksum does not match the metadata's; the artifact is corrupt or from "
            f"another build; {REBUILD}"
        )
    return path
