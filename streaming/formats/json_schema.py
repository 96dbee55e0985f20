"""Confluent-framed JSON Schema -> validated records, beside the JSON and Avro decoders.

The writer schema comes by id from streaming.formats.registry (cached; an outage is waited
out, never dead-lettered). Each payload is then read by confluent-kafka's own
``JSONDeserializer``, one per writer schema, which checks it against that JSON Schema; the
record is validated by the pipeline's pydantic schema as a JSON record is (same stages, same
reasons). The deserializer gets no registry client: the schema it checks against is the one
fetched here, so a registry outage can never surface inside it as a bad payload.

Threads: used by the engine's feeding thread only.
"""

from __future__ import annotations

from typing import Any

from confluent_kafka.schema_registry import Schema
from confluent_kafka.schema_registry.json_schema import JSONDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext, SerializationError
from pydantic import BaseModel

from streaming.engine.decode import clip_reason
from streaming.engine.types import STAGE_DECODE, Rejection
from streaming.formats.framed import FramedDecoder
from streaming.formats.registry import SchemaSource


class JsonSchemaDecoder(FramedDecoder):
    """Decodes Confluent-framed JSON Schema values a poll batch at a time."""

    schema_type = "JSON"
    format_name = "json-schema"

    def __init__(
        self, schema: type[BaseModel], max_event_bytes: int, schemas: SchemaSource, topic: str
    ) -> None:
        super().__init__(schema, max_event_bytes, schemas)
        self._ctx = SerializationContext(topic, MessageField.VALUE)

    def _prepare(self, schema_id: int, found: Schema) -> JSONDeserializer | Rejection:
        """One deserializer per writer schema (it checks payloads against that schema)."""
        try:
            return JSONDeserializer(found.schema_str)
        except Exception as exc:  # noqa: BLE001 - the library's parse errors vary
            return Rejection(
                STAGE_DECODE,
                clip_reason(f"schema id {schema_id} is not a valid JSON Schema: {exc}"),
                "bad_writer_schema",
            )

    def _read(self, writer: JSONDeserializer, schema_id: int, value: bytes) -> Any:
        try:
            return writer(value, self._ctx)
        except (SerializationError, ValueError) as exc:
            return Rejection(
                STAGE_DECODE,
                clip_reason(f"payload does not match writer schema id {schema_id}: {exc}"),
                "schema_mismatch",
            )
