"""What the state stage costs: worker drain throughput with it over the same pipeline
without it, in repeated side-by-side rounds on one backlog.

    python -m loadtests.state_cost [--events 100000] [--pairs 3]

One embedded broker, one backlog of the generator's events (keys = card ids). A recording
drain with the stage first keeps each event's state columns (loadtests.fraud_recording).
Each round then drains the backlog three times, each in a fresh consumer group (and so with
a fresh changelog), in an order that turns from round to round:

- ``on``: the fraud pipeline with its stage and changelog;
- ``looked-up``: without the stage, the columns the stage computed looked up by event id
  (loadtests.fraud_looked_up): the model, its decisions and the explanations of flagged
  events do the same work as with the stage. The target's baseline: on / looked-up >= 0.85.
- ``constant``: without the stage, constant columns (loadtests.stateless_fraud), as the
  earlier runs of this benchmark compared. The model then sees no history and sends about a
  fifth as many events to review or decline, each explained, so on / constant also counts
  that work (small against the machine's noise in the runs so far).

Quote the medians; a shared machine is noisy.
"""

from __future__ import annotations

import argparse
import statistics

from loadtests.drain_ratio import fill_backlog, timed_drain
from loadtests.fraud_recording import FEATURES
from streaming.config import load_config
from streaming.dev.broker import EmbeddedBroker

SIDES = {
    "on": None,  # the configured pipeline module
    "looked-up": "loadtests.fraud_looked_up",
    "constant": "loadtests.stateless_fraud",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-c", "--config", default="pipelines/fraud/pipeline.yaml")
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--pairs", type=int, default=3, help="rounds of the three drains")
    args = parser.parse_args()
    names = list(SIDES)
    ratios: dict[str, list[float]] = {"looked-up": [], "constant": []}
    if args.pairs < 1 or args.events < 1:
        parser.error("--pairs and --events: at least 1")
    if load_config(args.config).pipeline.module != "pipelines.fraud":
        parser.error("-c: the baselines are the fraud pipeline's; configure pipelines.fraud")
    with EmbeddedBroker() as broker:
        cfg = load_config(args.config, bootstrap=broker.bootstrap)
        fill_backlog(cfg, args.events)
        print(f"backlog of {args.events:,} events", flush=True)
        timed_drain(cfg, "state-cost-record", **{"pipeline.module": "loadtests.fraud_recording"})
        FEATURES.freeze()
        print("recorded the stage's columns of every event", flush=True)
        for i in range(args.pairs):
            order = names[i % 3 :] + names[: i % 3]  # each side runs first in turn
            got = {
                side: timed_drain(
                    cfg,
                    f"state-cost-{side}-{i}",
                    **{"pipeline.module": SIDES[side] or cfg.pipeline.module},
                )
                for side in order
            }
            for base in ratios:
                ratios[base].append(got["on"][0] / got[base][0])
            print(
                f"round {i + 1}: "
                + "  ".join(f"{s} {got[s][0]:>7,.0f} ev/s ({got[s][1]:4.1f} us)" for s in names)
                + "  on/looked-up {:.2f}  on/constant {:.2f}".format(
                    ratios["looked-up"][-1], ratios["constant"][-1]
                ),
                flush=True,
            )
    for base, rs in ratios.items():
        quartiles = statistics.quantiles(rs, n=4, method="inclusive") if len(rs) > 1 else rs * 3
        print(
            f"with / without the state stage ({base}): median {statistics.median(rs):.2f}, "
            f"quartiles {quartiles[0]:.2f}-{quartiles[2]:.2f}, min {min(rs):.2f}, "
            f"max {max(rs):.2f} over {len(rs)} rounds, {sum(r >= 0.85 for r in rs)} of them "
            ">= 0.85" + (" (the target's baseline)" if base == "looked-up" else "")
        )


if __name__ == "__main__":
    main()
