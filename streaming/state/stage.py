"""The stateful feature stage of the engine: one PartitionState per input partition.

Runs on the feeding thread, after decode and before route and preprocess; its output is a
float64 matrix with one column per declared aggregate, handed to the preprocessor with the
records. Owned by the feeding thread alone (assign and revoke arrive on it too).
"""

from __future__ import annotations

from collections.abc import Sequence
from operator import attrgetter
from typing import Any

import numpy as np

from streaming.state.plan import coded_fields
from streaming.state.spec import StateSpec
from streaming.state.store import C_STATE, PartitionState, Vocabulary


class StateStage:
    """Features per event from the state of its partition and key."""

    def __init__(self, spec: StateSpec, native: bool = C_STATE is not None) -> None:
        self.spec = spec
        self.native = native
        """Partitions run the C path (store.C_STATE; the default where it is built)."""
        self._ts = attrgetter(spec.ts_field)
        self._fields = [attrgetter(f) for f in spec.fields]
        self.codes = Vocabulary()
        """The vocabulary of distinct-only fields, shared by the partitions' states."""
        self._gather = (
            spec.ts_field,
            tuple(spec.fields),
            tuple(coded_fields(spec)),
            self.codes,
            self.codes.values,
        )
        """C_STATE.gather's arguments after the batch."""
        self.partitions: dict[tuple[str, int], PartitionState] = {}

    def partition(self, topic: str, partition: int) -> PartitionState:
        """The partition's state (created empty when first seen)."""
        state = self.partitions.get((topic, partition))
        if state is None:
            state = self.partitions[(topic, partition)] = PartitionState(
                self.spec, self.codes, native=self.native
            )
        return state

    def drop(self, topic: str, partition: int) -> None:
        """Forget a revoked partition: whoever gets it next rebuilds or restores it."""
        self.partitions.pop((topic, partition), None)

    def compute(self, msgs: Sequence[Any], records: Sequence[Any]) -> np.ndarray:
        """One row of features per record (in order); each event is applied to its state.

        The state is per partition of the one input topic the engine reads (the first
        message's topic: reading ``topic()`` of every message cost on the hot path)."""
        width = len(self.spec.aggregates)
        n = len(msgs)
        if not n:
            return np.zeros((0, width), dtype=np.float64)
        topic = msgs[0].topic()
        if self.native and type(self.codes) is Vocabulary:
            try:  # one C call for the batch's keys, partition runs and coded rows
                keys, runs, rows = C_STATE.gather(msgs, records, *self._gather)
            except C_STATE.Unsupported:
                pass  # the column path below: its C apply or the Python answers
            else:
                matrix = np.empty((n, width), dtype=np.float64)
                for part, start, end in runs:
                    self.partition(topic, part).apply_rows(keys, rows, start, end, matrix)
                return matrix
        ts = list(map(self._ts, records))
        columns = [list(map(get, records)) for get in self._fields]
        offsets = [m.offset() for m in msgs]
        keys = [m.key() for m in msgs]
        parts = [m.partition() for m in msgs]
        first = self.partition(topic, parts[0])
        # a poll returns runs of one partition (fetches are per partition): a call each
        runs = [(0, n)] if parts.count(parts[0]) == n else _runs(parts)
        if first.native:  # one C call per partition run, into the matrix handed on
            matrix = np.empty((n, width), dtype=np.float64)
            coded = first.coded(columns)
            for start, end in runs:
                state = self.partition(topic, parts[start])
                state.apply_columns(keys, ts, offsets, coded, start, end, matrix)
            return matrix
        rows = first.rows(ts, offsets, columns)  # the vocabulary is the stage's: any state
        out: list[float] = []
        for start, end in runs:
            state = self.partition(topic, parts[start])
            state.apply_many(keys[start:end], rows[start:end], out)
        return np.array(out, dtype=np.float64).reshape(n, width)

    def compute_one(
        self, topic: str, partition: int, key: Any, offset: int, record: Any
    ) -> np.ndarray:
        """One event's features as a (1, aggregates) array (per-event loops: baselines)."""
        state = self.partition(topic, partition)
        values = [getattr(record, f) for f in self.spec.fields]
        return np.array([state.apply(key, offset, self._ts(record), values)], dtype=np.float64)

    def keys(self) -> int:
        """Keys held over all partitions (for the metric and the soak)."""
        return sum(len(s) for s in self.partitions.values())


def _runs(parts: list[int]) -> list[tuple[int, int]]:
    """(start, end) of each run of one partition (a poll returns runs: fetches are per
    partition)."""
    runs = []
    start = 0
    while start < len(parts):
        end = start + 1
        while end < len(parts) and parts[end] == parts[start]:
            end += 1
        runs.append((start, end))
        start = end
    return runs


def history_features(spec: StateSpec, keys: Sequence[Any], records: Sequence[Any]) -> np.ndarray:
    """The stage over a whole history read as one partition in order (offset = position):
    what training computes, with the code serving runs."""
    state = PartitionState(spec)
    ts = [getattr(r, spec.ts_field) for r in records]
    columns = [[getattr(r, f) for r in records] for f in spec.fields]
    out: list[float] = []
    state.apply_many(keys, state.rows(ts, range(len(records)), columns), out)
    return np.array(out, dtype=np.float64).reshape(len(records), len(spec.aggregates))
