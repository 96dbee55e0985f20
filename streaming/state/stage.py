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

from streaming.state.spec import StateSpec
from streaming.state.store import PartitionState


class StateStage:
    """Features per event from the state of its partition and key."""

    def __init__(self, spec: StateSpec) -> None:
        self.spec = spec
        self._read = attrgetter(spec.ts_field, *spec.fields)
        """(ts, field...) of a record in one call."""
        self.partitions: dict[tuple[str, int], PartitionState] = {}

    def partition(self, topic: str, partition: int) -> PartitionState:
        """The partition's state (created empty when first seen)."""
        state = self.partitions.get((topic, partition))
        if state is None:
            state = self.partitions[(topic, partition)] = PartitionState(self.spec)
        return state

    def drop(self, topic: str, partition: int) -> None:
        """Forget a revoked partition: whoever gets it next rebuilds or restores it."""
        self.partitions.pop((topic, partition), None)

    def compute(self, msgs: Sequence[Any], records: Sequence[Any]) -> np.ndarray:
        """One row of features per record (in order); each event is applied to its state."""
        width = len(self.spec.aggregates)
        if not msgs:
            return np.zeros((0, width), dtype=np.float64)
        read = self._read
        rows_in = [read(r) for r in records]
        keys = [m.key() for m in msgs]
        offsets = [m.offset() for m in msgs]
        where = [(m.topic(), m.partition()) for m in msgs]
        out: list[list[float]] = []
        start = 0
        n = len(msgs)
        # a poll returns runs of one partition (fetches are per partition): a call per run
        while start < n:
            part = where[start]
            end = start + 1
            while end < n and where[end] == part:
                end += 1
            out += self.partition(*part).apply_many(
                keys[start:end], offsets[start:end], rows_in[start:end]
            )
            start = end
        return np.array(out, dtype=np.float64)

    def keys(self) -> int:
        """Keys held over all partitions (for the metric and the soak)."""
        return sum(len(s) for s in self.partitions.values())


def history_features(spec: StateSpec, keys: Sequence[Any], records: Sequence[Any]) -> np.ndarray:
    """The stage over a whole history read as one partition in order (offset = position):
    what training computes, with the code serving runs."""
    read = attrgetter(spec.ts_field, *spec.fields)
    rows = PartitionState(spec).apply_many(keys, range(len(records)), [read(r) for r in records])
    return np.array(rows, dtype=np.float64).reshape(len(records), len(spec.aggregates))
