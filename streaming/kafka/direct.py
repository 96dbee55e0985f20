"""Many records produced in one call straight through a confluent-kafka Producer's librdkafka
handle, with the GIL released and no delivery report for Python: for records that need no
report of their own (the state changelog's key records, each vouched for by the partition
record produced after it; streaming.state.changelog).

Why not ``Producer.produce``: per record it parses keyword arguments and allocates a state,
and its delivery callback then takes the GIL on the polling thread for every record, even
one produced without a callback (confluent-kafka 2.16, Producer.c ``dr_msg_cb``). In a
backlog of new cards the changelog has one key record per event, and those GIL round trips
and the produce calls held the GIL for longer than the stage computing the features.

``DIRECT`` is the compiled part bound to the librdkafka that confluent-kafka loaded, or None
where it is not built, the library is not found, or confluent-kafka is not a major version
whose producer handle this was checked against (then callers use ``produce``, the same
records in the same order). ``STREAMING_DIRECT_PRODUCE=0`` turns it off.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from types import ModuleType
from typing import Any

import confluent_kafka
from confluent_kafka import KafkaError, KafkaException

log = logging.getLogger("streaming.worker")

_MAJORS = (2,)
"""confluent-kafka major versions whose Handle starts with its rd_kafka_t (since 0.9)."""


def _librdkafka_path() -> str | None:
    """The file of the librdkafka this process loaded for confluent-kafka (Linux)."""
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                path = line.rstrip("\n").split(maxsplit=5)[-1]
                if "librdkafka" in os.path.basename(path):
                    return path
    except OSError:
        return None
    return None


def _bind() -> ModuleType | None:
    if os.environ.get("STREAMING_DIRECT_PRODUCE", "1") == "0":
        return None
    if int(confluent_kafka.version()[0].split(".")[0]) not in _MAJORS:
        return None
    try:
        from streaming.kafka import _direct  # type: ignore[attr-defined]
    except ImportError:
        return None
    path = _librdkafka_path()
    if path is None:
        return None
    try:
        _direct.bind(path, confluent_kafka.Producer)
    except OSError as e:
        log.info("records produced through confluent-kafka's produce: %s", e)
        return None
    return _direct


DIRECT = _bind()


class DirectProducer:
    """``produce_all`` for one producer; ``of(producer)`` is None where it cannot run."""

    def __init__(self, producer: Any, wait: Callable[[], object]) -> None:
        self._producer = producer
        self._wait = wait

    @classmethod
    def of(cls, producer: Any, wait: Callable[[], object]) -> DirectProducer | None:
        """One for ``producer`` (its ``wait`` is called while its queue is full), or None."""
        if DIRECT is None:
            return None
        try:
            DIRECT.handle_ok(producer)
        except TypeError as e:
            log.info("records produced through confluent-kafka's produce: %s", e)
            return None
        return cls(producer, wait)

    def produce_all(
        self, topic: str, partition: int, keys: list[bytes], values: list[bytes | None]
    ) -> int:
        """Produce each ``(keys[i], values[i])`` to ``topic``/``partition`` in order; returns
        how many went. Raises KafkaException as ``produce`` would (records before the failed
        one went)."""
        assert DIRECT is not None
        sent, err = DIRECT.produce_all(self._producer, topic, partition, keys, values, self._wait)
        if err:
            raise KafkaException(KafkaError(err))
        return sent
