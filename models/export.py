"""Export a trained torch model as ONNX + TorchScript with the metadata the worker checks.

Files are written into a temporary folder and moved into place only when complete, so a half
written export is never mistaken for a good one.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from streaming.runtimes.base import METADATA_FILE, sha256_file

ONNX_OPSET = 17
"""The TorchScript-based exporter (dynamo=False) with a pinned opset: it needs no onnxscript at
export, gives a dynamic batch axis, and every onnxruntime >= 1.14 runs opset 17."""


def export_model(
    module: torch.nn.Module,
    out_dir: Path,
    *,
    name: str,
    version: str,
    feature_names: Sequence[str],
    preprocessing: Mapping[str, Any],
    metrics: Mapping[str, float],
    extra: Mapping[str, Any] | None = None,
    baseline: Sequence[float] | None = None,
    logit_module: str | None = None,
) -> Path:
    """Write ``out_dir/{model.onnx, model.pt, metadata.json}``; return ``out_dir``.

    ``module`` maps a float32 (n, d) batch to probabilities of shape (n, 1) or (n,).
    ``baseline`` (the training mean of the features) and ``logit_module`` (the submodule of
    ``module`` whose output is the score's logit) go to metadata ``explain``: attributions
    (streaming.explain) are measured from that baseline, in logit space, and a logit read
    back from a float32 probability near 1 would be too coarse for them.
    """
    module = module.eval().cpu()
    dim = len(feature_names)
    example = torch.zeros(4, dim, dtype=torch.float32)
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-", dir=out_dir.parent))
    try:
        with torch.no_grad():
            torch.onnx.export(
                module,
                (example,),
                str(staging / "model.onnx"),
                input_names=["features"],
                output_names=["score"],
                dynamic_axes={"features": {0: "batch"}, "score": {0: "batch"}},
                opset_version=ONNX_OPSET,
                dynamo=False,
            )
            traced = torch.jit.trace(module, example)
        torch.jit.save(traced, str(staging / "model.pt"))
        explain = _explain_metadata(module, dim, baseline, logit_module, staging)
        import onnx

        layers_file = explain.get("explain", {}).get("layers")
        artifacts = ("model.onnx", "model.pt", *([layers_file] if layers_file else []))
        metadata = {
            "name": name,
            "version": version,
            "input_dim": dim,
            "feature_names": list(feature_names),
            "preprocessing": dict(preprocessing),
            "files": {f: sha256_file(staging / f) for f in artifacts},
            "metrics": dict(metrics),
            "framework_versions": {
                "torch": torch.__version__,
                "onnx": onnx.__version__,
                "onnx_opset": ONNX_OPSET,
            },
            "created_ms": int(time.time() * 1000),
            **explain,
            **(dict(extra) if extra else {}),
        }
        (staging / METADATA_FILE).write_text(json.dumps(metadata, indent=1))
        if out_dir.exists():
            shutil.rmtree(out_dir)
        staging.rename(out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out_dir


def _explain_metadata(
    module: torch.nn.Module,
    dim: int,
    baseline: Sequence[float] | None,
    logit_module: str | None,
    staging: Path,
) -> dict[str, Any]:
    """The ``explain`` entry of the metadata, checked here so a bad one never ships; for a
    logit module of Linear and ReLU layers, their weights in ``explain.npz`` too."""
    if baseline is None:
        return {}
    values = [float(v) for v in baseline]
    if len(values) != dim:
        raise ValueError(f"baseline has {len(values)} values for {dim} features")
    entry: dict[str, Any] = {
        "baseline": [round(v, 8) for v in values],
        "baseline_of": "training mean of the feature matrix",
        "output": "probability",
        "logit_module": logit_module,
    }
    if logit_module is not None:
        if not hasattr(module, logit_module):
            raise ValueError(f"logit_module {logit_module!r} is not a submodule of the model")
        layers = _relu_layers(getattr(module, logit_module))
        if layers is not None:
            # numpy reads these without torch: a worker explaining an ONNX model then never
            # imports torch (measured: +4.7 s start-up and +220 MB per process)
            np.savez(
                staging / EXPLAIN_LAYERS,
                **{
                    f"{kind}{i}": a
                    for i, (w, b) in enumerate(layers)
                    for kind, a in (("w", w), ("b", b))
                },
            )
            entry["layers"] = EXPLAIN_LAYERS
    return {"explain": entry}


EXPLAIN_LAYERS = "explain.npz"
"""The logit module's Linear layers as float32 arrays w0, b0, w1, b1, ... (ReLU between)."""


def _relu_layers(net: torch.nn.Module) -> list[tuple[np.ndarray, np.ndarray]] | None:
    """Weights and biases of ``Linear (ReLU Linear)*`` with one output, else None."""
    children = list(net) if isinstance(net, torch.nn.Sequential) else [net]
    if len(children) % 2 == 0:
        return None
    for i, child in enumerate(children):
        kind = torch.nn.Linear if i % 2 == 0 else torch.nn.ReLU
        if type(child) is not kind:
            return None
    linears = children[::2]
    if linears[-1].out_features != 1:
        return None
    return [
        (
            lin.weight.detach().cpu().numpy().astype(np.float32),
            (
                lin.bias.detach().cpu().numpy()
                if lin.bias is not None
                else np.zeros(lin.out_features)
            ).astype(np.float32),
        )
        for lin in linears
    ]
