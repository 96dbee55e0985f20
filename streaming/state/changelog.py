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
  written at that commit are acked (:class:`ChangelogCommit`). The state restored after a
  crash is then never behind the committed offsets; it may be ahead (events applied whose
  offsets were not committed yet), and those events, read again, are replays the stage
  recognises by offset.
- both: a commit's key records go before its partition records, which a restore needs to see
  before it takes the key records (:class:`StateChangelog`).

Runs on the main thread (the committer's); delivery reports arrive on the delivery thread and
only count into the snapshot they belong to.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from streaming.state.codec import META_KEY, NATIVE, Labels, NotText, encode_meta, encode_rows
from streaming.state.stage import StateStage
from streaming.state.store import C_STATE

Produce = Callable[[str, bytes | None, bytes, int, Callable[[Any, Any], None]], None]
"""``produce(topic, value, key, partition, on_delivery)``."""
RawProduce = tuple[Callable[..., Any], Callable[[], object]]
"""A producer's own ``produce(topic, value, key, partition, on_delivery)`` (positional), which
raises BufferError while its queue is full, and the wait before trying again."""


class Snapshot:
    """The records of one commit's changes, and whether the broker has them all.

    Written by the delivery thread (``on_delivery``) and read by the main thread (``done``,
    ``error``, ``wait``): the count and the error are set before the event, which is the only
    signal. With the C extension ``on_delivery`` is a C callable (C_STATE.Acks), so a record's
    delivery report runs no Python frame on the delivery thread; the same counts otherwise."""

    def __init__(self, native: bool = C_STATE is not None) -> None:
        self.records = 0
        self._all = threading.Event()
        self._acks = C_STATE.Acks(self._all.set) if native else None
        self.on_delivery: Callable[[Any, Any], object] = (
            self._acks if self._acks is not None else self._on_delivery
        )
        self._acked = 0
        self._error: str | None = None
        self._sealed = False

    @property
    def error(self) -> str | None:
        """The first failed delivery's error."""
        return self._acks.error if self._acks is not None else self._error

    def _on_delivery(self, err: Any, _msg: Any) -> None:
        if err is not None and self._error is None:
            self._error = str(err)
        self._acked += 1
        if self._sealed and self._acked >= self.records:
            self._all.set()

    def seal(self) -> Snapshot:
        """No more records: from here the last ack completes it."""
        if self._acks is not None:
            self._acks.seal(self.records)
            return self
        self._sealed = True
        if self._acked >= self.records:
            self._all.set()
        return self

    @property
    def done(self) -> bool:
        return self._all.is_set()

    def wait(self, timeout: float) -> bool:
        return self._all.wait(timeout)


class StateChangelog:
    """The stage's changes since the last call, as records on ``topic``, in two phases.

    A commit's key records (and tombstones) go first; its partition records only once every
    key record is acked. A restore takes a key record only when the partition record of its
    snapshot follows it (restore.py): a crash in the middle of a commit, whose key records
    landed in part, then leaves no trace in the restored state. (Kafka hides an aborted
    transaction's records from ``read_committed`` readers anyway; the embedded broker does
    not, and at-least-once has no transaction.)
    """

    def __init__(
        self,
        stage: StateStage,
        topic: str,
        produce: Produce,
        written: Callable[[int], object] | None = None,
        raw: RawProduce | None = None,
    ) -> None:
        self._stage = stage
        self._raw = raw if NATIVE else None
        """With the C extension, the changed keys' records are encoded and produced by one C
        call per partition through the producer's own produce (the same records, in the same
        order, as the Python loop's through ``produce``)."""
        self._count = written
        """Told how many records each write sent (the metric: one call, not one a record)."""
        self.topic = topic
        self._produce = produce
        self._labels = Labels(stage.codes.values)
        self._written: dict[tuple[str, int], int] = {}
        """Partition -> the applied offset its last partition record carried."""
        self.records = 0
        """Written over the worker's life (the summary and the metric)."""

    def begin(self, only: Iterable[tuple[str, int]] | None = None) -> ChangelogCommit:
        """Write the changed keys of every partition (or of ``only``); the partition records
        follow when they are acked (:meth:`ChangelogCommit.advance`)."""
        keys = Snapshot()
        metas: list[_Meta] = []
        stage = self._stage
        topic, produce, done = self.topic, self._produce, keys.on_delivery
        labels = self._labels
        sent = 0
        for tp in list(stage.partitions.keys() if only is None else only):
            state = stage.partitions.get(tp)
            if state is None:
                continue
            part = tp[1]
            coded, stride, applied = state.coded_columns, state.stride, state.applied
            held = state.keys
            for key in state.gone:  # a key that expired and came back since is written below
                if key is not None and key not in held:
                    produce(topic, None, _key_bytes(key), part, done)
                    sent += 1
            if self._raw is not None:
                sent += C_STATE.write_keys(
                    held,
                    state.dirty,
                    coded,
                    stride,
                    labels,
                    applied,
                    *(self._raw[0], topic, part, done, self._raw[1]),
                    lambda r, c=coded, s=stride, a=applied: encode_rows(r, c, s, labels, a, False),
                    NotText,
                    _key_bytes,
                )
            else:
                for key in state.dirty:
                    rows = held.get(key)
                    if rows is None or key is None:  # expired since, or no key to compact by
                        continue
                    value = encode_rows(rows, coded, stride, labels, applied)
                    key_b = key if type(key) is bytes else _key_bytes(key)
                    produce(topic, value, key_b, part, done)
                    sent += 1
            state.dirty.clear()
            state.gone.clear()
            if self._written.get(tp) != applied:  # as of now, sent after the keys
                metas.append(_Meta(tp, applied, encode_meta(state)))
        keys.records = sent
        self._counted(sent)
        return ChangelogCommit(self, keys.seal(), metas)

    def write_metas(self, metas: list[_Meta]) -> Snapshot:
        """The partition records of a commit whose key records are acked. Only now does a
        partition count as written at its applied offset: a commit abandoned before this
        point leaves the next one to write its partition record."""
        snapshot = Snapshot()
        for meta in metas:
            self._produce(self.topic, meta.value, META_KEY, meta.tp[1], snapshot.on_delivery)
            self._written[meta.tp] = meta.applied
        snapshot.records = len(metas)
        self._counted(len(metas))
        return snapshot.seal()

    def forget(self, partitions: Iterable[tuple[str, int]]) -> None:
        """Revoked partitions: their next owner writes their records."""
        for tp in partitions:
            self._written.pop(tp, None)

    def _counted(self, sent: int) -> None:
        self.records += sent
        if self._count is not None and sent:
            self._count(sent)


@dataclass(frozen=True, slots=True)
class _Meta:
    """A partition record, encoded when its commit began."""

    tp: tuple[str, int]
    applied: int
    value: bytes


class ChangelogCommit:
    """One commit's changelog records: the keys, then (once they are acked) the partition
    records. Driven by the main thread; acks are counted by the delivery thread."""

    def __init__(self, changelog: StateChangelog, keys: Snapshot, metas: list[_Meta]) -> None:
        self._changelog = changelog
        self._keys = keys
        self._pending_metas = metas
        self._metas: Snapshot | None = None

    @property
    def error(self) -> str | None:
        return self._keys.error or (self._metas.error if self._metas is not None else None)

    def drop(self, partitions: Iterable[tuple[str, int]]) -> None:
        """Lost partitions: their partition records are not written any more (a late one
        would follow the new owner's and tell a later restore the state stood back here)."""
        gone = set(partitions)
        self._pending_metas = [m for m in self._pending_metas if m.tp not in gone]

    def advance(self) -> bool:
        """True once every record is acked; writes the partition records when the keys are.
        Never blocks."""
        if self._metas is None:
            if not self._keys.done or self._keys.error is not None:
                return False
            self._metas = self._changelog.write_metas(self._pending_metas)
        return self._metas.done and self.error is None

    def wait(self, timeout: float) -> bool:
        """``advance`` until done, for at most ``timeout`` seconds; False on an error too."""
        deadline = time.monotonic() + timeout
        if not self._keys.wait(timeout) or self._keys.error is not None:
            return False
        self.advance()
        assert self._metas is not None
        return self._metas.wait(max(0.0, deadline - time.monotonic())) and self.error is None


def _key_bytes(key: Any) -> bytes:
    """The input key as it came (bytes); a str key (tests, in-process runs) as UTF-8."""
    return key if isinstance(key, bytes) else str(key).encode()
