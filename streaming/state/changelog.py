"""Writes the state stage's changes to its compacted changelog topic, at each commit.

Kafka Streams' and Quix's way: between two commits the stage only marks the keys it changed;
at a commit each changed key's latest rows go out once (a key touched by 50 events in the
interval is written once), expired keys as tombstones, and one record per partition says where
its state stands (codec.py). Changelog partition = input partition.

How this keeps the state consistent with the committed input offsets (README, "Where the state
lives"):

- exactly-once: the changes are produced into the open transaction, after the feeding stopped
  and before it commits with the input offsets: state, outputs and offsets commit together.
- at-least-once: the input offsets of a commit are committed only once the changelog records
  written at that commit are acked (:class:`Snapshot`). The state restored after a crash is then
  never behind the committed offsets; it may be ahead (events applied whose offsets were not
  committed yet), and those events, read again, are replays the stage recognises by offset.

Runs on the main thread (the committer's); delivery reports arrive on the delivery thread and
only count into the snapshot they belong to.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Any

from streaming.state.codec import META_KEY, Labels, encode_meta, encode_rows
from streaming.state.stage import StateStage

Produce = Callable[[str, bytes | None, bytes, int, Callable[[Any, Any], None]], None]
"""``produce(topic, value, key, partition, on_delivery)``."""


class Snapshot:
    """The records of one commit's changes, and whether the broker has them all.

    Written by the delivery thread (``_acked``) and read by the main thread (``done``, ``ok``,
    ``wait``): the count and the error are set before the event, which is the only signal."""

    def __init__(self) -> None:
        self.records = 0
        self._acked = 0
        self.error: str | None = None
        self._all = threading.Event()
        self._sealed = False

    def on_delivery(self, err: Any, _msg: Any) -> None:
        if err is not None and self.error is None:
            self.error = str(err)
        self._acked += 1
        if self._sealed and self._acked >= self.records:
            self._all.set()

    def seal(self) -> Snapshot:
        """No more records: from here the last ack completes it."""
        self._sealed = True
        if self._acked >= self.records:
            self._all.set()
        return self

    @property
    def done(self) -> bool:
        return self._all.is_set()

    @property
    def ok(self) -> bool:
        return self._all.is_set() and self.error is None

    def wait(self, timeout: float) -> bool:
        return self._all.wait(timeout)


class StateChangelog:
    """The stage's changes since the last call, as records on ``topic``."""

    def __init__(
        self,
        stage: StateStage,
        topic: str,
        produce: Produce,
        written: Callable[[int], object] | None = None,
    ) -> None:
        self._stage = stage
        self._count = written
        """Told how many records each write sent (the metric: one call, not one a record)."""
        self.topic = topic
        self._produce = produce
        self._labels = Labels(stage.codes.values)
        self._written: dict[tuple[str, int], int] = {}
        """Partition -> the applied offset its last partition record carried."""
        self.records = 0
        """Written over the worker's life (the summary and the metric)."""

    def write(self, only: Iterable[tuple[str, int]] | None = None) -> Snapshot:
        """Produce the changes of every partition (or of ``only``); a sealed snapshot."""
        snapshot = Snapshot()
        stage = self._stage
        keys = stage.partitions.keys() if only is None else only
        topic, produce, done = self.topic, self._produce, snapshot.on_delivery
        labels = self._labels
        sent = 0
        for tp in list(keys):
            state = stage.partitions.get(tp)
            if state is None:
                continue
            part = tp[1]
            coded, stride = state.coded_columns, state._stride
            held = state.keys
            for key in state.gone:  # a key that expired and came back since is written below
                if key is not None and key not in held:
                    produce(topic, None, _key_bytes(key), part, done)
                    sent += 1
            for key in state.dirty:
                rows = held.get(key)
                if rows is None or key is None:  # expired since, or no key to compact by
                    continue
                value = encode_rows(rows, coded, stride, labels)
                produce(topic, value, key if type(key) is bytes else _key_bytes(key), part, done)
                sent += 1
            state.dirty.clear()
            state.gone.clear()
            if self._written.get(tp) != state.applied:
                produce(topic, encode_meta(state), META_KEY, part, done)
                sent += 1
                self._written[tp] = state.applied
        snapshot.records = sent
        self.records += sent
        if self._count is not None and sent:
            self._count(sent)
        return snapshot.seal()

    def forget(self, partitions: Iterable[tuple[str, int]]) -> None:
        """Revoked partitions: their next owner writes their records."""
        for tp in partitions:
            self._written.pop(tp, None)


def _key_bytes(key: Any) -> bytes:
    """The input key as it came (bytes); a str key (tests, in-process runs) as UTF-8."""
    return key if isinstance(key, bytes) else str(key).encode()
