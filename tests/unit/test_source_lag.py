"""A worker's consumer-lag series go with its partitions: a revoked or lost partition's last
lag must not stay on /metrics beside the new owner's real one."""

from __future__ import annotations

from confluent_kafka import TopicPartition
from prometheus_client import generate_latest

from streaming.errors import Faults
from streaming.kafka.source import Partitions, Source
from streaming.observability.metrics import WorkerMetrics


class _Listener:
    def revoked(self, partitions: Partitions) -> None:
        pass

    def lost(self, partitions: Partitions) -> None:
        pass


def _lag_partitions(metrics: WorkerMetrics) -> set[str]:
    text = generate_latest(metrics.registry).decode()
    return {
        line.split('partition="')[1].split('"')[0]
        for line in text.splitlines()
        if line.startswith("streaming_consumer_lag{")
    }


def test_revoked_and_lost_partitions_leave_the_lag_gauge() -> None:
    metrics = WorkerMetrics("fraud")
    # A consumer object only (no broker is contacted before subscribe/poll).
    source = Source(
        {"bootstrap.servers": "127.0.0.1:1", "group.id": "g"}, "t", "fraud", metrics, Faults()
    )
    try:
        source._listener = _Listener()
        for p in range(3):
            metrics.consumer_lag.labels("fraud", "t", str(p)).set(100 + p)
        source._on_revoke(source.consumer, [TopicPartition("t", 1)])
        assert _lag_partitions(metrics) == {"0", "2"}
        source._on_lost(source.consumer, [TopicPartition("t", 2)])
        assert _lag_partitions(metrics) == {"0"}
        source._on_revoke(source.consumer, [TopicPartition("t", 1)])  # already gone: no error
    finally:
        source.consumer.close()
