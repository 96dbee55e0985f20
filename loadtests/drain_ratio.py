"""Worker drain throughput as a ratio of the passthrough's, in repeated side-by-side pairs.

    python -m loadtests.drain_ratio [--events 100000] [--pairs 5]

One embedded broker, one backlog; each pair drains it with the passthrough (consume-decode-
produce, no model) and then with the worker, each in a fresh consumer group. A single pair is
noisy on a shared machine; the median of several is the figure to quote.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time

from confluent_kafka.admin import AdminClient, NewTopic

from loadtests.baselines import passthrough
from streaming.config import PipelineConfig, load_config
from streaming.dev.broker import EmbeddedBroker
from streaming.dev.produce import produce_events
from streaming.kafka.topics import create_topics
from streaming.worker import Worker


def process_cpu_s() -> float:
    """This process's CPU seconds so far (user + system, all threads)."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def fill_backlog(cfg: PipelineConfig, events: int, *also: PipelineConfig) -> None:
    """Create the pipeline's topics (and those of ``also``), then write ``events`` generated
    events (seed 1): the one backlog that every drain of a paired benchmark reads."""
    for c in (cfg, *also):
        create_topics(c)
    time.sleep(1)  # let the new topics' metadata settle before the producer asks for it
    produce_events(cfg, events, seed=1)


def timed_drain(cfg: PipelineConfig, group: str, **overrides: object) -> tuple[float, float]:
    """One worker drains the backlog in a fresh group ``group``, with dotted-key
    ``overrides``: (events/s, this process's CPU us per event consumed)."""
    worker = Worker(cfg.with_overrides(**{"kafka.group": group, **overrides}), idle_exit_s=1.0)
    c0 = process_cpu_s()
    stats = worker.run()
    if sum(stats.dead_letters.values()):  # a backlog of valid events: each one is scored
        raise RuntimeError(
            f"drain {group}: events dead-lettered ({dict(stats.dead_letters)}), so it did not "
            "measure the pipeline; the worker's log says why"
        )
    return stats.rate(), (process_cpu_s() - c0) / max(stats.consumed, 1) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-c", "--config", default="pipelines/fraud/pipeline.yaml")
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--pairs", type=int, default=5)
    args = parser.parse_args()
    ratios = []
    with EmbeddedBroker() as broker:
        cfg = load_config(args.config, bootstrap=broker.bootstrap)
        AdminClient({"bootstrap.servers": broker.bootstrap}).create_topics(
            [NewTopic("drain-ratio.passthrough", cfg.topics.partitions, 1)]
        )
        fill_backlog(cfg, args.events)
        print(
            f"backlog of {args.events:,} events; model {cfg.model.name}/"
            f"{cfg.model.versions[0].version} ({cfg.model.versions[0].runtime})"
        )
        for i in range(args.pairs):
            c0 = process_cpu_s()
            pt = passthrough(cfg, "drain-ratio.passthrough", args.events)
            c1 = process_cpu_s()
            worker = Worker(
                cfg.with_overrides(**{"kafka.group": f"drain-ratio-{i}"}), idle_exit_s=1.0
            )
            stats = worker.run()
            c2 = process_cpu_s()
            ratio = stats.rate() / pt.rate
            ratios.append(ratio)
            pt_us = (c1 - c0) / args.events * 1e6
            w_us = (c2 - c1) / args.events * 1e6
            print(
                f"pair {i + 1}: passthrough {pt.rate:>9,.0f} ev/s ({pt_us:4.1f} us cpu/event)  "
                f"worker {stats.rate():>9,.0f} ev/s ({w_us:4.1f} us)  ratio {ratio:.2f}",
                flush=True,
            )
    print(
        f"worker / passthrough: median {statistics.median(ratios):.2f}, "
        f"min {min(ratios):.2f}, max {max(ratios):.2f} over {len(ratios)} pairs"
    )


if __name__ == "__main__":
    main()
