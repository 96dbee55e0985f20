"""Deliberately broken fraud models, for rehearsing rollbacks (and for the monitor's tests).

A canary that was trained well but broke on the way to production looks like this: the same
inputs, the same metadata (preprocessing parameters, drift baselines copied from a good
version), but scores that carry no signal. ``constant`` answers the same score for every
event; ``noisy`` answers uniform random scores; ``flaky`` answers NaN for some events; ``raising``
raises on every real batch (its circuit breaker opens); ``hanging`` (torch runtime only) never
returns from its first real batch (the worker's watchdog times it out); ``blind`` is the
source model blind on 30% of events: there it answers another event's score, so it flags the
same share with the same score distribution (PSI passes) but catches about 30% less fraud,
which only labels can show. The monitor must roll each back.

    python -m models.fraud.faulty --kind noisy --from models/fraud/v2 --out models/fraud/v9
"""

from __future__ import annotations

import argparse
import json
import warnings
from hashlib import sha256
from pathlib import Path

import torch
from torch import nn

from models.export import export_model

KINDS = ("constant", "noisy", "flaky", "raising", "hanging", "blind")

FOREVER_S = 1e9
"""A hanging model's default hang: about 30 years."""


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


class HangingScore(nn.Module):
    """A low score, but the first batch of real events does not return for ``hang_s``: a
    model that loads and warms up fine (warm-up batches are zeros) and then hangs.

    TorchScript has no sleep, so it spins on the graph's clock (``prim::TimePoint``, ns) with
    the GIL released, as a model stuck in a kernel would; it costs a core while it hangs.
    Only the first real batch hangs (``hung`` is set first), so a worker that let later
    batches through would see them answered at once.
    """

    def __init__(self, hang_s: float = FOREVER_S) -> None:
        super().__init__()
        self.hang_ns = int(hang_s * 1e9)
        self.hung = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        low = torch.zeros_like(x[:, :1]) + 0.01
        if not self.hung and bool((x[0] != 0).any()):
            self.hung = True
            start = torch.ops.prim.TimePoint()
            while torch.ops.prim.TimePoint() - start < self.hang_ns:
                pass
        return low


class BlindScore(nn.Module):
    """The source model, but a share of events (picked by a hash of their inputs, which says
    nothing about fraud) get the score of the event mirrored in the batch: their scores come
    from the same distribution and carry no signal about their own event. A batch of one
    mirrors onto itself, so the share is reached on batches of many events."""

    def __init__(self, source: nn.Module, share: float) -> None:
        super().__init__()
        self.source = source
        self.share = share

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        score = self.source(x)
        h = x.sum(dim=1, keepdim=True) * 997.13
        return torch.where(h - torch.floor(h) < self.share, score.flip(0), score)


class NoisyScore(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.rand_like(x[:, :1])


def build_faulty(
    kind: str,
    source: Path,
    out: Path,
    version: str | None = None,
    hang_s: float = FOREVER_S,
    blind_share: float = 0.3,
) -> Path:
    """Export a ``kind`` model to ``out`` with ``source``'s metadata (inputs, baselines);
    ``hang_s``: how long a ``hanging`` model's hung call lasts; ``blind_share``: the share of
    events a ``blind`` model is blind on."""
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; choose one of {', '.join(KINDS)}")
    meta_path = Path(source) / "metadata.json"
    if not meta_path.is_file():
        raise FileNotFoundError(f"{meta_path} not found: run `make models` first")
    meta = json.loads(meta_path.read_text())
    module: nn.Module
    if kind == "blind":
        module = BlindScore(_rebuild(Path(source) / "model.pt"), blind_share)
    else:
        module = {
            "constant": ConstantScore(0.9),
            "noisy": NoisyScore(),
            "flaky": FlakyScore(),
            "raising": RaisingScore(),
            "hanging": ConstantScore(0.01),  # its ONNX file; model.pt is scripted below
        }[kind]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer warns that random output is random
        path = _export(module, meta, Path(out), version or Path(out).name, kind)
    if kind == "hanging":
        _replace_torchscript(path, torch.jit.script(HangingScore(hang_s)))
    return path


def _rebuild(path: Path) -> nn.Module:
    """A trained fraud model (train.py's Scored: an MLP or a logistic layer) as a plain module
    again, from its TorchScript file: a loaded ScriptModule cannot be traced inside another."""
    from models.fraud.train import Scored

    state = torch.jit.load(str(path)).state_dict()
    if "net.weight" in state:
        net: nn.Module = nn.Linear(state["net.weight"].shape[1], 1)
    else:
        index = sorted({int(k.split(".")[1]) for k in state})
        layers: list[nn.Module] = []
        for i in index:
            weight = state[f"net.{i}.weight"]
            while len(layers) < i:
                layers.append(nn.ReLU())
            layers.append(nn.Linear(weight.shape[1], weight.shape[0]))
        net = nn.Sequential(*layers)
    model = Scored(net)
    model.load_state_dict(state)
    return model.eval()


def _replace_torchscript(path: Path, scripted: torch.jit.ScriptModule) -> None:
    """Tracing cannot record a loop, so a hanging model.pt is scripted, and its checksum in
    the metadata updated (the worker verifies it)."""
    torch.jit.save(scripted, str(path / "model.pt"))
    meta_path = path / "metadata.json"
    meta = json.loads(meta_path.read_text())
    meta["files"]["model.pt"] = sha256((path / "model.pt").read_bytes()).hexdigest()
    meta["kind"] = "faulty: hanging (torch runtime; its ONNX file answers 0.01 at once)"
    meta_path.write_text(json.dumps(meta, indent=1))


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
    p.add_argument("--hang-s", type=float, default=FOREVER_S, help="hanging: for how long")
    p.add_argument("--blind-share", type=float, default=0.3, help="blind: share of events")
    args = p.parse_args()
    out = build_faulty(
        args.kind, args.source, args.out, hang_s=args.hang_s, blind_share=args.blind_share
    )
    print(f"exported a {args.kind} model to {out}")


if __name__ == "__main__":
    main()
