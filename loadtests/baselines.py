"""Baselines measured side by side with the worker, so every figure is a ratio from one run.

- ``passthrough``: the I/O ceiling. A plain confluent-kafka consume -> JSON decode -> produce
  loop with no model, batch consume, committing what is delivered.
- ``naive_per_event``: what a team writes by hand, Quix-style: poll one message, validate,
  preprocess one row, score one row, produce one prediction.
- ``model_passthrough``: the passthrough's loop with the pipeline's own work added, a poll
  batch at a time: validate against the schema, the state stage if any, preprocess, one model
  call, produce a prediction each. No ledger, decisions, telemetry or metrics: the floor of the
  event path for that pipeline and model, against which the worker's own cost shows.

Each drains the input topic from the start in its own consumer group and stops once it has
produced an output for ``n`` events.

    python -m loadtests.baselines -c CONFIG --events N [--model]

runs the passthrough (with ``--model``, the model passthrough) as a process of its own, writing
to the predictions topic: the load test starts it the way it starts a worker and times it with
the same reader, so the two drains are measured alike (the reader's share of the cores
included).
"""

from __future__ import annotations

import argparse
import json
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, Message, Producer

from streaming.config import PipelineConfig, VersionConfig, load_config
from streaming.kafka import settings as kafka
from streaming.kafka.sink import produce_when_room
from streaming.observability.latency import LatencyRecorder
from streaming.observability.threads import named_thread
from streaming.pipeline import PipelineSpec, load_pipeline
from streaming.runtimes.base import Runtime
from streaming.runtimes.registry import create_runtime
from streaming.state import StateStage


@dataclass
class DrainResult:
    name: str
    events: int
    seconds: float
    end_to_end_ms: LatencyRecorder
    steady_end_to_end_ms: LatencyRecorder = field(default_factory=LatencyRecorder)

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0


class _Tally:
    """Delivery reports of one baseline: count, latency, and the active time span."""

    def __init__(self, steady_from_ms: Callable[[], int] | None = None) -> None:
        self.acked = 0
        self.first: float | None = None
        self.last = 0.0
        self.latency = LatencyRecorder()
        self.steady = LatencyRecorder()
        self._steady_from_ms = steady_from_ms

    def started(self) -> None:
        if self.first is None:
            self.first = time.monotonic()

    def delivered(self, ts_ms: int, err: object, _msg: object) -> None:
        if err is not None:
            return
        self.acked += 1
        self.last = time.monotonic()
        ms = time.time() * 1000 - ts_ms
        self.latency.record(ms)
        if self._steady_from_ms is not None and ts_ms >= self._steady_from_ms():
            self.steady.record(ms)

    def result(self, name: str) -> DrainResult:
        span = self.last - (self.first or self.last)
        return DrainResult(name, self.acked, span, self.latency, self.steady)


def _produce(
    producer: Producer, topic: str, value: bytes, key: bytes | None, ts_ms: int, tally: _Tally
) -> None:
    produce_when_room(
        producer,
        topic,
        value,
        key,
        None,
        lambda e, m: tally.delivered(ts_ms, e, m),
        lambda: producer.poll(0.01),
    )


def _clients(
    cfg: PipelineConfig, label: str, assigned: threading.Event | None = None
) -> tuple[Consumer, Producer]:
    group = f"{cfg.kafka.group}-{label}-{uuid.uuid4().hex[:6]}"
    consumer = Consumer({**kafka.consumer_settings(cfg.kafka, label), "group.id": group})
    producer = Producer(kafka.producer_settings(cfg.kafka, label))
    consumer.subscribe(
        [cfg.topics.input], on_assign=lambda *_: assigned.set() if assigned is not None else None
    )
    return consumer, producer


def _drain_batches(
    consumer: Consumer,
    producer: Producer,
    tally: _Tally,
    n: int,
    timeout_s: float,
    handle: Callable[[list[Message]], None],
) -> None:
    """The worker's polling (what is there now, else block for the first message), each poll
    batch's first ``n`` good messages to ``handle``, commits after each batch; until ``n``
    outputs are acknowledged or ``timeout_s``. Flushes the producer, closes the consumer."""
    deadline = time.monotonic() + timeout_s
    seen = 0
    try:
        while tally.acked < n and time.monotonic() < deadline:
            msgs = consumer.consume(num_messages=2000, timeout=0)
            if not msgs:
                first_msg = consumer.poll(0.05)
                msgs = [] if first_msg is None else [first_msg]
            if msgs:
                tally.started()
            fresh = [m for m in msgs if not m.error()][: max(n - seen, 0)]
            seen += len(fresh)
            if fresh:
                handle(fresh)
            producer.poll(0)
            if msgs:
                consumer.commit(asynchronous=True)
        producer.flush(30)
    finally:
        consumer.close()


def passthrough(
    cfg: PipelineConfig,
    out_topic: str,
    n: int,
    timeout_s: float = 300.0,
    assigned: threading.Event | None = None,
    steady_from_ms: Callable[[], int] | None = None,
) -> DrainResult:
    """The I/O ceiling: consume in batches, decode JSON, produce, commit; no model.

    ``steady_from_ms`` (latency runs): events at or after that event time are also recorded
    apart, as the worker does, to leave out a run's start transient.
    """
    consumer, producer = _clients(cfg, "passthrough", assigned)
    tally = _Tally(steady_from_ms)

    def relay(msgs: list[Message]) -> None:
        for m in msgs:
            value = m.value() or b""
            try:
                ts = int(json.loads(value).get("ts_ms", 0))
            except (ValueError, AttributeError):
                ts = 0
            _produce(producer, out_topic, value, m.key(), ts, tally)

    _drain_batches(consumer, producer, tally, n, timeout_s, relay)
    return tally.result("passthrough (no model)")


