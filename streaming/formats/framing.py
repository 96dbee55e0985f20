"""The Confluent wire format: magic byte 0, a 4-byte big-endian schema id, then the payload.

Pure functions, no registry: the decoders and the producers share them.
"""

from __future__ import annotations

import struct

MAGIC = 0
HEADER_BYTES = 5
_HEADER = struct.Struct(">bI")


class FramingError(ValueError):
    """The value is not Confluent-framed; ``reason_class`` is the bounded metrics label."""

    def __init__(self, reason: str, reason_class: str) -> None:
        super().__init__(reason)
        self.reason_class = reason_class


def frame(schema_id: int, payload: bytes) -> bytes:
    """The framed value: magic byte, schema id, payload."""
    return _HEADER.pack(MAGIC, schema_id) + payload


def unframe(value: bytes) -> tuple[int, memoryview]:
    """(schema id, payload) of a framed value, or FramingError saying what is wrong."""
    return schema_id_of(value), memoryview(value)[HEADER_BYTES:]


def schema_id_of(value: bytes) -> int:
    """The schema id of a framed value (its payload starts at HEADER_BYTES), or FramingError
    saying what is wrong; the decoders' per-event call, so it copies nothing."""
    if len(value) < HEADER_BYTES:
        raise FramingError(
            f"truncated: {len(value)} bytes, shorter than the 5-byte Confluent header",
            "truncated",
        )
    if value[0] != MAGIC:
        raise FramingError(
            f"wrong magic byte {value[0]:#04x} (a Confluent-framed value starts with 0x00); "
            "is the producer writing this pipeline's format?",
            "wrong_magic",
        )
    return _HEADER.unpack_from(value)[1]
