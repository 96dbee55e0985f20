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
import random
from dataclasses import dataclass
from hashlib import md5
from typing import Any

import numpy as np

from streaming.engine.types import Headers

TRACEPARENT = "traceparent"

UPSTREAM = 1
"""Flag bit: the event came with its own traceparent (its span is our root's parent)."""
SAMPLED = 2
"""Flag bit: that traceparent's sampled flag was set (the event is always kept)."""
PICKED = 4
"""Flag bit: picked to be traced as its chunk was queued (streaming.tracing.sampler.QueuePicks),
by the ratio or, with ``PICKED_SLOW``, for being slow already; its outputs carry its trace."""
PICKED_SLOW = 8


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


def trace_id_of(event_id: str) -> int:
    """The trace id of an event that came without a traceparent: the MD5 of its event id
    (UTF-8) as 128 bits, so the prediction's ``event_id`` says which trace is its own
    (``printf %s EVENT_ID | md5sum``) without a header on every output (a header cost more
    than the rest of tracing; README, Traces). A redelivered event's traces share the id."""
    return int.from_bytes(md5(event_id.encode(), usedforsecurity=False).digest(), "big") or 1


def worker_traceparent(event_id: str | None) -> bytes:
    """A traceparent for an output of an event that came without one: its trace (by event id,
    random where the id is unknown), a new root span id, flags 00 (sampled later, at the ack)."""
    trace = trace_id_of(event_id) if event_id is not None else _rand(128) or 1
    return b"00-%032x-%016x-00" % (trace, _rand(64) or 1)


def stamp_traceparents(
    headers: list[Headers | None], event_ids: list[str] | None = None
) -> tuple[np.ndarray | None, list[bytes | None] | None]:
    """Flags per row (UPSTREAM, SAMPLED; None where no row came with a traceparent: the
    common chunk), and, given ``event_ids`` (tracing.new_trace_header), a traceparent for each
    row without one, to be written into its outputs.

    Those new traceparents are the worker's root spans (parent id: our root span; trace id:
    ``trace_id_of`` the event id; flags 00: the worker has not sampled it yet). The outputs add
    them when they are produced, so the input's headers are left as they came, and the header
    budget check (streaming.engine.fitting) does not scan rows that came with none. The flags
    run for every row while tracing is on, so a chunk that came with no headers at all skips
    the scan.
    """
    n = len(headers)
    flags: np.ndarray | None = None
    if not any(headers):
        missing: list[int] | range = range(n)
    else:
        flags = np.zeros(n, dtype=np.uint8)
        missing = []
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
    if flags is not None and not flags.any():
        flags = None
    if event_ids is None:
        return flags, None
    made: list[bytes | None] = [None] * n
    spans = os.urandom(8 * len(missing)).hex()  # the root span ids, one draw for the chunk
    for k, i in enumerate(missing):
        trace = md5(event_ids[i].encode(), usedforsecurity=False).hexdigest()
        made[i] = f"00-{trace}-{spans[16 * k : 16 * k + 16]}-00".encode()
    return flags, made


def picked_traceparents(
    event_ids: list[str], flags: np.ndarray | None
) -> list[bytes | None] | None:
    """The traceparents of the rows picked as their chunk was queued (``PICKED``) that came
    without one: the worker's root span of the trace (``trace_id_of`` the event id), flags 01
    (it is sampled: the ack will keep it). None where no such row (the common chunk)."""
    if flags is None:
        return None
    rows = np.flatnonzero((flags & (PICKED | UPSTREAM)) == PICKED)
    if not rows.size:
        return None
    made: list[bytes | None] = [None] * len(event_ids)
    spans = os.urandom(8 * rows.size).hex()
    for k, i in enumerate(rows.tolist()):
        trace = md5(event_ids[i].encode(), usedforsecurity=False).hexdigest()
        made[i] = f"00-{trace}-{spans[16 * k : 16 * k + 16]}-01".encode()
    return made


def with_traceparent(headers: Headers | None, tp: bytes | None) -> Headers | None:
    """``headers`` plus the worker's new traceparent, if the row got one."""
    if tp is None:
        return headers
    return [*headers, (TRACEPARENT, tp)] if headers else [(TRACEPARENT, tp)]


_ODD_HEX = frozenset(b"13579bdfBDF")
"""Last hex digit of the flags: odd means the sampled bit (bit 0) is set."""
_rand = random.Random().getrandbits


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


def undecoded_row(msg: Any, times: ChunkTimes) -> TraceRow:
    """A record refused at decode: its own time is unknown, so its log time stands in."""
    return TraceRow(_log_time_s(msg), times, None, None, has_traceparent(msg.headers()))


def refused_row(msg: Any, record: Any, times: ChunkTimes, spec: Any) -> TraceRow:
    """A decoded row refused before it was in a chunk (tracing on; dead letters only: rare);
    ``spec`` is the pipeline (its time and id fields)."""
    return TraceRow(
        getattr(record, spec.ts_field) / 1000.0,
        times,
        None,
        getattr(record, spec.id_field),
        has_traceparent(msg.headers()),
    )


def _log_time_s(msg: Any) -> float | None:
    """The record's time in the log (an undecoded event's own time is unknown)."""
    timestamp = getattr(msg, "timestamp", None)
    if timestamp is None:
        return None
    kind, ms = timestamp()
    return ms / 1000.0 if kind != 0 and ms > 0 else None
