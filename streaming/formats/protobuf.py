"""Confluent-framed Protobuf -> validated records, beside the JSON, Avro and JSON Schema ones.

The reader is the pipeline's own message (from its carried descriptor,
streaming.formats.proto_descriptor), parsed by confluent-kafka's ``ProtobufDeserializer``
(framing and message indexes included). As with Avro's reader schema, fields a newer writer
added are skipped as unknown and a dropped one reads as its proto3 default (0, "", false); the
pydantic schema then validates as for JSON, so a dropped required field is refused there. The
writer's id is still checked with the registry (an unknown id is a dead letter; an outage is
waited out), and must name a Protobuf schema.

Threads: used by the engine's feeding thread only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from confluent_kafka.schema_registry import Schema
from confluent_kafka.schema_registry.protobuf import ProtobufDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext, SerializationError
from pydantic import BaseModel

from streaming.engine.decode import clip_reason
from streaming.engine.types import STAGE_DECODE, Rejection
from streaming.formats.framed import FramedDecoder
from streaming.formats.proto_descriptor import message_class
from streaming.formats.registry import SchemaSource


class ProtobufDecoder(FramedDecoder):
    """Decodes Confluent-framed Protobuf values a poll batch at a time."""

    schema_type = "PROTOBUF"
    format_name = "protobuf"

    def __init__(
        self,
        schema: type[BaseModel],
        max_event_bytes: int,
        schemas: SchemaSource,
        descriptor: str | Path,
        message: str,
        topic: str,
    ) -> None:
        super().__init__(schema, max_event_bytes, schemas)
        cls = message_class(Path(descriptor).read_bytes(), message)
        self._fields = [f.name for f in cls.DESCRIPTOR.fields]
        self._deserialize = ProtobufDeserializer(cls, {"use.deprecated.format": False})
        self._ctx = SerializationContext(topic, MessageField.VALUE)

    def _prepare(self, schema_id: int, found: Schema) -> bool:
        """Nothing per writer: the reader is the pipeline's own message."""
        return True

    def _read(self, writer: bool, schema_id: int, value: bytes) -> Any:
        try:
            parsed = self._deserialize(value, self._ctx)
        except (SerializationError, ValueError, IndexError) as exc:
            reason = f"payload does not match writer schema id {schema_id}: {exc}"
            return Rejection(STAGE_DECODE, clip_reason(reason), "schema_mismatch")
        return {name: getattr(parsed, name) for name in self._fields}
