"""What explaining costs per batch, next to the model call of the batch, side by side.

    python -m loadtests.explain_cost [-c pipelines/fraud/pipeline.yaml] [--version v2]
        [--events 51200] [--batch-size 256] [--share 0.01] [--rounds 5]
        [--methods auto,grad-x-input,grid]

Held-out events from the pipeline's generator are preprocessed into batches once. The rows to
explain are those scoring at or above the (1 - share) quantile of the scores: about ``share``
of the rows, as a review threshold would pick. Each round runs every batch through the model
alone (A), then through the model and the explanation of its picked rows with their reason
codes (B, one per method), the order turning from round to round so that no side always runs
on a warmer machine. Printed: the explanation's cost per explained row and per batch, its ratio
to the model call of the batch, and the throughput of A over each B per round (median, min,
max). ``grid`` is integrated gradients on a refined grid (torch autograd), the fallback for
networks that are not ReLU MLPs; ``auto`` is exact (linear, or ReLU pieces).

Not measured here: the worker's drain with explanations wired into the decision stage.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from streaming.config import load_config
from streaming.explain import ReasonCodes, make_explainer
from streaming.pipeline import load_pipeline
from streaming.runtimes.registry import create_runtime
from streaming.state import history_features

HELD_OUT_SEED = 2026


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-c", "--config", default="pipelines/fraud/pipeline.yaml")
    parser.add_argument("--version", help="model version (default: the config's first)")
    parser.add_argument("--events", type=int, default=51_200)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--share", type=float, default=0.01, help="share of rows explained")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--methods", default="auto,grad-x-input,grid")
    parser.add_argument("--grid-max-steps", type=int, default=512)
    args = parser.parse_args()
    if not 0 < args.share < 1 or args.rounds < 1 or args.batch_size < 1:
        parser.error("need 0 < --share < 1, --rounds >= 1, --batch-size >= 1")

    cfg = load_config(args.config)
    if cfg.reasons is None:
        parser.error(f"{args.config} has no reasons section: nothing to explain")
    versions = {v.version: v for v in cfg.model.versions}
    version = versions.get(args.version or cfg.model.versions[0].version)
    if version is None:
        parser.error(f"--version: choose one of {', '.join(versions)}")
    directory = cfg.version_dir(version)
    runtime = create_runtime(version.runtime, directory, threads=version.threads)
    runtime.load()
    runtime.warm_up((1, args.batch_size))
    spec = load_pipeline(cfg.pipeline.module)
    pre = spec.make_preprocessor(runtime.metadata.preprocessing)
    events = spec.make_generator(HELD_OUT_SEED).batch(args.events, now_ms=1_760_000_000_000)
    records = [spec.schema.model_validate_json(e.value) for e in events]
    # the per-card features the worker's state stage computes (one partition, in order)
    state = history_features(spec.state, [e.key for e in events], records) if spec.state else None
    started = time.perf_counter()
    batches = [
        pre.transform(records[i : i + args.batch_size])
        if state is None
        else pre.transform(records[i : i + args.batch_size], state[i : i + args.batch_size])
        for i in range(0, len(records), args.batch_size)
    ]
    preprocess_us = (time.perf_counter() - started) / len(batches) * 1e6
    scores = np.concatenate([runtime.predict(b) for b in batches])
    threshold = float(np.quantile(scores, 1 - args.share))
    picked = [np.flatnonzero(runtime.predict(b) >= threshold) for b in batches]
    n_explained = sum(len(p) for p in picked)
    codes = ReasonCodes.from_config(cfg, runtime.metadata.feature_names)
    explainers = _explainers(args, cfg, directory, runtime.metadata.raw)
    print(
        f"{cfg.model.name}/{version.version} ({version.runtime}, {version.threads} thread): "
        f"{len(batches)} batches of {args.batch_size}; {n_explained} of {len(records)} rows "
        f"explained ({n_explained / len(records):.2%}, score >= {threshold:.4f}); "
        f"preprocessing {preprocess_us:,.0f} us a batch",
        flush=True,
    )

    def model_only() -> tuple[float, float]:
        t0 = time.perf_counter()
        for b in batches:
            runtime.predict(b)
        return time.perf_counter() - t0, 0.0

    def with_explainer(
        explain: Callable[[np.ndarray], np.ndarray],
    ) -> Callable[[], tuple[float, float]]:
        def run() -> tuple[float, float]:
            spent = 0.0
            t0 = time.perf_counter()
            for b in batches:
                s = runtime.predict(b)
                t1 = time.perf_counter()
                explain_rows = np.flatnonzero(s >= threshold)
                if explain_rows.size:
                    codes.top(explain(b[explain_rows]), k=4)
                spent += time.perf_counter() - t1
            return time.perf_counter() - t0, spent

        return run

    sides: dict[str, Callable[[], tuple[float, float]]] = {"model": model_only}
    for name, explainer in explainers.items():
        sides[name] = with_explainer(explainer.attributions)
    ratios: dict[str, list[float]] = {name: [] for name in explainers}
    spent: dict[str, list[float]] = {name: [] for name in sides}
    for r in range(args.rounds):
        order = list(sides)
        if r % 2:
            order.reverse()
        totals = {}
        for name in order:
            totals[name], explain_s = sides[name]()
            spent[name].append(explain_s)
        for name in explainers:
            ratios[name].append(totals["model"] / totals[name])
        print(
            f"round {r + 1}: model alone {totals['model'] / len(batches) * 1e6:,.0f} us a batch; "
            + "; ".join(f"with {n} {totals['model'] / totals[n]:.3f}" for n in explainers),
            flush=True,
        )
    model_us = _model_call_us(runtime, batches)
    print(f"model call: {model_us:,.0f} us a batch of {args.batch_size} (median of batches)")
    for name in explainers:
        per_batch = statistics.median(spent[name]) / len(batches) * 1e6
        per_row = statistics.median(spent[name]) / max(n_explained, 1) * 1e6
        rs = ratios[name]
        print(
            f"{name:>13}: {per_row:,.0f} us per explained row, {per_batch:,.0f} us per batch "
            f"({per_batch / model_us:.2f}x the model call, {per_batch / preprocess_us:.2f}x "
            f"preprocessing); throughput model alone / with it: median "
            f"{statistics.median(rs):.3f}, min {min(rs):.3f}, max {max(rs):.3f} "
            f"over {args.rounds} rounds"
        )


def _explainers(args: argparse.Namespace, cfg, directory: Path, metadata: dict):  # type: ignore[no-untyped-def]
    """The explainers named by --methods, with the config's grid settings."""
    reasons = cfg.reasons
    out = {}
    for name in [m.strip() for m in args.methods.split(",") if m.strip()]:
        if name == "grid":
            out[name] = make_explainer(
                directory,
                metadata,
                "integrated-gradients",
                steps=reasons.steps,
                max_steps=args.grid_max_steps,
                tolerance=reasons.tolerance,
                piecewise=False,
            )
        else:
            out[name] = make_explainer(directory, metadata, name)
    import torch  # loaded by the explainers above; one thread, as the worker's runtimes use

    torch.set_num_threads(1)
    return out


def _model_call_us(runtime, batches: list[np.ndarray]) -> float:  # type: ignore[no-untyped-def]
    times = []
    for b in batches:
        t0 = time.perf_counter()
        runtime.predict(b)
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e6


if __name__ == "__main__":
    main()
