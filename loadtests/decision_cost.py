"""What the decision graph costs: drain throughput of the graph pipeline against the
single-model pipeline, in-process (decode, preprocess, batch, score, decide, encode; a sink
that acknowledges at once), run in turn A B A B ... in one process and reported as ratios.

    python -m loadtests.decision_cost [--events 40000] [--pairs 5]
        [--single pipelines/fraud/pipeline.yaml] [--graph pipelines/fraud/pipeline-graph.yaml]

The target (issue 20): the graph's drain is at least 0.80 of the single model's. Machines
here are shared and noisy: quote the median ratio and its spread, never one absolute figure.
"""

from __future__ import annotations

import argparse
import statistics

from loadtests.engine_bench import engine_in_process
from streaming.config import ConfigError, load_config

TARGET = 0.80


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--single", default="pipelines/fraud/pipeline.yaml")
    parser.add_argument("--graph", default="pipelines/fraud/pipeline-graph.yaml")
    parser.add_argument("--events", type=int, default=40_000)
    parser.add_argument("--pairs", type=int, default=5)
    args = parser.parse_args(argv)
    single, graph = load_config(args.single), load_config(args.graph)
    if graph.decision.graph is None:
        raise SystemExit(f"decision_cost: error: {args.graph} has no decision.graph")
    print(
        f"decision cost: {args.events:,} events per drain, {args.pairs} pairs "
        f"(single: {args.single}, graph: {args.graph})"
    )
    engine_in_process(single, min(args.events, 5_000), None, single.worker.poll_batch)  # warm
    ratios = []
    for i in range(args.pairs):
        a, _, _ = engine_in_process(single, args.events, None, single.worker.poll_batch)
        b, _, _ = engine_in_process(graph, args.events, None, graph.worker.poll_batch)
        ratios.append(b / a)
        print(f"   pair {i + 1}: single {a:>9,.0f}/s  graph {b:>9,.0f}/s  ratio {b / a:.2f}")
    med = statistics.median(ratios)
    verdict = "meets" if med >= TARGET else "misses"
    print(
        f"graph / single drain: median {med:.2f} (min {min(ratios):.2f}, max {max(ratios):.2f}) "
        f"over {len(ratios)} pairs; {verdict} the {TARGET:.2f} target"
    )
    return 0


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except ConfigError as exc:
        raise SystemExit(f"decision_cost: error: {exc}") from None
