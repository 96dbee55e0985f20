"""What tracing costs: worker drain throughput with tracing on (defaults) vs off, in pairs.

    python -m loadtests.trace_cost [--events 100000] [--pairs 4]

One embedded broker, one backlog; each pair drains it twice in fresh consumer groups, once
with tracing off and once on (``tracing.ratio`` and ``tracing.slow_ms`` at their defaults,
spans sent to a local OTLP/HTTP receiver), the order alternating from pair to pair so that
neither side always runs on a warmer machine. The ratio on/off per pair, and their median,
is the figure (target >= 0.95). Each drain's events are all slow by event time (a backlog),
so ``slow_ms: auto`` (the current p99) is what keeps the slow share at about 1%.
"""

from __future__ import annotations

import argparse
import statistics
import time

from streaming.config import PipelineConfig, load_config
from streaming.dev.broker import EmbeddedBroker
from streaming.dev.otlp_receiver import OtlpReceiver
from streaming.dev.produce import produce_events
from streaming.kafka.topics import create_topics
from streaming.worker import Worker


def _drain(cfg: PipelineConfig, group: str, tracing: dict[str, object]) -> tuple[float, str]:
    worker = Worker(cfg.with_overrides(**{"kafka.group": group, **tracing}), idle_exit_s=1.0)
    stats = worker.run()
    note = ""
    if worker.engine is not None and worker.engine.tracer is not None:
        t = worker.engine.tracer
        note = f"  traced {t.kept}, spans sent {t.export.sent:,} dropped {t.export.dropped:,}"
    return stats.rate(), note


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-c", "--config", default="pipelines/fraud/pipeline.yaml")
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--pairs", type=int, default=4)
    args = parser.parse_args()
    ratios = []
    with EmbeddedBroker() as broker, OtlpReceiver() as rx:
        cfg = load_config(args.config, bootstrap=broker.bootstrap)
        create_topics(cfg)
        time.sleep(1)
        produce_events(cfg, args.events, seed=1)
        on = {"tracing.enabled": True, "tracing.endpoint": rx.endpoint}
        print(
            f"backlog of {args.events:,} events; tracing on = ratio "
            f"{cfg.tracing.ratio:g}, slow_ms {cfg.tracing.slow_ms}, to {rx.endpoint}",
            flush=True,
        )
        for i in range(args.pairs):
            order = [("off", {}), ("on", on)]
            if i % 2:
                order.reverse()
            rates: dict[str, float] = {}
            for name, tracing in order:
                rates[name], note = _drain(cfg, f"trace-cost-{i}-{name}", tracing)
                print(f"pair {i + 1} tracing {name:3}: {rates[name]:>9,.0f} ev/s{note}", flush=True)
            ratio = rates["on"] / rates["off"]
            ratios.append(ratio)
            print(f"pair {i + 1}: on/off {ratio:.3f}", flush=True)
        print(f"spans received by the collector: {len(rx.spans):,}")
    print(
        f"tracing on / off: median {statistics.median(ratios):.3f}, "
        f"min {min(ratios):.3f}, max {max(ratios):.3f} over {len(ratios)} pairs"
    )


if __name__ == "__main__":
    main()
