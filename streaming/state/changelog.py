"""Writes the state stage's changes to its compacted changelog topic, at each commit.

Kafka Streams' and Quix's way: between two commits the stage only marks the keys it changed;
at a commit each changed key's latest rows go out once (a key touched by 50 events in the
interval is written once), expired keys as tombstones, and then one record per partition says
where its state stands (codec.py). Changelog partition = input partition.

Only the partition records carry delivery reports. In a backlog of new cards a commit writes
about one key record per event, and a delivery report costs the delivery thread a GIL round
trip each (confluent-kafka takes the GIL for every report that has a callback): that was a
third of what the changelog cost a worker. A partition record's ack vouches for the key
records before it in its partition because they are produced in order by one idempotent
producer on which no record can go missing without the producer failing:

- exactly-once: the records are in the open transaction, produced after the feeding stopped
  and before it commits with the input offsets; a record that fails fails the commit, so
  state, outputs and offsets commit together or not at all.
- at-least-once: the changelog has a producer of its own (kafka.settings.
  changelog_producer_settings): idempotent, so per-partition order survives retries;
  ``enable.gapless.guarantee``, so a failure that would leave a gap is a fatal error instead;
  and ``message.timeout.ms`` 0, so no record times out (the one failure gapless does not
  cover); a broker away holds the commit instead. The input offsets of a commit are committed
  only once its partition records are acked; the state restored after a crash is then never
  behind the committed offsets. It may be ahead (events applied whose offsets were not
  committed yet), and those events, read again, are replays the stage recognises by offset.
- both: a restore takes a key record only when a partition record at or past its commit
  follows it (restore.py), so a commit cut short by a crash leaves no trace.

Runs on the main thread (the committer's); delivery reports arrive on a delivery thread and
only count into the snapshot they belong to.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Any

from streaming.state.codec import META_KEY, NATIVE, Labels, NotText, encode_meta, encode_rows
from streaming.state.stage import StateStage
from streaming.state.store import C_STATE

Produce = Callable[[str, bytes | None, bytes, int, Callable[[Any, Any], None] | None], None]
"""``produce(topic, value, key, partition, on_delivery)``; on_delivery None: no report."""
RawProduce = tuple[Callable[..., Any], Callable[[], object]]
"""A producer's own ``produce(topic, value, key, partition, on_delivery)`` (positional), which
raises BufferError while its queue is full, and the wait before trying again."""


class Snapshot:
    """The acked records of one commit (its partition records), and whether the broker has
    them all.

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
    """The stage's changes since the last call, as records on ``topic``: per partition its key
    records (and tombstones), then its partition record, which alone is acked."""

    def __init__(
        self,
        stage: StateStage,
        topic: str,
        produce: Produce,
        written: Callable[[int], object] | None = None,
        raw: RawProduce | None = None,
        fatal: Callable[[], str | None] | None = None,
        close: Callable[[float], object] | None = None,
    ) -> None:
        self._stage = stage
        self._raw = raw if NATIVE else None
        """With the C extension, the changed keys' records are encoded and produced by one C
        call per partition through the producer's own produce (the same records, in the same
        order, as the Python loop's through ``produce``)."""
        self._count = written
        """Told how many records each write sent (the metric: one call, not one a record)."""
        self._fatal = fatal
        """The producer's fatal error, if it had one (its failed records may be unreported)."""
        self._close = close
        self.topic = topic
        self._produce = produce
        self._labels = Labels(stage.codes.values)
        self._labels_of = stage.codes.generation
        """The vocabulary generation the labels were made in (a prune recodes the values)."""
        self._written: dict[tuple[str, int], int] = {}
        """Partition -> the applied offset its last partition record carried."""
        self.records = 0
        """Written over the worker's life (the summary and the metric)."""

    def begin(self, only: Iterable[tuple[str, int]] | None = None) -> ChangelogCommit:
        """Write the changed keys of every partition (or of ``only``), each partition's
        followed by its partition record; the commit is written once those are acked."""
        fences = Snapshot()
        stage = self._stage
        topic, produce = self.topic, self._produce
        if stage.codes.generation != self._labels_of:  # codes were recoded: cached by code
            self._labels = Labels(stage.codes.values)
            self._labels_of = stage.codes.generation
        labels = self._labels
        sent = 0
        for tp in list(stage.partitions.keys() if only is None else only):
            state = stage.partitions.get(tp)
            if state is None:
                continue
            part = tp[1]
            coded, stride, applied = state.coded_columns, state.stride, state.applied
            held = state.keys
            here = 0
            for key in state.gone:  # a key that expired and came back since is written below
                if key is not None and key not in held:
                    produce(topic, None, _key_bytes(key), part, None)
                    here += 1
            if self._raw is not None:
                here += C_STATE.write_keys(
                    state.dirty,
                    coded,
                    stride,
                    labels,
                    applied,
                    *(self._raw[0], topic, part, None, self._raw[1]),
                    lambda r, c=coded, s=stride, a=applied: encode_rows(r, c, s, labels, a, False),
                    NotText,
                    _key_bytes,
                )
            else:
                for key, rows in state.dirty.items():
                    if key is None:  # no key to compact by
                        continue
                    value = encode_rows(rows, coded, stride, labels, applied)
                    key_b = key if type(key) is bytes else _key_bytes(key)
                    produce(topic, value, key_b, part, None)
                    here += 1
            state.dirty.clear()
            state.gone.clear()
            if here or self._written.get(tp) != applied:  # after the keys: it vouches for them
                produce(topic, encode_meta(state), META_KEY, part, fences.on_delivery)
                fences.records += 1
                self._written[tp] = applied
                here += 1
            sent += here
        self._counted(sent)
        return ChangelogCommit(fences.seal(), self._fatal)

    def forget(self, partitions: Iterable[tuple[str, int]]) -> None:
        """Revoked partitions: their next owner writes their records."""
        for tp in partitions:
            self._written.pop(tp, None)

    def close(self, timeout: float) -> None:
        """Flush and release the changelog's own producer (at-least-once), if it has one."""
        if self._close is not None:
            self._close(timeout)
            self._close = None

    def _counted(self, sent: int) -> None:
        self.records += sent
        if self._count is not None and sent:
            self._count(sent)


class ChangelogCommit:
    """One commit's changelog records, written once its partition records are acked (each
    vouches for the key records before it in its partition)."""

    def __init__(self, fences: Snapshot, fatal: Callable[[], str | None] | None = None) -> None:
        self._fences = fences
        self._fatal = fatal

    @property
    def error(self) -> str | None:
        return self._fences.error or (self._fatal() if self._fatal is not None else None)

    def advance(self) -> bool:
        """True once every record is acked. Never blocks."""
        return self._fences.done and self.error is None

    def wait(self, timeout: float) -> bool:
        """Until every record is acked, for at most ``timeout`` seconds; False on an error."""
        return self._fences.wait(timeout) and self.error is None


def _key_bytes(key: Any) -> bytes:
    """The input key as it came (bytes); a str key (tests, in-process runs) as UTF-8."""
    return key if isinstance(key, bytes) else str(key).encode()
