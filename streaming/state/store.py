"""The state of one input partition: per Kafka key, the key's recent events, and the
aggregates an event reads from them.

Semantics (the brute-force check in loadtests/state_check.py computes exactly this):

- ``wm`` is the partition's latest event time among the events applied so far.
- An event at offset ``o`` with event time ``ts`` is *late* when ``ts < wm - grace``: it is
  scored as if it happened at ``wm`` ("as of now") and is not added to the state. Other events,
  in order or out of order within the grace period, are added at their place in event time.
- Its features aggregate the key's events (late ones excluded) with an offset *smaller than*
  ``o`` and an event time in ``(t - window, t]``, ``t`` being ``ts`` (or ``wm`` if late).
- Each kept event carries its input offset: that is what the state keeps per key of where
  each change came from. An event whose offset is not above the partition's last applied
  offset is a replay (at-least-once reads it again after a crash or a rebalance): it changes
  nothing, and its features are computed from the events with a smaller offset only, so
  they equal the first run's, never counting the event twice.
- Events older than ``wm - horizon`` (the longest window + grace + replay margin) are pruned
  and a key whose newest event is that old is dropped: no window of a current event can
  reach them, so pruning changes no feature. A replay is exact while the partition's event
  time has moved on by less than the replay margin since the first run (seconds, in practice).

Sums are ``math.fsum`` (exactly rounded): the result does not depend on the order events
were inserted in, so a replay and a recomputation agree to the last bit.

Layout: per key one flat ``array('d')`` of rows ``(ts, offset, field...)`` sorted by (event
time, offset). To the garbage collector a key's state is one array holding no objects (it is
tracked, as every array is since Python 3.11's heap types, but it has nothing inside to
traverse): with a Python object and a list per column for each key, the collector's passes
over the state of 50,000 cards were 70% of the stage's cost. Fields only counted distinct are
stored as codes of the partition's vocabulary.

Two paths give the same answers to the last bit: the C extension streaming.state._state_c
(``C_STATE``; setup.py builds it, optional where no compiler is found) runs ``apply_many``'s
loop and the aggregates for a whole partition run in one call, writing the features into a
float64 buffer; the Python below is the fallback and the reference (``native=False``), and
takes any run the C path does not answer for (``C_STATE.Unsupported``: a time or an offset
past 2**52, a value that is not a number). Both keep the same rows, marks and offsets, so the
changelog, its codec and the restore do not know which one ran. The C path's new arrays are
not tracked by the cyclic collector (they hold no objects).

Threads: a PartitionState is owned by the feeding thread (the engine's submit); the
changelog writer reads serialized copies only.
"""

from __future__ import annotations

import math
from array import array
from bisect import bisect_right
from collections.abc import Hashable, Sequence
from contextlib import suppress
from typing import Any

import numpy as np

from streaming.state.plan import C_STATE, Plan
from streaming.state.spec import StateSpec

_NO_TIME = -(2**62)
"""The partition's event time before its first event (no event is late then)."""
_EXPIRE_EVERY = 1024
"""Fewest applied events between two expiry passes."""


class Vocabulary(dict[Any, int]):
    """Value -> code, the next code for a value not seen yet; ``values`` maps back.

    Codes of values that no key's rows hold any more are dropped by ``recode`` (the stage's
    prune), which gives the kept values new codes: ``generation`` counts those, so that a
    cache by code (the changelog's Labels) knows when to start again."""

    def __init__(self) -> None:
        super().__init__()
        self.values: list[Any] = []
        self.generation = 0

    def recode(self, live: Sequence[int]) -> array:
        """Keep only the values of the ``live`` codes (ascending), coded 0, 1, ... in that
        order, in place (the C path holds this dict and its ``values``); returns the mapping
        old code -> new code (-1: dropped) as float64, for the rows."""
        mapping = array("d", [-1.0]) * len(self.values)
        kept = [self.values[c] for c in live]
        for new, old in enumerate(live):
            mapping[old] = float(new)
        self.clear()
        self.update(zip(kept, range(len(kept)), strict=True))
        self.values[:] = kept
        self.generation += 1
        return mapping

    def __missing__(self, value: Any) -> int:
        code = self[value] = len(self)
        self.values.append(value)
        return code


