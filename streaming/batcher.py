"""Hands preprocessed rows from the source to one model version's inference thread.

A lane gives the inference thread everything queued, up to ``max_batch_size`` rows, as soon as
the model is free: under light load an event waits for nobody, under load the queue fills
while the model runs, so batches grow by themselves.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass

import numpy as np

from streaming.offsets import PartitionLedger
from streaming.records import Headers


@dataclass(slots=True)
class Chunk:
    """Rows of one poll routed to one version, with what their outputs need."""

    features: np.ndarray
    event_ids: list[str]
    ts_ms: list[int]
    keys: list[bytes | None]
    values: list[bytes]
    """The original bytes, kept for dead letters after decoding (a reference, not a copy)."""
    headers: list[Headers | None]
    ledgers: list[PartitionLedger]
    offsets: list[int]
    enqueued: float

    def __len__(self) -> int:
        return len(self.event_ids)

    def split(self, n: int) -> tuple[Chunk, Chunk]:
        """The first n rows, and the rest (which keeps its original enqueue time)."""
        def part(s: slice) -> Chunk:
            return Chunk(self.features[s], self.event_ids[s], self.ts_ms[s], self.keys[s],
                         self.values[s], self.headers[s], self.ledgers[s], self.offsets[s], self.enqueued)
        return part(slice(0, n)), part(slice(n, None))


class Lane:
    """A FIFO of chunks for one model version; order is kept, so per-key order is kept."""

    def __init__(self, max_batch_size: int) -> None:
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be >= 1")
        self.max_batch_size = max_batch_size
        self._chunks: deque[Chunk] = deque()
        self._rows = 0
        self._cond = threading.Condition()
        self._closed = False

    def put(self, chunk: Chunk) -> None:
        with self._cond:
            self._chunks.append(chunk)
            self._rows += len(chunk)
            self._cond.notify()

    def close(self) -> None:
        """No more puts; take() returns what is left, then None."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def queued_rows(self) -> int:
        return self._rows

    def take(self, timeout: float = 0.1) -> list[Chunk] | None:
        """Up to max_batch_size rows in order; [] on timeout; None once closed and empty."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not self._chunks:
                if self._closed:
                    return None
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return []
                self._cond.wait(remaining)
            out: list[Chunk] = []
            room = self.max_batch_size
            while self._chunks and room > 0:
                head = self._chunks[0]
                if len(head) <= room:
                    out.append(self._chunks.popleft())
                    room -= len(head)
                else:
                    first, rest = head.split(room)
                    self._chunks[0] = rest
                    out.append(first)
                    room = 0
            self._rows -= self.max_batch_size - room
            return out
