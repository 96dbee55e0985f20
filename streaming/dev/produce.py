"""Synthetic events into the input topic at a rate, with an optional share of invalid ones."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from confluent_kafka import Producer

from streaming.config import PipelineConfig
from streaming.dev.labels import LabelQueue, plan_labels
from streaming.kafka import settings as kafka
from streaming.kafka.sink import produce_when_room
from streaming.pipeline import PipelineSpec, SyntheticEvent, load_pipeline

_TICK_S = 0.01


@dataclass
class ProduceResult:
    produced: int = 0
    invalid: int = 0
    failed: int = 0
    seconds: float = 0.0
    events: list[SyntheticEvent] = field(default_factory=list)
    """Filled only with keep=True (tests match outputs against it)."""
    labels: int = 0
    """Labels sent to the labels topic (with labels=True)."""


def produce_events(
    cfg: PipelineConfig,
    events: int,
    *,
    rate: float | None = None,
    invalid_ratio: float = 0.0,
    seed: int = 1,
    keep: bool = False,
    pipeline: PipelineSpec | None = None,
    on_progress: Callable[[int, float], None] | None = None,
    headers: list[tuple[str, bytes]] | None = None,
    should_stop: Callable[[], bool] | None = None,
    labels: bool = False,
    label_time_scale: float = 1.0,
) -> ProduceResult:
    """Produce ``events`` generated events; ``rate`` events/s or as fast as possible."""
    if events < 0:
        raise ValueError("--events must be >= 0")
    if not 0.0 <= invalid_ratio <= 1.0:
        raise ValueError("--invalid-ratio must be between 0 and 1")
    if rate is not None and rate <= 0:
        raise ValueError("--rate must be > 0 (omit it for as fast as possible)")
    if label_time_scale <= 0:
        raise ValueError("--label-time-scale must be > 0 (1 is real time)")
    spec = pipeline or load_pipeline(cfg.pipeline.module)
    generator = spec.make_generator(seed)
    framer = None
    if cfg.pipeline.format == "avro":  # the pipeline's format (streaming.formats)
        from streaming.formats.produce import AvroFramer

        framer = AvroFramer.register(cfg, spec)
    elif cfg.pipeline.format != "json":
        raise ValueError(f"produce cannot write pipeline.format: {cfg.pipeline.format} yet")
    # A long linger makes large batches: cheaper for any broker, and the embedded broker's
    # fetch walks batches one by one (README, Latency and the embedded broker), so small batches
    # would stall readers.
    producer = Producer(
        {
            **kafka.producer_settings(cfg.kafka, "streaming-produce"),
            "linger.ms": 50,
            "batch.num.messages": 10_000,
        }
    )
    result = ProduceResult()

    def delivered(err: object, _msg: object) -> None:
        if err is not None:
            result.failed += 1

    def poll() -> None:
        producer.poll(0.05)

    topic = cfg.topics.input
    label_queue = LabelQueue() if labels else None
    label_rng = np.random.default_rng(seed + 7_919)

    def send_labels(now_s: float) -> None:
        assert label_queue is not None
        for planned in label_queue.due(now_s):
            value = planned.value(int(time.time() * 1000))
            produce_when_room(
                producer, cfg.topics.labels_topic, value, planned.key, None, delivered, poll
            )
            result.labels += 1

    started = time.monotonic()
    chunk = 2_000 if rate is None else max(1, int(rate * _TICK_S))
    sent = 0
    while sent < events:
        if should_stop is not None and should_stop():
            break
        n = min(chunk, events - sent)
        if rate is not None:
            # Keep the schedule, not a fixed sleep: late ticks catch up.
            wait = started + sent / rate - time.monotonic()
            if wait > 0:
                time.sleep(wait)
        batch = generator.batch(n, int(time.time() * 1000), invalid_ratio)
        if framer is not None:
            batch = framer.convert(batch)
        for ev in batch:
            produce_when_room(producer, topic, ev.value, ev.key, headers, delivered, poll)
            if ev.invalid_kind is not None:
                result.invalid += 1
        producer.poll(0)
        if label_queue is not None:
            now_s = time.monotonic()
            label_queue.add(now_s, plan_labels(batch, label_rng, label_time_scale))
            send_labels(now_s)
        if keep:
            result.events.extend(batch)
        sent += n
        if on_progress is not None:
            on_progress(sent, time.monotonic() - started)
    while label_queue is not None and len(label_queue) and not (should_stop and should_stop()):
        # Labels still due after the last event: wait for each, as the real ones would come.
        due = label_queue.next_due_s() or 0.0
        time.sleep(min(max(due - time.monotonic(), 0.0), 0.5))
        producer.poll(0)
        send_labels(time.monotonic())
    left = producer.flush(60)
    result.produced = sent
    result.failed += left
    result.seconds = time.monotonic() - started
    if result.failed:
        raise RuntimeError(f"{result.failed} of {sent} events were not delivered to {topic}")
    return result
