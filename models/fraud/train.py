"""Train and export the fraud models: v1 logistic regression, v2 MLP, v3 a wide MLP for GPUs.

    python -m models.fraud.train --out models/fraud [--events 200000] [--seed 7]

Training data comes from the pipeline's own generator (a fixed seed): per-card histories in
    python -m models.fraud.train --out models/fraud [--events 200000] [--seed 7]
the same models on every machine. Held-out ROC AUC is printed per version and saved in the
metadata, with drift baselines (histograms of chosen inputs and of held-out scores) for the
monitor.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from models.export import export_model
from pipelines.fraud.generator import FraudGenerator
from pipelines.fraud.preprocessing import fit_params, make_preprocessor
from pipelines.fraud.schema import Transaction
from pipelines.fraud.state import STATE
from streaming.state import history_features


class Scored(nn.Module):
    """A logit network wrapped so that the exported model outputs probabilities."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.net(x))


def logistic(dim: int) -> nn.Module:
    return nn.Linear(dim, 1)


def mlp(dim: int, widths: Sequence[int]) -> nn.Module:
    layers: list[nn.Module] = []
    prev = dim
    for w in widths:
        layers += [nn.Linear(prev, w), nn.ReLU()]
        prev = w
    layers.append(nn.Linear(prev, 1))
    return nn.Sequential(*layers)


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Rank-based ROC AUC (Mann-Whitney U), ties averaged."""
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores), dtype=np.float64)
    sorted_scores = scores[order]
    i = 0
    while i < len(scores):
        j = i
        while j + 1 < len(scores) and sorted_scores[j + 1] == sorted_scores[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2.0 + 1
        i = j + 1
    pos = labels == 1
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def train(
    net: nn.Module, x: np.ndarray, y: np.ndarray, *, epochs: int, lr: float, batch: int, label: str
) -> nn.Module:
    xt, yt = torch.from_numpy(x), torch.from_numpy(y.astype(np.float32)).reshape(-1, 1)
    pos = float(yt.sum())
    # Rebalance half way (sqrt): enough to learn the rare class, not so much that every
    # score is pushed towards fraud.
    pos_weight = torch.tensor([((len(yt) - pos) / max(pos, 1.0)) ** 0.5])
    loss_fn = nn.BCEWithLogitsLoss(pos_weight=pos_weight)
    opt = torch.optim.Adam(net.parameters(), lr=lr, weight_decay=1e-5)
    gen = torch.Generator().manual_seed(0)
    for epoch in range(epochs):
        perm = torch.randperm(len(xt), generator=gen)
        total = 0.0
        for start in range(0, len(xt), batch):
            idx = perm[start : start + batch]
            opt.zero_grad()
            loss = loss_fn(net(xt[idx]), yt[idx])
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        print(f"  {label} epoch {epoch + 1}/{epochs}: loss {total / len(xt):.4f}", flush=True)
    return net.eval()


def histogram(values: np.ndarray, bins: int = 10) -> dict[str, list[float]]:
    """Quantile bin edges and counts: the baseline the monitor computes PSI against."""
    edges = np.unique(np.quantile(values, np.linspace(0, 1, bins + 1)))
    counts, _ = np.histogram(values, bins=edges)
    return {"edges": edges.round(6).tolist(), "counts": counts.tolist()}


def drift_baselines(
    records: Sequence[Transaction], scores: np.ndarray, state: np.ndarray
) -> dict[str, Any]:
    """Inputs' and scores' histograms; state features (the worker bins them like fields)."""
    return {
        "features": {
            "amount": histogram(np.array([r.amount for r in records])),
            "distance_from_home_km": histogram(
                np.array([r.distance_from_home_km for r in records])
            ),
            "amount_sum_24h": histogram(state[:, STATE.names.index("amount_sum_24h")]),
        },
        "score": histogram(scores),
    }


VERSIONS: dict[str, dict[str, Any]] = {
    "v1": {
        "kind": "logistic regression",
        "build": logistic,
        "epochs": 6,
        "lr": 0.02,
        "batch": 1024,
        "train_rows": None,
    },
    "v2": {
        "kind": "MLP 64-32",
        "build": lambda d: mlp(d, (64, 32)),
        "epochs": 8,
        "lr": 0.003,
        "batch": 1024,
        "train_rows": None,
    },
    # Heavy on purpose, so that the GPU path has real work; trained briefly on a subset here.
    "v3": {
        "kind": "wide MLP 3x1024 (GPU benchmark)",
        "build": lambda d: mlp(d, (1024, 1024, 1024)),
        "epochs": 1,
        "lr": 0.0005,
        "batch": 512,
        "train_rows": 40_000,
    },
}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("models/fraud"))
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--versions", default="v1,v2,v3")
    args = parser.parse_args(argv)
    torch.manual_seed(args.seed)
    torch.set_num_threads(2)
    started = time.monotonic()

    print(f"generating {args.events:,} labelled transactions (seed {args.seed})", flush=True)
    records, labels = FraudGenerator(args.seed).training_data(args.events)
    # the velocity features by the worker's own state stage, over the history in order
    state = history_features(STATE, [r.card_id.encode() for r in records], records)
    cut = int(len(records) * 0.8)  # the last fifth in time is held out
    train_recs, test_recs = records[:cut], records[cut:]
    y_train, y_test = labels[:cut], labels[cut:]
    params = fit_params(train_recs, state[:cut])
    pre = make_preprocessor(params)
    x_train, x_test = pre.transform(train_recs, state[:cut]), pre.transform(test_recs, state[cut:])
    print(
        f"features: {len(pre.feature_names)}; train {len(x_train):,} "
        f"({int(y_train.sum())} fraud), held out {len(x_test):,} ({int(y_test.sum())} fraud)",
        flush=True,
    )

    for version in [v.strip() for v in args.versions.split(",") if v.strip()]:
        spec = VERSIONS[version]
        rows = spec["train_rows"] or len(x_train)
        net = train(
            spec["build"](x_train.shape[1]),
            x_train[:rows],
            y_train[:rows],
            epochs=spec["epochs"],
            lr=spec["lr"],
            batch=spec["batch"],
            label=version,
        )
        model = Scored(net).eval()
        with torch.inference_mode():
            scores = model(torch.from_numpy(x_test)).reshape(-1).numpy()
        auc = roc_auc(y_test, scores)
        print(
            f"{version} {spec['kind']}: held-out ROC AUC {auc:.3f} ({len(y_test):,} events, "
            f"{int(y_test.sum())} fraud)",
            flush=True,
        )
        out = export_model(
            model,
            args.out / version,
            name="fraud",
            version=version,
            feature_names=pre.feature_names,
            preprocessing=params,
            metrics={
                "roc_auc": round(auc, 4),
                "base_rate": round(float(labels.mean()), 5),
                "train_rows": rows,
            },
            extra={
                "kind": spec["kind"],
                "drift_baseline": drift_baselines(test_recs, scores, state[cut:]),
            },
            # attributions (streaming.explain) are measured from the training mean, in the
            # logit space of Scored.net
            baseline=x_train.astype(np.float64).mean(axis=0).tolist(),
            logit_module="net",
        )
        print(f"  exported {out}/model.onnx, model.pt, metadata.json", flush=True)
    print(f"done in {time.monotonic() - started:.0f} s", flush=True)


if __name__ == "__main__":
    main()
