"""Drain throughput with explanations on, as a ratio of the same pipeline without them.

    python -m loadtests.explain_drain [-c pipelines/fraud/pipeline.yaml] [--events 100000]
        [--pairs 6]

One embedded broker, one backlog; each pair drains it twice in fresh consumer groups: once
with the config as given (its ``reasons`` section: explanations on) and once with ``reasons``
removed, the order turning from pair to pair. The explained drains write their predictions
to a topic of their own, and the first one is read back to count the share of predictions
that carry reasons: the issue's target (>= 0.90) is stated with about 1% explained, and this
share says what was measured. A worker whose decision stage does not call streaming.explain
yet writes no reasons: the run says so, and its ratio measures nothing.

``--in-process`` pairs the same drains of the engine without a broker (decode, state, score,
decide, explain, encode; a sink that acknowledges at once) on generated events with their card
keys: the explainer's own cost, without the broker's noise. ``--gil-switch-ms`` sets
``worker.gil_switch_interval_ms`` for both sides of every pair.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import uuid

from confluent_kafka import Consumer

from loadtests.drain_ratio import fill_backlog, timed_drain
from streaming.config import PipelineConfig, load_config
from streaming.dev.broker import EmbeddedBroker


def _explained_share(cfg: PipelineConfig, topic: str, events: int) -> tuple[int, int]:
    """(predictions read, predictions with a non-empty ``reasons``) from ``topic``."""
    consumer = Consumer(
        {
            "bootstrap.servers": cfg.kafka.bootstrap,
            "group.id": f"explain-drain-read-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            # a reader whose latency does not matter: the embedded broker walks long logs
            "fetch.wait.max.ms": 500,
            "session.timeout.ms": 6000,
        }
    )
    consumer.subscribe([topic])
    seen = explained = 0
    deadline = time.monotonic() + 120
    try:
        while seen < events and time.monotonic() < deadline:
            for msg in consumer.consume(5000, timeout=1.0):
                if msg.error() is not None:
                    continue
                seen += 1
                if json.loads(msg.value()).get("reasons"):
                    explained += 1
    finally:
        consumer.close()
    return seen, explained


def _in_process(cfg: PipelineConfig, events: int, pairs: int) -> None:
    """The pairs in-process (module docstring): same events, order turning each pair."""
    from loadtests.decision_cost import drain
    from loadtests.explain_latency import messages

    msgs, _ = messages(cfg, events)
    off_cfg = cfg.with_overrides(reasons=None)
    drain(cfg, msgs[: min(len(msgs), 5_000)])  # warm the process (imports, allocator)
    print(f"in-process: {events:,} events per drain", flush=True)
    ratios, cpu_ratios = [], []
    for i in range(pairs):
        got = {}
        for name in ["off", "on"] if i % 2 == 0 else ["on", "off"]:
            got[name] = drain(cfg if name == "on" else off_cfg, msgs)
        ratios.append(got["on"][0] / got["off"][0])
        cpu_ratios.append(got["off"][1] / got["on"][1])
        print(
            f"pair {i + 1}: off {got['off'][0]:>9,.0f} ev/s ({got['off'][1]:4.1f} us cpu/event)  "
            f"on {got['on'][0]:>9,.0f} ev/s ({got['on'][1]:4.1f} us)  on/off {ratios[-1]:.3f} "
            f"(cpu per event off/on {cpu_ratios[-1]:.3f})",
            flush=True,
        )
    _summary(ratios, cpu_ratios)


def _summary(ratios: list[float], cpu_ratios: list[float]) -> None:
    print(
        f"explanations on / off: median {statistics.median(ratios):.3f}, "
        f"min {min(ratios):.3f}, max {max(ratios):.3f} over {len(ratios)} pairs"
    )
    print(
        f"CPU per event off / on (less sensitive to a busy machine): median "
        f"{statistics.median(cpu_ratios):.3f}, min {min(cpu_ratios):.3f}, "
        f"max {max(cpu_ratios):.3f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-c", "--config", default="pipelines/fraud/pipeline.yaml")
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--pairs", type=int, default=6)
    parser.add_argument("--in-process", action="store_true", help="the engine, no broker")
    parser.add_argument("--gil-switch-ms", type=float, help="worker.gil_switch_interval_ms")
    args = parser.parse_args()
    tuning = (
        {} if args.gil_switch_ms is None else {"worker.gil_switch_interval_ms": args.gil_switch_ms}
    )
    if args.in_process:
        cfg = load_config(args.config).with_overrides(**tuning)
        if cfg.reasons is None:
            parser.error(f"{args.config} has no reasons section: nothing to compare")
        _in_process(cfg, args.events, args.pairs)
        return
    ratios, cpu_ratios = [], []
    with EmbeddedBroker() as broker:
        cfg = load_config(args.config, bootstrap=broker.bootstrap).with_overrides(**tuning)
        if cfg.reasons is None:
            parser.error(f"{args.config} has no reasons section: nothing to compare")
        explained_topic = f"{cfg.topics.predictions}.explained"
        fill_backlog(
            cfg, args.events, cfg.with_overrides(**{"topics.predictions": explained_topic})
        )
        print(f"backlog of {args.events:,} events", flush=True)
        on = {"topics.predictions": explained_topic}
        off = {"reasons": None}
        for i in range(args.pairs):
            order = [("off", off), ("on", on)]
            if i % 2:
                order.reverse()
            rates, cpu = {}, {}
            for name, overrides in order:
                rates[name], cpu[name] = timed_drain(cfg, f"explain-drain-{i}-{name}", **overrides)
                print(
                    f"pair {i + 1} explanations {name:3}: {rates[name]:>9,.0f} ev/s "
                    f"({cpu[name]:4.1f} us cpu/event)",
                    flush=True,
                )
            ratios.append(rates["on"] / rates["off"])
            cpu_ratios.append(cpu["off"] / cpu["on"])
            print(
                f"pair {i + 1}: on/off {ratios[-1]:.3f} "
                f"(cpu per event off/on {cpu_ratios[-1]:.3f})",
                flush=True,
            )
        seen, explained = _explained_share(cfg, explained_topic, args.events)
    share = explained / seen if seen else 0.0
    print(
        f"first explained drain: {explained:,} of {seen:,} predictions carry reasons ({share:.2%})"
    )
    if explained == 0:
        print(
            "no prediction carries reasons: explanations are not wired; the ratio measures nothing"
        )
    _summary(ratios, cpu_ratios)


if __name__ == "__main__":
    main()
