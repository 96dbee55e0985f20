"""Spans written straight into OTLP protobuf bytes, from the stage times.

Why by hand: the SDK's way (a ``ReadableSpan`` per span, then its OTLP encoder, which walks
each attribute in Python and hashes the resource, as JSON, per span) cost 160-290 us of CPU
per traced event here, and protobuf message objects built field by field, then copied into the
request, still ~70 us. Our spans have a fixed shape (ids, a name, two times, a few
attributes), so each is one bytes join: ~15 us an event. A request is the spans' bytes put
together under one resource and one scope; ``opentelemetry-proto`` decodes it in the tests
(streaming.dev.otlp_receiver), field for field.

Field numbers are those of opentelemetry/proto/trace/v1/trace.proto (Span, Link, Status),
common/v1/common.proto (KeyValue, AnyValue, InstrumentationScope), resource/v1 and the
collector's ExportTraceServiceRequest.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping
from typing import Any

INTERNAL = 1
"""Span kinds (Span.SpanKind)."""
PRODUCER = 4
CONSUMER = 5

_FLAGS = 0x101
"""W3C sampled, and 'whether the parent is remote' known (OTLP SpanFlags): not remote."""
_FLAGS_REMOTE_PARENT = 0x301
"""The same, with a remote parent (the upstream span of the event's own traceparent)."""
_STATUS_ERROR = 2

_pack_q = struct.Struct("<Q").pack
_pack_d = struct.Struct("<d").pack
_pack_i = struct.Struct("<I").pack


_SMALL = [bytes((i,)) for i in range(0x80)]
"""One-byte varints: most lengths and every tag here."""


def _varint(n: int) -> bytes:
    if 0 <= n < 0x80:
        return _SMALL[n]
    n &= 0xFFFF_FFFF_FFFF_FFFF  # int64 as protobuf writes it: negatives take ten bytes
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


_TAGS = [_varint(number << 3 | 2) for number in range(16)]
"""Length-delimited field tags by field number (all ours are below 16)."""


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited field: tag, length, bytes."""
    n = len(payload)
    return _TAGS[number] + (_SMALL[n] if n < 0x80 else _varint(n)) + payload


def _any(value: Any) -> bytes:
    """An AnyValue of a str, bool, int or float (anything else as its str)."""
    if isinstance(value, str):
        return _field(1, value.encode())
    if isinstance(value, bool):
        return b"\x10\x01" if value else b"\x10\x00"
    if isinstance(value, int):
        return b"\x18" + _varint(value)
    if isinstance(value, float):
        return b"\x21" + _pack_d(value)
    return _field(1, str(value).encode())


_KEYS: dict[str, bytes] = {}
"""KeyValue key fields, encoded once (attribute names are a fixed handful)."""


def attributes(number: int, attrs: Mapping[str, Any]) -> bytes:
    """``attrs`` as repeated KeyValue in field ``number`` of the enclosing message."""
    out = []
    keys = _KEYS
    for key, value in attrs.items():
        k = keys.get(key)
        if k is None:
            k = keys[key] = _field(1, key.encode())
        out.append(_field(number, k + _field(2, _any(value))))
    return b"".join(out)


_HEADS: dict[tuple[str, int], bytes] = {}
"""The name and kind fields per (name, kind): a handful of span names, encoded once."""


def span(
    name: str,
    trace_id: bytes,
    span_id: bytes,
    parent_id: bytes | None,
    start_s: float,
    end_s: float,
    kind: int = INTERNAL,
    attrs: Mapping[str, Any] | bytes | None = None,
    link: tuple[bytes, bytes] | None = None,
    error: str | None = None,
    remote_parent: bool = False,
) -> bytes:
    """One finished span (ids of 16 and 8 bytes, times in wall-clock seconds), as the bytes of
    a ScopeSpans ``spans`` entry; ``attrs`` may come encoded already (``attributes(9, ...)``);
    ``link`` is (trace id, span id)."""
    head = _HEADS.get((name, kind))
    if head is None:
        head = _HEADS[name, kind] = _field(5, name.encode()) + b"\x30" + _varint(kind)
    parts = [b"\x0a\x10", trace_id, b"\x12\x08", span_id]
    if parent_id is not None:
        parts += (b"\x22\x08", parent_id)
    parts += (
        head,
        b"\x39",
        _pack_q(round(start_s * 1e9)),
        b"\x41",
        _pack_q(round(end_s * 1e9)),
    )
    if attrs:
        parts.append(attrs if isinstance(attrs, bytes) else attributes(9, attrs))
    if link is not None:
        parts.append(_field(13, b"\x0a\x10" + link[0] + b"\x12\x08" + link[1] + b"\x35" + _FLAGS_B))
    if error is not None:
        parts.append(_field(15, _field(2, error.encode()) + b"\x18" + _varint(_STATUS_ERROR)))
    parts += (b"\x85\x01", _FLAGS_REMOTE_B if remote_parent else _FLAGS_B)
    return _field(2, b"".join(parts))


_FLAGS_B = _pack_i(_FLAGS)
_FLAGS_REMOTE_B = _pack_i(_FLAGS_REMOTE_PARENT)


def resource(attrs: Mapping[str, Any]) -> bytes:
    """A ResourceSpans' ``resource`` field, once, at start."""
    return _field(1, attributes(1, attrs))


def scope(name: str) -> bytes:
    """A ScopeSpans' ``scope`` field (an InstrumentationScope named ``name``)."""
    return _field(1, _field(1, name.encode()))


def request(resource: bytes, scope: bytes, spans: Iterable[bytes]) -> bytes:
    """An ExportTraceServiceRequest carrying ``spans`` (from ``span``) under one resource and
    one scope, serialized."""
    return _field(1, resource + _field(2, scope + b"".join(spans)))
