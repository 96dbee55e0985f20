"""Deliberately broken fraud models, for rehearsing rollbacks (and for the monitor's tests).

A canary that was trained well but broke on the way to production looks like this: the same
inputs, the same metadata (preprocessing parameters, drift baselines copied from a good
version), but scores that carry no signal. ``constant`` answers the same score for every
event; ``noisy`` answers uniform random scores; ``flaky`` answers NaN for some events; ``raising``
raises on every real batch (its circuit breaker opens). The monitor must roll each back.

    python -m models.fraud.faulty --kind noisy --from models/fraud/v2 --out models/fraud/v9
"""

from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path

import torch
from torch import nn

from models.export import export_model

KINDS = ("constant", "noisy", "flaky", "raising")


class ConstantScore(nn.Module):
    def __init__(self, value: float) -> None:
        super().__init__()
        self.value = value

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(x[:, :1]) + self.value


class FlakyScore(nn.Module):
    """A low score, but NaN for about 2% of rows (the worker dead-letters those, stage
    inference): a model that breaks on some inputs."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        low = torch.zeros_like(x[:, :1]) + 0.01
        return torch.where(torch.rand_like(low) < 0.02, low * float("nan"), low)


class RaisingScore(nn.Module):
    """Raises on every batch of real events (an index out of bounds in the graph) but passes
    the warm-up, whose inputs are zeros: a model that loads fine and then breaks."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("table", torch.tensor([0.01, 0.02]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        index = (x[:, 0] != 0).long() * 7
        return self.table[index].unsqueeze(1)


class NoisyScore(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.rand_like(x[:, :1])


def build_faulty(kind: str, source: Path, out: Path, version: str | None = None) -> Path:
    """Export a ``kind`` model to ``out`` with ``source``'s metadata (inputs, baselines)."""
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; choose one of {', '.join(KINDS)}")
    meta_path = Path(source) / "metadata.json"
    if not meta_path.is_file():
        raise FileNotFoundError(f"{meta_path} not found: run `make models` first")
    meta = json.loads(meta_path.read_text())
    module: nn.Module = {
        "constant": ConstantScore(0.9),
        "noisy": NoisyScore(),
        "flaky": FlakyScore(),
        "raising": RaisingScore(),
    }[kind]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer warns that random output is random
        return _export(module, meta, Path(out), version or Path(out).name, kind)


def _export(module: nn.Module, meta: dict, out: Path, version: str, kind: str) -> Path:
    return export_model(
        module,
        out,
        name=meta["name"],
        version=version,
        feature_names=meta["feature_names"],
        preprocessing=meta["preprocessing"],
        metrics={"faulty": 1.0},
        extra={"kind": f"faulty: {kind}", "drift_baseline": meta.get("drift_baseline", {})},
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--kind", choices=KINDS, required=True)
    p.add_argument("--from", dest="source", type=Path, default=Path("models/fraud/v2"))
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    out = build_faulty(args.kind, args.source, args.out)
    print(f"exported a {args.kind} model to {out}")


if __name__ == "__main__":
    main()
