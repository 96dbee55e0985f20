"""Rows published after the explainer, kept for a few batches so that one call explains them.

At about 1% of rows explained, a 256-row batch has 2-3 rows to explain, and an explainer call
on so few rows costs more in its fixed part (a few dozen numpy operations, one more publish)
than in its rows. So a version's inference thread keeps the rows it holds back (those to
explain, and every later row of their keys: streaming.decision.reasons.held_rows) here, and
explains and publishes them together once ``due``:

- the lane is empty: the worker keeps up, so nothing is gained by waiting (at a steady rate
  a row is explained right after its own batch, as it always was);
- or ``max_rows`` rows wait to be explained, or the oldest has waited ``max_wait_s``: a
  backlog is being drained, and the rows it holds wait at most that long for their reasons.

Until then their keys stay held: a later batch's row of such a key joins the backlog behind
them, so a key's predictions stay in input order. Rows that need no explanation and whose key
is not held are published at once, whatever waits here. Owned by one version's inference
thread (streaming.engine.scoring), like everything it holds.

A model call that hangs while rows wait here: the watchdog answers the hung call's rows and the
lane's (streaming.engine.watchdog), not these, which were scored by earlier calls. The thread
publishes them once the call returns; if it never does, they stay unpublished and their
offsets uncommitted, so the partition's next owner scores them again (at-least-once holds,
and nothing is published twice).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from streaming.decision.reasons import ReasonLike
from streaming.engine.types import Chunk

MAX_ROWS = 32
"""Rows to explain that make a backlog due: ~12 batches' worth at 1% of 256-row batches, and
about 2-4 ms of explaining here (the next batch waits that long)."""
MAX_WAIT_S = 0.025
"""The longest a held row waits for rows to share its explainer call (only while rows wait in
the lane: a worker that keeps up explains after every batch)."""


@dataclass(slots=True)
class Held:
    """The held rows of one chunk, with what their predictions need from their batch."""

    chunk: Chunk
    rows: list[int]
    """Positions in the chunk, ascending."""
    score: np.ndarray
    codes: np.ndarray
    node_scores: dict[str, np.ndarray] | None
    rule_reasons: Mapping[int, Sequence[ReasonLike]]
    """Position in ``rows`` -> the rules that fired on it."""
    explain: list[int]
    """Positions in ``rows`` to explain (at or above review); the others wait behind one."""
    features: np.ndarray
    """The model inputs of the ``explain`` rows."""
    scored_ms: int


class ExplainBacklog:
    """One version's held rows, oldest first (module docstring)."""

    def __init__(
        self,
        max_rows: int = MAX_ROWS,
        max_wait_s: float = MAX_WAIT_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_rows = max_rows
        self.max_wait_s = max_wait_s
        self._clock = clock
        self.items: list[Held] = []
        self.keys: set[bytes | None] = set()
        """Keys with a row here: a later row of one of them is held too."""
        self.to_explain = 0
        self._since = 0.0

    def add(self, item: Held) -> None:
        if not self.items:
            self._since = self._clock()
        self.items.append(item)
        keys = item.chunk.keys
        self.keys.update(keys[i] for i in item.rows)
        self.to_explain += len(item.explain)

    def due(self, lane_rows: int) -> bool:
        """Explain and publish now? (module docstring)"""
        if not self.items:
            return False
        return (
            lane_rows == 0
            or self.to_explain >= self.max_rows
            or self._clock() - self._since >= self.max_wait_s
        )

    def wait_s(self) -> float:
        """How long the thread may wait for its lane before this is due by age."""
        if not self.items:
            return self.max_wait_s
        return max(0.0, self._since + self.max_wait_s - self._clock())

    def take(self) -> list[Held]:
        """Everything held, oldest first; the backlog is empty after."""
        items = self.items
        self.items = []
        self.keys = set()
        self.to_explain = 0
        return items


def held_chunk(items: Sequence[Held]) -> Chunk | None:
    """The held rows of all ``items`` as one chunk, in order, so that one publish (one delivery
    count, one ledger pass) covers them; None when tracing marked a chunk (its spans are made
    per chunk and model call, so those are published one by one)."""
    if any(
        it.chunk.times is not None
        or it.chunk.new_traceparents is not None
        or it.chunk.batch is not None
        for it in items
    ):
        return None
    if len(items) == 1 and len(items[0].rows) == len(items[0].chunk):
        return items[0].chunk

    def pick(field: str) -> list[Any]:
        out: list[Any] = []
        for it in items:
            values = getattr(it.chunk, field)
            out += [values[i] for i in it.rows]
        return out

    return Chunk(
        features=np.empty((0, 0), dtype=np.float32),  # published rows need no features
        event_ids=pick("event_ids"),
        ts_ms=pick("ts_ms"),
        keys=pick("keys"),
        values=pick("values"),
        headers=pick("headers"),
        ledgers=pick("ledgers"),
        offsets=pick("offsets"),
        enqueued=items[0].chunk.enqueued,
    )
