"""Outputs that always fit the topic they go to.

- Predictions carry the input's headers within a budget (``worker.output_header_bytes``),
  ``traceparent`` first; what does not fit is left off and ``streaming.headers_dropped`` says
  how many were.
- A dead letter whose original value, key and headers do not fit the dead-letter topic keeps
  our headers (stage, reason, source topic, partition and offset: where the full original
  is), as many original headers as fit (``traceparent`` first), and a prefix of the key and
  of the value; ``dead_letter.truncated=true``, ``dead_letter.original_size`` and
  ``dead_letter.original_sha256`` (of the whole original value) say so.

Pure functions: the callers own the records.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from streaming.engine.types import Headers

HEADERS_DROPPED = "streaming.headers_dropped"
DLQ_TRUNCATED = "dead_letter.truncated"
DLQ_ORIGINAL_SIZE = "dead_letter.original_size"
DLQ_ORIGINAL_SHA256 = "dead_letter.original_sha256"
DLQ_KEY_TRUNCATED = "dead_letter.key_truncated"
DLQ_HEADERS_DROPPED = "dead_letter.headers_dropped"

_HEADER_OVERHEAD = 16
"""Per header: the varint lengths of name and value and the record's header count."""


def headers_size(headers: Headers | None) -> int:
    if not headers:
        return 0
    return sum(len(k) + len(v or b"") + _HEADER_OVERHEAD for k, v in headers)


def record_size(value: bytes | None, key: bytes | None, headers: Headers | None) -> int:
    return len(value or b"") + len(key or b"") + headers_size(headers)


def fit_headers(headers: Headers | None, budget: int) -> tuple[Headers | None, int]:
    """The headers that fit ``budget`` bytes (``traceparent`` first, then in order), and how
    many were left off. The same list comes back when all fit (the common case)."""
    if not headers or headers_size(headers) <= budget:
        return headers, 0
    ordered = sorted(headers, key=lambda h: h[0] != "traceparent")  # stable: order kept
    kept: Headers = []
    used = 0
    for name, value in ordered:
        size = len(name) + len(value or b"") + _HEADER_OVERHEAD
        if used + size <= budget:
            kept.append((name, value))
            used += size
    return kept, len(headers) - len(kept)


def with_dropped_marker(headers: Headers | None, dropped: int) -> Headers | None:
    if not dropped:
        return headers
    return [*(headers or []), (HEADERS_DROPPED, str(dropped).encode())]


def fit_dead_letter(
    value: bytes | None,
    key: bytes | None,
    original_headers: Headers | None,
    ours: Headers,
    limit: int,
) -> tuple[bytes | None, bytes | None, Headers]:
    """(value, key, headers) of a dead letter within ``limit`` bytes; unchanged if it fits."""
    if record_size(value, key, original_headers) + headers_size(ours) <= limit:
        return value, key, [*(original_headers or []), *ours]
    marks: Headers = [
        (DLQ_TRUNCATED, b"true"),
        (DLQ_ORIGINAL_SIZE, str(len(value or b"")).encode()),
        (DLQ_ORIGINAL_SHA256, hashlib.sha256(value or b"").hexdigest().encode()),
    ]
    # 64: the markers added below; 0 room (a refused dead letter) keeps our headers alone
    room = max(0, limit - headers_size(ours) - headers_size(marks) - 64)
    # Original headers get at most a quarter of the room, the key an eighth, the value the rest.
    kept, dropped = fit_headers(original_headers, room // 4)
    if dropped:
        marks.append((DLQ_HEADERS_DROPPED, str(dropped).encode()))
    room = max(0, room - headers_size(kept))
    if key is not None and len(key) > room // 8:
        key = key[: room // 8]
        marks.append((DLQ_KEY_TRUNCATED, b"true"))
    room = max(0, room - len(key or b""))
    if value is not None:
        value = value[:room]
    return value, key, [*(kept or []), *ours, *marks]


class OutputFit:
    """Fits one output topic's records: the input's headers to the header budget, and rows
    whose record would still exceed the topic's limit (a huge key) picked out before they are
    produced. Called on the inference threads; it only reads its settings."""

    def __init__(self, limit: int, header_budget: int, max_payload: int) -> None:
        self.limit = limit
        self.header_budget = min(header_budget, limit // 4)
        self._key_room = limit - self.header_budget - max_payload - 64
        """A key up to this long always fits with any payload and fitted headers."""

    def needed(self, keys: list[bytes | None], headers: list[Headers | None]) -> bool:
        """Cheap test: does any row of the chunk need fitting? Headers within the budget and
        keys that always fit (the common case, a traceparent and a card id) need none."""
        if any(headers):
            budget = self.header_budget
            if any(h and headers_size(h) > budget for h in headers):
                return True
        room = self._key_room
        return any(k is not None and len(k) > room for k in keys)

    def fit(
        self,
        rows: range | list[int],
        payloads: list[bytes],
        keys: list[bytes | None],
        headers: list[Headers | None],
    ) -> Fitted:
        """The chunk's rows fitted: unchanged (the common case) unless ``needed``."""
        if not self.needed(keys, headers):
            return Fitted(rows, {}, [], 0)
        fitting: list[int] = []
        changed: dict[int, Headers | None] = {}
        too_large: list[int] = []
        dropped_total = 0
        budget, limit = self.header_budget, self.limit
        for i in rows:
            h, dropped = fit_headers(headers[i], budget)
            if dropped:
                h = with_dropped_marker(h, dropped)
                changed[i] = h
                dropped_total += dropped
            if record_size(payloads[i], keys[i], h) > limit:
                too_large.append(i)
            else:
                fitting.append(i)
        return Fitted(fitting, changed, too_large, dropped_total)


@dataclass(frozen=True, slots=True)
class Fitted:
    """What a chunk's output can send: ``rows`` with ``headers`` where they changed; rows
    still too large for the topic; and how many input headers were left off in all."""

    rows: range | list[int]
    changed: dict[int, Headers | None]
    too_large: list[int]
    dropped: int

    def headers(self, headers: list[Headers | None], i: int) -> Headers | None:
        return self.changed.get(i, headers[i]) if self.changed else headers[i]
