"""The stateful feature stage of the engine: one PartitionState per input partition.

Runs on the feeding thread, after decode and before route and preprocess; its output is a
float64 matrix with one column per declared aggregate, handed to the preprocessor with the
records. Owned by the feeding thread alone (assign and revoke arrive on it too).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from operator import attrgetter
from typing import Any

import numpy as np

from streaming.state.plan import Plan, coded_fields
from streaming.state.prune import live_codes, recode
from streaming.state.spec import StateSpec
from streaming.state.store import C_STATE, PartitionState, Vocabulary

log = logging.getLogger("streaming.worker")

PRUNE_MIN = 1 << 16
"""The fewest vocabulary values at which a prune runs (a few MB of values)."""


class StateStage:
    """Features per event from the state of its partition and key."""

    def __init__(
        self, spec: StateSpec, native: bool = C_STATE is not None, prune_min: int = PRUNE_MIN
    ) -> None:
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
        self.prune_min = prune_min
        self._layout = Plan(spec)
        """Where the coded columns sit in a row (as every partition's state has them)."""
        self._prune_at = prune_min
        """The vocabulary size at which the next prune runs (twice what the last one kept)."""

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
                self.maybe_prune()
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
        else:
            rows = first.rows(ts, offsets, columns)  # the vocabulary is the stage's: any state
            out: list[float] = []
            for start, end in runs:
                state = self.partition(topic, parts[start])
                state.apply_many(keys[start:end], rows[start:end], out)
            matrix = np.array(out, dtype=np.float64).reshape(n, width)
        self.maybe_prune()
        return matrix

    def maybe_prune(self) -> None:
        """Prune once the vocabulary has doubled since the last prune (see ``prune``)."""
        if len(self.codes.values) >= self._prune_at:
            self.prune()

    def prune(self) -> int:
        """Drop the vocabulary's values that no key's rows hold any more (their keys expired
        or their rows aged out) and recode the rest; returns how many values were kept.

        Without it the vocabulary of a distinct-only field grows with every value ever seen
        (a device id, an IP), whatever expiry removes from the keys: memory that expiry does
        not bound. Runs when the vocabulary has doubled since the last prune (and holds at
        least ``prune_min`` values), so its cost, one pass over every key's rows, is spread
        over as many new values as the vocabulary kept. On the feeding thread, which owns the
        state; features do not change (codes are only compared for equality)."""
        started = time.perf_counter()
        codes = self.codes
        size = len(codes.values)
        # a partition's changed rows are its held rows (the same arrays; the store keeps
        # them so, tests/unit/test_state_native.py checks it): recoding the keys covers them
        states = [s.keys for s in self.partitions.values()]
        coded, stride = self._layout.coded_columns, self._layout.stride
        native = self.native and C_STATE is not None
        live = (C_STATE.live_codes if native else live_codes)(states, coded, stride, size)
        kept = np.flatnonzero(np.frombuffer(live, dtype=np.uint8)).tolist()
        mapping = codes.recode(kept)
        (C_STATE.recode if native else recode)(states, coded, stride, mapping)
        self._prune_at = max(self.prune_min, 2 * len(kept))
        log.info(
            "state vocabulary pruned: %d of %d values kept in %.3f s",
            len(kept),
            size,
            time.perf_counter() - started,
            extra={"kept": len(kept), "values": size},
        )
        return len(kept)

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
