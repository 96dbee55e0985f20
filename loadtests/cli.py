"""``streaming loadtest``: scenarios against the embedded broker or any Kafka, a report with
baselines measured in the same run, and a capacity recommendation."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

SCENARIOS = ("drain", "steady", "step", "spike", "soak", "scale-out")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--scenario",
        action="append",
        choices=(*SCENARIOS, "all"),
        required=True,
        help="repeat for several; 'all' runs every one",
    )
    p.add_argument("--embedded", action="store_true", help="start an embedded broker for it")
    p.add_argument("--out", type=Path, help="report folder (default loadtest-reports/<time>)")
    p.add_argument("--events", type=int, default=100_000, help="drain / scale-out backlog")
    p.add_argument(
        "--rates",
        default="1000,2000,4000",
        help="steady rates (events/s), comma-separated; step uses them and goes on doubling",
    )
    p.add_argument(
        "--step-rates",
        help="the step scenario's rates (default: --rates, then doubling three more times)",
    )
    p.add_argument("--seconds", type=float, default=20.0, help="length of each steady phase")
    p.add_argument("--soak-seconds", type=float, default=600.0)
    p.add_argument("--target-p99-ms", type=float, default=100.0)
    p.add_argument("--spike-factor", type=float, default=4.0)
    p.add_argument("--max-workers", type=int, default=3, help="scale-out goes 1..this")
    p.add_argument(
        "--pool",
        action="store_true",
        help="scale-out: one worker of 1..--max-workers processes (--processes), not N workers",
    )
    p.add_argument("--peak-rate", type=float, help="events/s to plan replicas and partitions for")
    p.add_argument("--no-baselines", action="store_true")


def run(args: argparse.Namespace, load_cfg: Any) -> int:
    from loadtests.load import LoadTestError
    from streaming.dev.broker import EmbeddedBroker

    scenarios = list(SCENARIOS) if "all" in args.scenario else list(dict.fromkeys(args.scenario))
    rates = [float(r) for r in args.rates.split(",") if r.strip()]
    if not rates or any(r <= 0 for r in rates):
        print("streaming: error: --rates needs positive numbers, e.g. 1000,2000", file=sys.stderr)
        return 2
    out = args.out or Path("loadtest-reports") / time.strftime("%Y%m%d-%H%M%S")
    broker = EmbeddedBroker().start() if args.embedded else None
    started = time.monotonic()

    def progress(text: str) -> None:
        print(f"[{time.monotonic() - started:6.1f} s] {text}", flush=True)

    try:
        cfg = load_cfg(broker.bootstrap if broker else None)
        workdir = out / "work"
        workdir.mkdir(parents=True, exist_ok=True)
        results = _run_all(cfg, workdir, scenarios, rates, args, progress)
        from loadtests.report import write_report

        meta = {
            "pipeline": cfg.name,
            "bootstrap": "embedded broker" if broker else cfg.kafka.bootstrap,
            "model": ", ".join(
                f"{v.version} ({v.runtime}, {v.device})" for v in cfg.model.versions
            ),
            "scenarios": ", ".join(scenarios),
            "cpus": os.cpu_count(),
            "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        }
        report = write_report(out, results, meta, args.peak_rate)
    except LoadTestError as exc:
        print(f"streaming: error: {exc}", file=sys.stderr)
        return 2
    finally:
        if broker is not None:
            broker.stop()
    progress(f"report: {report}")
    unmatched = sum(r.get("unmatched", 0) for r in results.values() if isinstance(r, dict))
    if unmatched:
        print(f"streaming: {unmatched} events got no output: see {report}", file=sys.stderr)
        return 1
    return 0


def _run_all(cfg, workdir, scenarios, rates, args, progress) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    from loadtests import scenarios as sc
    from loadtests.baseline_runs import run_baselines

    results: dict[str, Any] = {}
    if not args.no_baselines:
        progress("baselines: passthrough, model only, naive faust agent")
        results["baselines"] = run_baselines(
            cfg, workdir, args.events, max(1000, min(args.events // 10, 10_000)), progress
        )
    for name in scenarios:
        progress(f"scenario {name}")
        if name == "drain":
            results["drain"] = sc.drain(cfg, workdir, progress, args.events)
        elif name == "steady":
            for rate in rates:
                results[f"steady@{rate:g}"] = sc.steady(cfg, workdir, progress, rate, args.seconds)
        elif name == "step":
            if args.step_rates:
                ladder = sorted(float(r) for r in args.step_rates.split(",") if r.strip())
            else:
                ladder = sorted(rates)
                while len(ladder) < len(rates) + 3:
                    ladder.append(ladder[-1] * 2)
            results["step"] = sc.step(
                cfg, workdir, progress, ladder, args.seconds, args.target_p99_ms
            )
        elif name == "spike":
            results["spike"] = sc.spike(
                cfg,
                workdir,
                progress,
                rates[0],
                args.spike_factor,
                args.seconds,
                args.target_p99_ms,
            )
        elif name == "soak":
            results["soak"] = sc.soak(cfg, workdir, progress, rates[0], args.soak_seconds)
        elif name == "scale-out":
            results["scale-out"] = sc.scale_out(
                cfg, workdir, progress, args.events, args.max_workers, args.pool
            )
    return results