class PartitionState:
    """Per key state of one partition; ``apply`` returns an event's features and adds it."""

    def __init__(
        self, spec: StateSpec, codes: Vocabulary | None = None, native: bool = C_STATE is not None
    ) -> None:
        self.spec = spec
        self._grace = spec.grace_ms
        self._horizon = spec.horizon_ms  # bound once: properties cost on the hot path
        plan = Plan(spec)
        self._windows = plan.windows
        self._empty = plan.empty
        self._coded = plan.coded
        self._stride = plan.stride
        self.coded_columns = plan.coded_columns
        self._native_plan = plan.native if native else None
        self.native = self._native_plan is not None
        """The C path runs (``native``, the default where the extension is built)."""
        self.stride = plan.stride
        """Values per row: (ts, offset, field...); the changelog's codec reads rows by it."""
        self.codes = Vocabulary() if codes is None else codes
        """Vocabulary of the fields only counted distinct (a stage's partitions share one);
        grows with the distinct values seen."""
        self.keys: dict[Hashable, array] = {}
        """Key -> its rows (ts, offset, fields...), flat."""
        self.wm: int | None = None
        """The latest event time applied (None before the first event)."""
        self.applied = -1
        """The highest offset applied; an offset not above it is a replay."""
        self.late: dict[int, int] = {}
        """Offset -> the time a late event was scored at, so that its replay is scored alike."""
        self._since_expiry = 0
        self._expire_every = _EXPIRE_EVERY
        self.dirty: dict[Hashable, array] = {}
        """Key -> its rows, for the keys whose rows changed since the changelog last took
        them (their rows kept here: the changelog then reads them without a lookup among all
        the keys, a few cache misses each in a state of 100,000 cards)."""
        self.gone: set[Hashable] = set()
        """Keys expired since the changelog last took them (tombstones)."""

    # ---------------------------------------------------------------- the hot path

    def apply(self, key: Hashable, offset: int, ts: int, values: Sequence[Any]) -> list[float]:
        """The features of the event at ``offset``, then the event added (unless it is late or
        a replay). ``values`` are the event's fields, in ``spec.fields`` order."""
        out: list[float] = []
        self.apply_many([key], self.rows([ts], [offset], [[v] for v in values]), out)
        return out

    def rows(
        self, ts: Sequence[int], offsets: Sequence[int], columns: Sequence[Sequence[Any]]
    ) -> list[tuple[Any, ...]]:
        """Input rows for ``apply_many`` from columns: (ts, offset, field...) per event, the
        fields only counted distinct as vocabulary codes. Column-wise, so that the per-event
        work is a few C calls."""
        return list(zip(ts, offsets, *self.coded(columns)))  # noqa: B905 - one length

    def coded(self, columns: Sequence[Sequence[Any]]) -> list[Sequence[Any]]:
        """The columns with the distinct-only ones as vocabulary codes."""
        if self.native and type(self.codes) is Vocabulary:
            vocabulary, values = self.codes, self.codes.values
            return [
                C_STATE.code(vocabulary, values, col) if coded else col
                for coded, col in zip(self._coded, columns, strict=True)
            ]
        code = self.codes.__getitem__  # C speed; a new value is coded by __missing__
        return [
            list(map(code, col)) if coded else col
            for coded, col in zip(self._coded, columns, strict=True)
        ]

    def apply_columns(
        self,
        keys: Sequence[Hashable],
        ts: Sequence[int],
        offsets: Sequence[int],
        columns: Sequence[Sequence[Any]],
        start: int,
        end: int,
        out: np.ndarray,
    ) -> None:
        """``apply_many`` for events ``start:end`` of a poll batch given by columns (``coded``),
        event i's features written to row i of the float64 matrix ``out``. The C path when
        it runs and answers for the run; the Python path otherwise."""
        if self._native_plan is not None and self._run_native(
            C_STATE.apply, (keys, ts, offsets, columns), start, end, out
        ):
            return
        flat: list[float] = []
        run = [c[start:end] for c in (ts, offsets, *columns)]
        self._apply_python(keys[start:end], list(zip(*run)), flat)  # noqa: B905 - one length
        out[start:end] = np.array(flat, dtype=np.float64).reshape(end - start, -1)

    def apply_rows(
        self, keys: list[Hashable], rows: bytes, start: int, end: int, out: np.ndarray
    ) -> None:
        """``apply_columns`` for events ``start:end`` of a batch ``C_STATE.gather`` made:
        ``rows`` its float64 (ts, offset, field...) rows, checked and coded."""
        assert self._native_plan is not None, "gather's rows are the C path's"
        if self._run_native(C_STATE.apply_rows, (keys, rows), start, end, out):
            return
        # a partition time past 2**52 (set by the Python path): the column path answers
        flat = np.frombuffer(rows, dtype=np.float64).reshape(-1, self._stride)[start:end]
        self.apply_columns(
            keys[start:end],
            [int(t) for t in flat[:, 0]],
            [int(o) for o in flat[:, 1]],
            [flat[:, c].tolist() for c in range(2, self._stride)],
            0,
            end - start,
            out[start:end],
        )

    def _run_native(
        self, apply: Any, inputs: tuple[Any, ...], start: int, end: int, out: np.ndarray
    ) -> bool:
        """One C call (``C_STATE.apply`` or ``apply_rows``, with its batch ``inputs``) over
        events ``start:end``, and where the partition then stands; False when the C path
        does not answer for the run (``Unsupported``: nothing changed)."""
        try:
            wm, applied, replays = apply(
                self._native_plan,
                self.keys,
                self.dirty,
                self.late,
                *inputs,
                start,
                end,
                out,
                _NO_TIME if self.wm is None else self.wm,
                self.applied,
            )
        except C_STATE.Unsupported:
            return False
        self.wm = None if wm == _NO_TIME else wm
        self.applied = applied
        self._expire_after(end - start - replays)
        return True

    def apply_many(
        self, keys: Sequence[Hashable], rows_in: Sequence[tuple[Any, ...]], out: list[float]
    ) -> None:
        """``apply`` for a run of events of this partition in offset order (``rows_in`` from
        ``rows``); each event's features are appended to the flat ``out``."""
        if self._native_plan is None or not rows_in:
            self._apply_python(keys, rows_in, out)
            return
        ts, offsets, *columns = zip(*rows_in)  # noqa: B905 - rows of one width
        matrix = np.empty((len(rows_in), len(self._empty)), dtype=np.float64)
        self.apply_columns(keys, ts, offsets, columns, 0, len(rows_in), matrix)
        out.extend(matrix.ravel().tolist())

    def _apply_python(
        self, keys: Sequence[Hashable], rows_in: Sequence[tuple[Any, ...]], out: list[float]
    ) -> None:
        """The Python path of ``apply_many``. One loop with the hot names bound to locals:
        the stage's cost is per event, and attribute lookups and a list per event were a
        good share of it."""
        extend = out.extend
        state = self.keys
        get = state.get
        empty = self._empty
        stride = self._stride
        grace = self._grace
        horizon = self._horizon
        features = self._features
        dirty = self.dirty
        wm = _NO_TIME if self.wm is None else self.wm
        applied = self.applied
        replays = 0
        for key, row in zip(keys, rows_in):  # noqa: B905 - same lengths
            ts, offset = row[0], row[1]
            if offset <= applied:
                self.wm = None if wm == _NO_TIME else wm
                extend(self._replay(key, offset, ts))
                replays += 1
                continue
            applied = offset
            rows = get(key)
            if ts < wm - grace:  # late: as of wm, not kept
                self.late[offset] = wm
                extend(features(rows, wm, len(rows) // stride) if rows else empty)
                continue
            if ts > wm:
                wm = ts
            if rows is None:  # a key's first event: nothing to aggregate
                extend(empty)
                state[key] = dirty[key] = array("d", row)
                continue
            dirty[key] = rows
            if ts >= rows[-stride]:  # in order: the common case, appended
                extend(features(rows, ts, len(rows) // stride))
                rows.extend(row)
            else:
                at = bisect_right(rows[0::stride], ts)
                extend(features(rows, ts, at))
                rows[at * stride : at * stride] = array("d", row)
            limit = wm - horizon
            if rows[0] <= limit:
                del rows[: bisect_right(rows[0::stride], limit) * stride]
        self.wm = None if wm == _NO_TIME else wm
        self.applied = applied
        self._expire_after(len(keys) - replays)

    def _expire_after(self, applied: int) -> None:
        """Count events applied (replays are not); an expiry pass when enough were."""
        self._since_expiry += applied
        if self._since_expiry >= self._expire_every:
            self.expire()

    def _features(self, rows: array, t: int, hi: int) -> list[float]:
        """Aggregates over the first ``hi`` rows with event time in (t - window, t]."""
        out = self._empty[:]
        if not hi:
            return out
        stride = self._stride
        ts = rows[0 : hi * stride : stride]
        end = hi * stride
        for window, aggs in self._windows:
            lo = bisect_right(ts, t - window)
            if lo == hi:
                continue  # an empty window: the defaults stand
            for slot, kind, col, cap in aggs:
                if kind == "count":
                    out[slot] = float(hi - lo)
                elif kind == "since_last":
                    out[slot] = (t - ts[hi - 1]) / 1000.0
                elif kind == "sum":
                    out[slot] = math.fsum(rows[lo * stride + col : end : stride])
                elif kind == "mean":
                    out[slot] = math.fsum(rows[lo * stride + col : end : stride]) / (hi - lo)
                elif kind == "distinct":
                    out[slot] = float(min(len(set(rows[lo * stride + col : end : stride])), cap))
                elif kind == "max":
                    out[slot] = max(rows[lo * stride + col : end : stride])
                else:  # last
                    out[slot] = rows[end - stride + col]
        return out

    # ---------------------------------------------------------------- replays and expiry

    def _replay(self, key: Hashable, offset: int, ts: int) -> list[float]:
        """An event read again: features from the key's events with a smaller offset only."""
        t = self.late.get(offset, ts)
        rows = self.keys.get(key)
        if rows is None:
            return self._empty[:]
        stride = self._stride
        earlier = array("d")
        for i in range(0, len(rows), stride):
            if rows[i + 1] < offset:
                earlier.extend(rows[i : i + stride])
        return self._features(earlier, t, bisect_right(earlier[0::stride], t))

    def expire(self) -> int:
        """Drop the keys whose newest event is past the horizon, and late-event marks as old;
        returns how many keys went. A pass looks at every key, so passes are spaced by at
        least as many events as there are keys: about one key looked at per event."""
        self._since_expiry = 0
        if self.wm is None:
            return 0
        limit = self.wm - self._horizon
        stride = self._stride
        gone = None
        if self.native:
            with suppress(C_STATE.Unsupported):  # then the scan below answers
                gone = C_STATE.expired(self.keys, stride, limit)
        if gone is None:
            gone = [key for key, rows in self.keys.items() if not rows or rows[-stride] <= limit]
        for key in gone:
            del self.keys[key]
        for key in gone:
            self.dirty.pop(key, None)
        self.gone.update(gone)
        if self.late:
            self.late = {o: t for o, t in self.late.items() if t > limit}
        self._expire_every = max(_EXPIRE_EVERY, len(self.keys))
        return len(gone)

    def __len__(self) -> int:
        return len(self.keys)
