"""The real end of a changelog partition, read from its tail rather than taken on trust.

Why (issue 21): faust restores a table by reading each changelog partition up to the high
watermark the broker reports. The embedded broker (Tansu 0.6.0) reports the base offset of the
partition's last record batch plus one, not the end: 11 for 40 records written as batches of 10
and 30 (measured). A restarted monitor then restored all but the last batch of each changelog
partition; labels whose entries were in that batch, and whose offsets the killed monitor had
committed, were never seen again (266 labels in one kill -9 run). Real Kafka reports the end,
and this read then confirms it with one record per partition.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from confluent_kafka import Consumer, TopicPartition

_QUIET_S = 1.0
"""Done when no record came for this long. Not the end-of-partition event: the client raises
it against the same short high watermark (the records after it would come after the event)."""


def read_end_offsets(
    settings: dict[str, Any], reported: Mapping[tuple[str, int], int], timeout_s: float = 10.0
) -> dict[tuple[str, int], int]:
    """The offset after the last record of each ``(topic, partition)``, at least ``reported``.

    Reads from the record before the reported end on, so a correct report costs one record.
    """
    ends = {key: int(hw) for key, hw in reported.items() if hw is not None}
    todo = [key for key, hw in ends.items() if hw > 0]  # 0: nothing written yet
    if not todo:
        return ends
    consumer = Consumer({**settings, "enable.partition.eof": False, "enable.auto.commit": False})
    try:
        consumer.assign([TopicPartition(t, p, ends[(t, p)] - 1) for t, p in todo])
        deadline = time.monotonic() + timeout_s
        last_seen = time.monotonic()
        while time.monotonic() < deadline and time.monotonic() - last_seen < _QUIET_S:
            for m in consumer.consume(10_000, 0.2):
                if m.error() is not None:
                    continue
                last_seen = time.monotonic()
                key = (m.topic(), m.partition())
                ends[key] = max(ends[key], m.offset() + 1)
    finally:
        consumer.close()
    return ends
