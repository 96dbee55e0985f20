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

from collections.abc import Sequence
from typing import Any

from confluent_kafka.schema_registry.json_schema import JSONDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext, SerializationError
from pydantic import BaseModel, ValidationError

from streaming.engine.decode import explain_validation_error, too_large
from streaming.engine.types import STAGE_DECODE, Rejection, SourceMessage
from streaming.formats.framing import FramingError, unframe
from streaming.formats.registry import SchemaSource

_MAX_REASON = 480


class JsonSchemaDecoder:
    """Decodes Confluent-framed JSON Schema values a poll batch at a time."""

    def __init__(
        self, schema: type[BaseModel], max_event_bytes: int, schemas: SchemaSource, topic: str
    ) -> None:
        self._validate = schema.__pydantic_validator__.validate_python
        self._max = max_event_bytes
        self._schemas = schemas
        self._ctx = SerializationContext(topic, MessageField.VALUE)
        self._readers: dict[int, JSONDeserializer | Rejection] = {}

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
            reader = self._readers.get(schema_id) or self._reader(schema_id)
            if isinstance(reader, Rejection):
                bad.append((i, reader))
                continue
            data = self._read(reader, schema_id, value)
            if isinstance(data, Rejection):
                bad.append((i, data))
                continue
            try:
                records.append(self._validate(data))
            except ValidationError as exc:
                bad.append((i, explain_validation_error(exc)))
                continue
            good_idx.append(i)
        return good_idx, records, bad

    def _reader(self, schema_id: int) -> JSONDeserializer | Rejection:
        found = self._schemas.get(schema_id)
        if found is None:  # not cached: the registry may learn it later
            return Rejection(
                STAGE_DECODE,
                f"unknown schema id {schema_id}: the schema registry does not know it",
                "unknown_schema_id",
            )
        out: JSONDeserializer | Rejection
        if found.schema_type != "JSON":
            out = Rejection(
                STAGE_DECODE,
                f"schema id {schema_id} is {found.schema_type}, not JSON "
                "(pipeline.format: json-schema)",
                "wrong_schema_type",
            )
        else:
            try:
                out = JSONDeserializer(found.schema_str)
            except Exception as exc:  # noqa: BLE001 - the library's parse errors vary
                out = Rejection(
                    STAGE_DECODE,
                    _clip(f"schema id {schema_id} is not a valid JSON Schema: {exc}"),
                    "bad_writer_schema",
                )
        self._readers[schema_id] = out
        return out

    def _read(self, reader: JSONDeserializer, schema_id: int, value: bytes) -> Any:
        try:
            return reader(value, self._ctx)
        except (SerializationError, ValueError) as exc:
            return Rejection(
                STAGE_DECODE,
                _clip(f"payload does not match writer schema id {schema_id}: {exc}"),
                "schema_mismatch",
            )


def _clip(text: str) -> str:
    return text if len(text) <= _MAX_REASON else text[: _MAX_REASON - 1] + "…"
