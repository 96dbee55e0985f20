"""The throughput cost of exactly-once: the same backlog drained at-least-once and
exactly-once, in alternating pairs on one embedded broker.

    python -m loadtests.exactly_once [--events 60000] [--pairs 3] [--commit-interval-ms 500]

Exactly-once drains the pipeline before every transaction commit (worker.commit_interval_ms),
so its cost falls as the interval grows (and the duplicates a crash can cause do not depend
on it, unlike at-least-once). The median ratio of several pairs is the figure to quote.
"""

from __future__ import annotations

import argparse
import statistics

from streaming.config import load_config
from streaming.dev.broker import EmbeddedBroker
from streaming.dev.produce import produce_events
from streaming.kafka.topics import create_topics
from streaming.worker import Worker


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-c", "--config", default="pipelines/fraud/pipeline.yaml")
    parser.add_argument("--events", type=int, default=60_000)
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--commit-interval-ms", type=int, default=500)
    args = parser.parse_args()
    ratios = []
    with EmbeddedBroker() as broker:
        cfg = load_config(args.config, bootstrap=broker.bootstrap).with_overrides(
            **{"worker.commit_interval_ms": args.commit_interval_ms}
        )
        create_topics(cfg)
        produce_events(cfg, args.events, seed=1)
        print(
            f"backlog of {args.events:,} events; commit every {args.commit_interval_ms} ms",
            flush=True,
        )
        for i in range(args.pairs):
            rates = {}
            for mode in ("at-least-once", "exactly-once"):
                run_cfg = cfg.with_overrides(**{"kafka.group": f"eo-{mode}-{i}", "delivery": mode})
                stats = Worker(run_cfg, idle_exit_s=1.0, worker_id=f"eo-bench-{i}").run()
                rates[mode] = stats.rate()
                extra = (
                    f", {stats.transactions} transactions, "
                    f"{stats.transaction_s / max(stats.transactions, 1) * 1000:.1f} ms each"
                    if mode == "exactly-once"
                    else ""
                )
                print(f"  pair {i + 1} {mode:<14} {stats.rate():>9,.0f} ev/s{extra}", flush=True)
            ratio = rates["exactly-once"] / rates["at-least-once"]
            ratios.append(ratio)
            print(f"pair {i + 1}: exactly-once / at-least-once {ratio:.2f}", flush=True)
    print(
        f"exactly-once / at-least-once: median {statistics.median(ratios):.2f}, "
        f"min {min(ratios):.2f}, max {max(ratios):.2f} over {len(ratios)} pairs"
    )


if __name__ == "__main__":
    main()
