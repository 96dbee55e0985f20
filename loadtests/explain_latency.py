"""Does explaining hold up the rows it does not explain? Latency of both kinds, side by side.

    python -m loadtests.explain_latency [-c pipelines/fraud/pipeline.yaml] [--rate 5000]
        [--seconds 5] [--pairs 5]

The engine in-process (decode, state, preprocess, batch, score, decide, explain, encode; a sink
that acknowledges at once), fed the same generated events (real card keys, so a key's later
rows can wait behind its explained one) at a fixed offered rate, once with the config's
``reasons`` (explanations on) and once without, the order turning from pair to pair. Each
prediction's latency is from its event's feed to its acknowledgement. Rows are told apart by
their decision: explained rows are those at or above the review threshold (not ``approve``);
the unexplained ones are split by key: rows of a card that has an explained row may wait behind
it (a key's predictions stay in input order), rows of every other card never should. Printed
per pair: p50 / p99 of the other cards' rows with explanations off and on, of the explained
cards' unexplained rows with explanations on, and of the explained rows; then the medians and
ranges over pairs. No broker: its fetch wait (tens of ms here, see README,
"Latency and the embedded broker") would add the same to both kinds and hide the difference.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np

from streaming.config import ConfigError, PipelineConfig, load_config
from streaming.dev.inprocess import InMemoryMessage, InstantSink
from streaming.engine.engine import Engine
from streaming.engine.types import DeliveryCallback, Headers
from streaming.pipeline import load_pipeline


class TimedSink(InstantSink):
    """Acknowledges at once and keeps each prediction with the time it was produced."""

    def __init__(self, topic: str) -> None:
        super().__init__()
        self.topic = topic
        self.values: list[bytes] = []
        self.times: list[float] = []

    def produce(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None,
        headers: Headers | None,
        on_delivery: DeliveryCallback | None,
    ) -> None:
        with self.lock:
            if topic == self.topic and value is not None:
                self.times.append(time.perf_counter())
                self.values.append(value)
            if on_delivery is not None:
                on_delivery(None, None)


def messages(cfg: PipelineConfig, n: int) -> tuple[list[InMemoryMessage], list[str]]:
    """``n`` generated events with their card keys (one partition), and their event ids."""
    spec = load_pipeline(cfg.pipeline.module)
    events = spec.make_generator(1).batch(n, int(time.time() * 1000))
    msgs = [InMemoryMessage(e.value, e.key, i) for i, e in enumerate(events)]
    return msgs, [e.event_id for e in events]


def run(
    cfg: PipelineConfig, msgs: list[InMemoryMessage], ids: list[str], rate: float
) -> tuple[np.ndarray, np.ndarray]:
    """Feed ``msgs`` at ``rate`` (a step a millisecond): (latency ms, explained?) per event."""
    sink = TimedSink(cfg.topics.predictions)
    engine = Engine(cfg, sink)
    engine.start()
    fed = np.zeros(len(msgs))
    try:
        step = max(1, int(rate / 1000))
        start = time.perf_counter()
        for i in range(0, len(msgs), step):
            wait = start + i / rate - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
            fed[i : i + step] = time.perf_counter()
            engine.submit(msgs[i : i + step])
        if not engine.offsets.wait_drained(120):
            raise SystemExit("explain_latency: error: the engine did not drain in 120 s")
    finally:
        engine.close()
    index = {event_id: i for i, event_id in enumerate(ids)}
    latency = np.full(len(msgs), np.nan)
    explained = np.zeros(len(msgs), dtype=bool)
    for value, at in zip(sink.values, sink.times, strict=True):
        record = json.loads(value)
        i = index[record["event_id"]]
        latency[i] = (at - fed[i]) * 1000
        explained[i] = record["decision"] != "approve"
    if np.isnan(latency).any():
        raise SystemExit("explain_latency: error: some events got no prediction")
    return latency, explained


def _pct(values: np.ndarray) -> tuple[float, float]:
    return float(np.percentile(values, 50)), float(np.percentile(values, 99))


KINDS = (
    ("off", "other cards' rows, explanations off"),
    ("on", "other cards' rows, explanations on "),
    ("same", "explained cards' other rows, on   "),
    ("x", "explained rows                     "),
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-c", "--config", default="pipelines/fraud/pipeline.yaml")
    parser.add_argument("--rate", type=float, default=5000.0, help="offered events/s")
    parser.add_argument("--seconds", type=float, default=5.0, help="per run")
    parser.add_argument("--pairs", type=int, default=5)
    args = parser.parse_args(argv)
    cfg = load_config(args.config)
    if cfg.reasons is None:
        parser.error(f"{args.config} has no reasons section: nothing to compare")
    msgs, ids = messages(cfg, int(args.rate * args.seconds))
    keys = np.array([m.key() for m in msgs], dtype=object)
    print(
        f"explain latency: {len(msgs):,} events at {args.rate:,.0f}/s, {args.pairs} pairs "
        f"(in-process, feed to acknowledgement, ms)"
    )
    run(cfg.with_overrides(reasons=None), msgs[:2000], ids[:2000], args.rate)  # warm up
    got: dict[str, list[tuple[float, float]]] = {k: [] for k, _ in KINDS}
    share = same_share = 0.0
    for i in range(args.pairs):
        lat = {}
        for name in ["off", "on"] if i % 2 == 0 else ["on", "off"]:
            conf = cfg if name == "on" else cfg.with_overrides(reasons=None)
            lat[name], explained = run(conf, msgs, ids, args.rate)
        same = ~explained & np.isin(keys, np.unique(keys[explained]))
        other = ~explained & ~same
        share, same_share = float(explained.mean()), float(same.mean())
        parts = {
            "off": lat["off"][other],
            "on": lat["on"][other],
            "same": lat["on"][same],
            "x": lat["on"][explained],
        }
        for k, values in parts.items():
            got[k].append(_pct(values) if values.size else (float("nan"), float("nan")))
        print(
            f"   pair {i + 1}: "
            + "; ".join(f"{k} p50 {got[k][-1][0]:.2f} p99 {got[k][-1][1]:.2f}" for k, _ in KINDS),
            flush=True,
        )
    print(f"explained rows: {share:.2%} of the events; their cards' other rows: {same_share:.2%}")
    for k, label in KINDS:
        p50 = [p for p, _ in got[k]]
        p99 = [q for _, q in got[k]]
        print(
            f"{label}: median p50 {statistics.median(p50):.2f} ms ({min(p50):.2f}-{max(p50):.2f}), "
            f"p99 {statistics.median(p99):.2f} ms ({min(p99):.2f}-{max(p99):.2f}) "
            f"over {args.pairs} pairs"
        )
    return 0


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except ConfigError as exc:
        raise SystemExit(f"explain_latency: error: {exc}") from None