@dataclass
class _ModelParts:
    """The pipeline's schema, state stage, preprocessor and first model version, loaded."""

    spec: PipelineSpec
    model: str
    version: VersionConfig
    runtime: Runtime
    pre: Any
    stage: StateStage | None

    def body(self, record: Any, score: float) -> bytes:
        """A prediction as a hand-written loop would send it."""
        return json.dumps(
            {
                "event_id": getattr(record, self.spec.id_field),
                "score": score,
                "ts_ms": getattr(record, self.spec.ts_field),
                "model": self.model,
                "version": self.version.version,
            }
        ).encode()


def model_parts(cfg: PipelineConfig) -> _ModelParts:
    spec = load_pipeline(cfg.pipeline.module)
    version = cfg.model.versions[0]
    runtime = create_runtime(
        version.runtime, cfg.version_dir(version), version.device, version.threads
    )
    runtime.load()
    pre = spec.make_preprocessor(runtime.metadata.preprocessing)
    stage = StateStage(spec.state) if spec.state is not None else None
    return _ModelParts(spec, cfg.model.name, version, runtime, pre, stage)


def model_passthrough(
    cfg: PipelineConfig,
    out_topic: str,
    n: int,
    timeout_s: float = 300.0,
    assigned: threading.Event | None = None,
) -> DrainResult:
    """The passthrough plus the pipeline's work, a poll batch at a time: validate, state,
    preprocess, one model call, a prediction each. An event the schema refuses is skipped
    (the load tests that use it send none)."""
    parts = model_parts(cfg)
    validate = parts.spec.schema.__pydantic_validator__.validate_json
    consumer, producer = _clients(cfg, "model-passthrough", assigned)
    tally = _Tally()
    ts_field = parts.spec.ts_field

    def score(msgs: list[Message]) -> None:
        kept, records = [], []
        for m in msgs:
            try:
                records.append(validate(m.value() or b""))
            except ValueError:
                continue
            kept.append(m)
        if not records:
            return
        if parts.stage is None:
            x = parts.pre.transform(records)
        else:
            x = parts.pre.transform(records, parts.stage.compute(kept, records))
        scores = parts.runtime.predict(x).tolist()
        for m, record, value in zip(kept, records, scores, strict=True):
            ts = getattr(record, ts_field)
            _produce(producer, out_topic, parts.body(record, value), m.key(), ts, tally)

    _drain_batches(consumer, producer, tally, n, timeout_s, score)
    return tally.result("model passthrough (pipeline and model, nothing else)")


def naive_per_event(
    cfg: PipelineConfig, out_topic: str, n: int, timeout_s: float = 300.0
) -> DrainResult:
    """The obvious hand-written loop: one message at a time through schema, features, model."""
    parts = model_parts(cfg)
    spec, runtime, pre, stage = parts.spec, parts.runtime, parts.pre, parts.stage
    consumer, producer = _clients(cfg, "naive")
    tally = _Tally()
    deadline = time.monotonic() + timeout_s
    seen = 0
    try:
        while tally.acked < n and time.monotonic() < deadline:
            m = consumer.poll(0.05)
            producer.poll(0)
            if m is None or m.error() or seen >= n:
                continue
            tally.started()
            seen += 1
            try:
                record = spec.schema.model_validate_json(m.value() or b"")
            except ValueError:
                continue
            if stage is None:
                x = pre.transform([record])
            else:  # the pipeline's per-key features, event by event like the rest
                state = stage.compute_one(m.topic(), m.partition(), m.key(), m.offset(), record)
                x = pre.transform([record], state)
            score = float(runtime.predict(x)[0])
            ts = getattr(record, spec.ts_field)
            _produce(producer, out_topic, parts.body(record, score), m.key(), ts, tally)
        producer.flush(30)
    finally:
        consumer.close()
    return tally.result("naive per-event loop")


def main() -> None:
    parser = argparse.ArgumentParser(description="the passthrough (I/O ceiling) as a process")
    parser.add_argument("-c", "--config", required=True)
    parser.add_argument("--events", type=int, required=True, help="stop after this many outputs")
    parser.add_argument(
        "--model", action="store_true", help="the model passthrough: the pipeline's work added"
    )
    args = parser.parse_args()
    cfg = load_config(args.config)
    assigned = threading.Event()
    results: list[DrainResult] = []
    loop = model_passthrough if args.model else passthrough
    runner = named_thread(
        lambda: results.append(loop(cfg, cfg.topics.predictions, args.events, assigned=assigned)),
        "passthrough",
    )
    runner.start()
    while runner.is_alive() and not assigned.wait(0.1):
        pass
    print(json.dumps({"assigned": assigned.is_set()}), flush=True)
    runner.join()
    if not results:
        raise SystemExit("passthrough: failed, see the error above")
    pt = results[0]
    print(json.dumps({"events": pt.events, "events_per_s": round(pt.rate, 1)}), flush=True)


if __name__ == "__main__":
    main()
