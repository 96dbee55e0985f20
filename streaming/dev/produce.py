"""Synthetic events into the input topic at a rate, with an optional share of invalid ones."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from confluent_kafka import Producer

from streaming.config import PipelineConfig
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
) -> ProduceResult:
    """Produce ``events`` generated events; ``rate`` events/s or as fast as possible."""
    if events < 0:
        raise ValueError("--events must be >= 0")
    if not 0.0 <= invalid_ratio <= 1.0:
        raise ValueError("--invalid-ratio must be between 0 and 1")
    if rate is not None and rate <= 0:
        raise ValueError("--rate must be > 0 (omit it for as fast as possible)")
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
        if keep:
            result.events.extend(batch)
        sent += n
        if on_progress is not None:
            on_progress(sent, time.monotonic() - started)
    left = producer.flush(60)
    result.produced = sent
    result.failed += left
    result.seconds = time.monotonic() - started
    if result.failed:
        raise RuntimeError(f"{result.failed} of {sent} events were not delivered to {topic}")
    return result
