"""The state stage's changelog and restore, attached to a worker's sink and source.

A worker whose pipeline declares a state stage writes the stage's changes through its sink's
producer in exactly-once mode (so that they are in its transactions), and through a producer
of the changelog's own in at-least-once mode (settings.changelog_producer_settings: what lets
a commit's partition records alone be acked); it restores each assigned partition before the
consumer returns its first event (README, "Where the state lives").
"""

from __future__ import annotations

import logging
from typing import Any

from confluent_kafka import KafkaError

from streaming.config import PipelineConfig
from streaming.errors import StartupError
from streaming.kafka import settings as kafka
from streaming.kafka.sink import KafkaSink
from streaming.kafka.source import Source
from streaming.kafka.topics import ensure_state_topic
from streaming.observability.metrics import WorkerMetrics
from streaming.state.changelog import StateChangelog
from streaming.state.restore import restore
from streaming.state.stage import StateStage

log = logging.getLogger("streaming.worker")


def attach_state(
    cfg: PipelineConfig,
    stage: StateStage,
    sink: KafkaSink,
    source: Source,
    metrics: WorkerMetrics,
    worker_id: str,
) -> StateChangelog:
    """Create the changelog topic if missing, register the restore on assignment, and
    return the writer the committer calls at each commit (its own producer, at-least-once,
    named after ``worker_id`` as the sink's is)."""
    topic = ensure_state_topic(cfg, StartupError)
    restore_seconds = metrics.state_restore.labels(cfg.name)
    written = metrics.state_changelog_records.labels(cfg.name)
    extra = {"isolation.level": "read_committed"} if cfg.delivery == "exactly-once" else {}
    settings = kafka.reader_settings(
        cfg.kafka, f"{cfg.kafka.group}.state-restore", **{"fetch.wait.max.ms": 100, **extra}
    )
    # An open transaction of a predecessor that died is waited for until the broker aborts
    # it (transaction.timeout.ms), and then some.
    timeout_s = 60.0 + kafka.transaction_timeout_ms(cfg) / 1000.0

    def produce(topic: str, value: bytes | None, key: bytes, part: int, done: Any) -> None:
        sink.produce(topic, value, key, None, done, part)

    def restore_assigned(partitions: set[tuple[str, int]]) -> None:
        for r in restore(stage, settings, topic, partitions, timeout_s):
            restore_seconds.observe(r.seconds)
            log.info(
                "state of %s[%d] restored from %s: %d keys from %d records in %.3f s",
                cfg.topics.input,
                r.partition,
                topic,
                r.keys,
                r.records,
                r.seconds,
                extra={"restore_s": round(r.seconds, 3), "keys": r.keys},
            )

    source.on_assigning.append(restore_assigned)
    if cfg.delivery == "exactly-once":
        return StateChangelog(stage, topic, produce, written.inc, sink.partition_producer())
    errors = FatalError()
    own = KafkaSink(
        {
            **kafka.changelog_producer_settings(cfg.kafka, f"{worker_id}.state"),
            "error_cb": errors,
        }
    )
    own.start()

    def produce_own(topic: str, value: bytes | None, key: bytes, part: int, done: Any) -> None:
        own.produce(topic, value, key, None, done, part)

    def close(timeout: float) -> None:
        if left := own.close(timeout):
            log.warning("%d state changelog records were not delivered at close", left)

    return StateChangelog(
        stage,
        topic,
        produce_own,
        written.inc,
        own.partition_producer(),
        fatal=lambda: errors.error,
        close=close,
    )


class FatalError:
    """The changelog producer's error_cb: keeps its fatal error (a commit waiting on it then
    fails, and the worker stops); the others are librdkafka's retried ones, logged."""

    def __init__(self) -> None:
        self.error: str | None = None

    def __call__(self, err: KafkaError) -> None:
        if err.fatal():
            self.error = self.error or str(err)
            log.error("state changelog producer: fatal error %s", err)
        else:
            log.info("state changelog producer: %s", err)
