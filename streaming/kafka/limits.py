"""How large a record each output topic takes, read at start: the smaller of the producer's
``message.max.bytes`` and the topic's ``max.message.bytes`` (from the broker, admin API).

An input topic often takes larger records than an output topic or the producer does; without
these limits a dead letter of such a record (its original bytes) would be refused and stop the
partition for good.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaException
from confluent_kafka.admin import ConfigResource, ResourceType

from streaming.kafka.settings import admin_client

log = logging.getLogger("streaming.worker")

LIBRDKAFKA_MESSAGE_MAX_BYTES = 1_000_000
"""librdkafka's default ``message.max.bytes``."""
RECORD_OVERHEAD = 512
"""Bytes kept free for the record batch's framing (Kafka's v2 batch: 61 bytes, plus per
record varints and per header lengths): a record is planned to fit ``limit - overhead``."""


@dataclass(frozen=True)
class OutputLimits:
    """Largest record (key + value + headers) each output topic takes, framing excluded."""

    producer_max: int
    topic_max: dict[str, int]

    def for_topic(self, topic: str) -> int:
        limit = min(self.producer_max, self.topic_max.get(topic, self.producer_max))
        return max(1024, limit - RECORD_OVERHEAD)

    @classmethod
    def unlimited(cls) -> OutputLimits:
        """For in-process sinks: only the producer default applies."""
        return cls(LIBRDKAFKA_MESSAGE_MAX_BYTES, {})


def read_limits(
    admin_settings: dict[str, Any], producer_settings: dict[str, Any], topics: Iterable[str]
) -> OutputLimits:
    """The producer's limit from its settings, each topic's from the broker; a broker that
    cannot describe topic configs leaves the producer's limit in force (and says so)."""
    producer_max = int(producer_settings.get("message.max.bytes", LIBRDKAFKA_MESSAGE_MAX_BYTES))
    topic_max: dict[str, int] = {}
    admin = admin_client(admin_settings)
    names = list(dict.fromkeys(topics))
    futures = admin.describe_configs([ConfigResource(ResourceType.TOPIC, t) for t in names])
    for resource, future in futures.items():
        try:
            entries = future.result(10)
        except KafkaException as exc:
            log.warning(
                "cannot read max.message.bytes of %s (%s); planning outputs for the producer's "
                "message.max.bytes (%d) only",
                resource.name,
                exc,
                producer_max,
            )
            continue
        entry = entries.get("max.message.bytes")
        if entry is not None and entry.value is not None and str(entry.value).isdigit():
            topic_max[resource.name] = int(entry.value)
    return OutputLimits(producer_max, topic_max)
