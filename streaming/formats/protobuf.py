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

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from confluent_kafka.schema_registry.protobuf import ProtobufDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext, SerializationError
from pydantic import BaseModel, ValidationError

from streaming.engine.decode import explain_validation_error, too_large
from streaming.engine.types import STAGE_DECODE, Rejection, SourceMessage
from streaming.formats.framing import FramingError, unframe
from streaming.formats.proto_descriptor import message_class
from streaming.formats.registry import SchemaSource

_MAX_REASON = 480


class ProtobufDecoder:
    """Decodes Confluent-framed Protobuf values a poll batch at a time."""

    def __init__(
        self,
        schema: type[BaseModel],
        max_event_bytes: int,
        schemas: SchemaSource,
        descriptor: str | Path,
        message: str,
        topic: str,
    ) -> None:
        self._validate = schema.__pydantic_validator__.validate_python
        self._max = max_event_bytes
        self._schemas = schemas
        cls = message_class(Path(descriptor).read_bytes(), message)
        self._fields = [f.name for f in cls.DESCRIPTOR.fields]
        self._deserialize = ProtobufDeserializer(cls, {"use.deprecated.format": False})
        self._ctx = SerializationContext(topic, MessageField.VALUE)
        self._ids: dict[int, Rejection | None] = {}

    def close(self) -> None:
        """Close the registry client's connections."""
        self._schemas.close()

    def decode(
        self, messages: Sequence[SourceMessage]
    ) -> tuple[list[int], list[BaseModel], list[tuple[int, Rejection]]]:
        """Return (indexes of valid messages, their records, (index, rejection) of the rest)."""
        good_idx: list[int] = []
        records: list[BaseModel] = []
        bad: list[tuple[int, Rejection]] = []
        fields = self._fields
        for i, msg in enumerate(messages):
            value = msg.value()
            if value is None:
                bad.append((i, Rejection(STAGE_DECODE, "no value (tombstone)", "empty")))
                continue
            if len(value) > self._max:
                bad.append((i, too_large(len(value), self._max)))
                continue
            try:
                schema_id, _ = unframe(value)
            except FramingError as exc:
                bad.append((i, Rejection(STAGE_DECODE, str(exc), exc.reason_class)))
                continue
            refused = self._ids[schema_id] if schema_id in self._ids else self._check(schema_id)
            if refused is not None:
                bad.append((i, refused))
                continue
            try:
                parsed = self._deserialize(value, self._ctx)
            except (SerializationError, ValueError, IndexError) as exc:
                reason = f"payload does not match writer schema id {schema_id}: {exc}"
                bad.append((i, Rejection(STAGE_DECODE, _clip(reason), "schema_mismatch")))
                continue
            data: dict[str, Any] = {name: getattr(parsed, name) for name in fields}
            try:
                records.append(self._validate(data))
            except ValidationError as exc:
                bad.append((i, explain_validation_error(exc)))
                continue
            good_idx.append(i)
        return good_idx, records, bad

    def _check(self, schema_id: int) -> Rejection | None:
        found = self._schemas.get(schema_id)
        if found is None:  # not cached: the registry may learn it later
            return Rejection(
                STAGE_DECODE,
                f"unknown schema id {schema_id}: the schema registry does not know it",
                "unknown_schema_id",
            )
        out = None
        if found.schema_type != "PROTOBUF":
            out = Rejection(
                STAGE_DECODE,
                f"schema id {schema_id} is {found.schema_type or 'AVRO'}, not PROTOBUF "
                "(pipeline.format: protobuf)",
                "wrong_schema_type",
            )
        self._ids[schema_id] = out
        return out


def _clip(text: str) -> str:
    return text if len(text) <= _MAX_REASON else text[: _MAX_REASON - 1] + "…"
