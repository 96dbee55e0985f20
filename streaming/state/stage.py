"""The stateful feature stage of the engine: one PartitionState per input partition.

Runs on the feeding thread, after decode and before route and preprocess; its output is a
float64 matrix with one column per declared aggregate, handed to the preprocessor with the
records. Owned by the feeding thread alone (assign and revoke arrive on it too).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from streaming.state.spec import StateSpec
from streaming.state.store import PartitionState


class StateStage:
    """Features per event from the state of its partition and key."""

    def __init__(self, spec: StateSpec) -> None:
        self.spec = spec
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
        spec = self.spec
        ts_field = spec.ts_field
        fields = spec.fields
        rows = []
        last: tuple[Any, Any] = (None, None)
        state: PartitionState | None = None
        for msg, rec in zip(msgs, records, strict=True):
            where = (msg.topic(), msg.partition())
            if where != last:
                state = self.partition(*where)
                last = where
            assert state is not None
            rows.append(
                state.apply(
                    msg.key(),
                    msg.offset(),
                    getattr(rec, ts_field),
                    [getattr(rec, f) for f in fields],
                )
            )
        if not rows:
            return np.zeros((0, len(spec.aggregates)), dtype=np.float64)
        return np.array(rows, dtype=np.float64)

    def keys(self) -> int:
        """Keys held over all partitions (for the metric and the soak)."""
        return sum(len(s) for s in self.partitions.values())


def history_features(spec: StateSpec, keys: Sequence[Any], records: Sequence[Any]) -> np.ndarray:
    """The stage over a whole history read as one partition in order (offset = position):
    what training computes, with the code serving runs."""
    state = PartitionState(spec)
    ts_field, fields = spec.ts_field, spec.fields
    rows = [
        state.apply(key, offset, getattr(rec, ts_field), [getattr(rec, f) for f in fields])
        for offset, (key, rec) in enumerate(zip(keys, records, strict=True))
    ]
    return np.array(rows, dtype=np.float64).reshape(len(records), len(spec.aggregates))
