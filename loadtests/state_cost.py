"""What the state stage costs: worker drain throughput with it over the same pipeline
without it, in repeated side-by-side pairs on one backlog.

    python -m loadtests.state_cost [--events 100000] [--pairs 3]

One embedded broker, one backlog of the generator's events (keys = card ids); each pair
drains it with the fraud pipeline without its stage (loadtests.stateless_fraud: constant
state columns, everything else the same) and with it (which first alternates), each in a
fresh consumer group.
The target: with / without >= 0.85. Quote the median; a shared machine is noisy.
"""

from __future__ import annotations

import argparse
import statistics

from loadtests.drain_ratio import fill_backlog, timed_drain
from streaming.config import load_config
from streaming.dev.broker import EmbeddedBroker


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-c", "--config", default="pipelines/fraud/pipeline.yaml")
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--pairs", type=int, default=3)
    args = parser.parse_args()
    ratios = []
    with EmbeddedBroker() as broker:
        cfg = load_config(args.config, bootstrap=broker.bootstrap)
        fill_backlog(cfg, args.events)
        print(f"backlog of {args.events:,} events", flush=True)
        for i in range(args.pairs):
            # the order flips each pair, so that neither side always drains first
            runs = [("off", "loadtests.stateless_fraud"), ("on", cfg.pipeline.module)]
            got = {
                side: timed_drain(cfg, f"state-cost-{side}-{i}", **{"pipeline.module": module})
                for side, module in (runs if i % 2 == 0 else runs[::-1])
            }
            (base, base_us), (with_state, state_us) = got["off"], got["on"]
            ratios.append(with_state / base)
            print(
                f"pair {i + 1}: without {base:>8,.0f} ev/s ({base_us:4.1f} us cpu/event)  "
                f"with {with_state:>8,.0f} ev/s ({state_us:4.1f} us)  "
                f"ratio {ratios[-1]:.2f}",
                flush=True,
            )
    print(
        f"with / without the state stage: median {statistics.median(ratios):.2f}, "
        f"min {min(ratios):.2f}, max {max(ratios):.2f} over {len(ratios)} pairs (target 0.85)"
    )


if __name__ == "__main__":
    main()
