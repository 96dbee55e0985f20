"""Rebuilds assigned partitions' state from the changelog, before their first event is scored.

Called on the main thread from the assignment callback, so the consumer returns no event of
those partitions until their state is back. Each changelog partition is read from its start
until the reader's position has passed the high watermark and a read finds nothing more
queued: a fetch brings whole record batches, so the records of the last batch are read even
where the broker's watermark falls short of the end (the embedded broker's is the last batch's
base offset + 1). The last record of a key wins and a tombstone removes it, which is what
compaction keeps too. In exactly-once mode the reader is ``read_committed``: an aborted
transaction's changes (a crash before its commit) are skipped with its outputs and offsets,
and an open one (a predecessor that died under another transactional id) is waited for.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition

from streaming.state.codec import META_KEY, decode_meta, decode_rows, snapshot_of
from streaming.state.stage import StateStage
from streaming.state.store import PartitionState

log = logging.getLogger("streaming.worker")


@dataclass(frozen=True, slots=True)
class Restored:
    """One partition's restore, for the log and the metric."""

    partition: int
    keys: int
    records: int
    seconds: float


def restore(
    stage: StateStage,
    settings: dict[str, Any],
    changelog: str,
    partitions: Iterable[tuple[str, int]],
    timeout_s: float = 60.0,
) -> list[Restored]:
    """Replace the stage's state of ``partitions`` (input topic, partition) with the
    changelog's; raises RuntimeError when the changelog cannot be read to its end in time
    (scoring on a partial state would give wrong features)."""
    wanted = sorted(partitions)
    if not wanted:
        return []
    started = time.monotonic()
    consumer = Consumer({**settings, "enable.partition.eof": False, "enable.auto.commit": False})
    states = {p: PartitionState(stage.spec, stage.codes) for _, p in wanted}
    loaders = {p: PartitionLoader(state, stage) for p, state in states.items()}
    counts = {p: 0 for _, p in wanted}
    try:
        ends = {}
        for _, p in wanted:
            _low, ends[p] = consumer.get_watermark_offsets(
                TopicPartition(changelog, p), timeout=10.0
            )
        todo = {p for p, end in ends.items() if end > 0}  # 0: nothing written yet
        done_at = {p: time.monotonic() for p in ends if p not in todo}
        if todo:
            consumer.assign([TopicPartition(changelog, p, OFFSET_BEGINNING) for p in todo])
        deadline = started + timeout_s
        while todo:
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"state restore: {changelog} partitions {sorted(todo)} not read to their "
                    f"end within {timeout_s:.0f} s"
                )
            messages = consumer.consume(10_000, 0.1)
            for msg in messages:
                if msg.error() is None:
                    loaders[msg.partition()].feed(msg.key(), msg.value())
                    counts[msg.partition()] += 1
            if messages:
                continue
            for tp in consumer.position([TopicPartition(changelog, p) for p in todo]):
                if tp.offset >= ends[tp.partition]:
                    todo.discard(tp.partition)
                    done_at[tp.partition] = time.monotonic()
    except KafkaException as exc:
        raise RuntimeError(f"state restore from {changelog}: {exc}") from None
    finally:
        consumer.close()
    done = []
    for topic, part in wanted:
        stage.partitions[(topic, part)] = states[part]
        done.append(Restored(part, len(states[part]), counts[part], done_at[part] - started))
    return done


class PartitionLoader:
    """Replays one changelog partition into a PartitionState.

    A key record carries the applied offset of its commit (its snapshot), and a partition
    record, produced after that commit's key records in its partition, says the state stands
    at an applied offset (changelog.py: order and gaplessness make it land only after them).
    So a key record is taken when a partition record at or past its snapshot comes
    after it; one that none does (a commit a crash cut short: the last in the log) is dropped,
    and the key keeps its earlier record. The last record of a key wins, as compaction keeps
    it. A tombstone applies at once: a key expires only when no event within the replay
    margin can reach its rows, so removing it early changes no feature.
    """

    def __init__(self, state: PartitionState, stage: StateStage) -> None:
        self.state = state
        self._stage = stage
        self._held: dict[bytes, bytes] = {}

    def feed(self, key: bytes | None, value: bytes | None) -> None:
        """One changelog record, in partition order."""
        if key is None:
            return
        if key == META_KEY:
            if value is not None:
                self._close_snapshot(value)
            return
        if value is None:
            self.state.keys.pop(key, None)
            self._held.pop(key, None)
            return
        self._held[key] = value

    def _close_snapshot(self, meta: bytes) -> None:
        state = self.state
        decode_meta(meta, state)
        applied, coded, stride = state.applied, state.coded_columns, state.stride
        taken = [key for key, value in self._held.items() if snapshot_of(value) <= applied]
        for key in taken:
            value = self._held.pop(key)
            state.keys[key] = decode_rows(value, coded, stride, self._stage.codes)
