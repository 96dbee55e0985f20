"""The stage times a traced worker keeps: per chunk and per batch, never per row.

Spans are made after the fact, for the few events kept (streaming.tracing.tracer), from these
stamps; the hot path only writes a handful of floats per chunk. No OpenTelemetry here: this
module is imported whether tracing is on or off.

Who writes what: the feeding thread writes a chunk's ``ChunkTimes`` and its traceparents; the
version's inference thread writes the ``BatchStamp`` of each model call; the delivery thread
(and the dead-letter paths) only read them once the event's outputs are acked.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from streaming.engine.types import Headers

TRACEPARENT = "traceparent"

UPSTREAM = 1
"""Flag bit: the event came with its own traceparent (its span is our root's parent)."""
SAMPLED = 2
"""Flag bit: that traceparent's sampled flag was set (the event is always kept)."""


@dataclass(slots=True)
class ChunkTimes:
    """Wall-clock seconds (time.time) at which a chunk's rows passed each stage."""

    polled: float
    """The poll batch reached the engine: the end of the time in the topic."""
    decoded: float | None = None
    queued: float | None = None
    """Preprocessed and put on the version's lane."""


@dataclass(slots=True)
class BatchStamp:
    """One model call: shared by every chunk in it (the batch span is made once)."""

    seq: int
    version: str
    size: int
    start: float
    end: float | None = None
    """None while the call runs (and for good when it hung)."""


@dataclass(slots=True)
class TraceRow:
    """What the tracer needs of one dead-lettered event (made only for dead letters: rare)."""

    start_s: float | None
    """The event's own time (its ts field), or None where it could not be decoded."""
    times: ChunkTimes | None
    batch: BatchStamp | None
    event_id: str | None
    upstream: bool
    """Its traceparent came with the event (else none, or the one the worker wrote)."""


def stamp_traceparents(
    headers: list[Headers | None], new: bool = True
) -> tuple[np.ndarray, list[bytes | None] | None]:
    """Flags per row (UPSTREAM, SAMPLED), and a new traceparent for each row without one
    (None with ``new`` false: tracing.new_trace_header).

    A new trace's id has to be in the prediction's headers before anyone knows whether the
    event will be kept, so every row without a traceparent gets one (our root span's id as its
    parent id, flags 00: the worker has not sampled it yet). The outputs add it when they are
    produced, so the input's headers are left as they came, and the header budget check
    (streaming.engine.fitting) does not scan rows that came with none. This runs for every row
    while tracing is on: the new ones are made in one vectorised pass per chunk, and a chunk
    that came with no headers at all skips the scan.
    """
    n = len(headers)
    flags = np.zeros(n, dtype=np.uint8)
    if not any(headers):
        return flags, list(new_traceparents(n)) if new else None
    missing: list[int] = []
    odd = _ODD_HEX
    for i, h in enumerate(headers):
        if h:
            for key, value in h:
                if key == TRACEPARENT:
                    flags[i] = UPSTREAM | SAMPLED if value and value[-1] in odd else UPSTREAM
                    break
            else:
                missing.append(i)
        else:
            missing.append(i)
    if not new:
        return flags, None
    made: list[bytes | None] = [None] * n
    for i, tp in zip(missing, new_traceparents(len(missing)), strict=True):
        made[i] = tp
    return flags, made


def with_traceparent(headers: Headers | None, tp: bytes | None) -> Headers | None:
    """``headers`` plus the worker's new traceparent, if the row got one."""
    if tp is None:
        return headers
    return [*headers, (TRACEPARENT, tp)] if headers else [(TRACEPARENT, tp)]


_ODD_HEX = frozenset(b"13579bdfBDF")
"""Last hex digit of the flags: odd means the sampled bit (bit 0) is set."""
_TP_LEN = 55
_DASH = ord("-")


def new_traceparents(n: int) -> list[bytes]:
    """``n`` random W3C traceparents (version 00, flags 00), built in one numpy pass."""
    if n == 0:
        return []
    digits = np.frombuffer(os.urandom(24 * n).hex().encode(), dtype=np.uint8).reshape(n, 48)
    out = np.empty((n, _TP_LEN), dtype=np.uint8)
    out[:, 0:3] = np.frombuffer(b"00-", dtype=np.uint8)
    out[:, 3:35] = digits[:, :32]
    out[:, 35] = _DASH
    out[:, 36:52] = digits[:, 32:]
    out[:, 52:55] = np.frombuffer(b"-00", dtype=np.uint8)
    buf = out.tobytes()
    return [buf[at : at + _TP_LEN] for at in range(0, _TP_LEN * n, _TP_LEN)]


def has_traceparent(headers: Headers | None) -> bool:
    """The event came with a traceparent of its own."""
    return any(key == TRACEPARENT for key, _value in headers or ())


def parse_traceparent(headers: Headers | None) -> tuple[int, int] | None:
    """(trace id, span id) of a valid W3C traceparent among ``headers``, else None."""
    for key, value in headers or ():
        if key != TRACEPARENT or not value:
            continue
        text = value.decode("latin-1") if isinstance(value, bytes) else str(value)
        parts = text.strip().split("-")
        if len(parts) < 4 or len(parts[1]) != 32 or len(parts[2]) != 16:
            return None
        try:
            trace_id, span_id = int(parts[1], 16), int(parts[2], 16)
        except ValueError:
            return None
        if trace_id == 0 or span_id == 0:
            return None
        return trace_id, span_id
    return None
