"""Confluent-framed Avro -> validated records, beside the JSON decoder (same contract).

The writer schema is fetched by the id in each value (streaming.formats.registry) and parsed
once per id; fastavro's schemaless reader decodes the payload, resolved against the pipeline's
own ``.avsc`` when it ships one (Avro schema resolution: fields the writer added are skipped,
fields it dropped take the reader's default). The record is then validated by the pipeline's
pydantic schema exactly as a JSON record is: same stages, same reasons.

Threads: used by the engine's feeding thread only.
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import fastavro
from fastavro.read import SchemaResolutionError
from pydantic import BaseModel, ValidationError

from streaming.engine.decode import explain_validation_error, too_large
from streaming.engine.types import STAGE_DECODE, Rejection, SourceMessage
from streaming.formats.framing import FramingError, unframe
from streaming.formats.registry import SchemaSource

_MAX_REASON = 480


def load_avsc(path: str | Path) -> dict[str, Any]:
    """A parsed ``.avsc`` (fastavro's form), failing with the file's name."""
    try:
        return fastavro.parse_schema(json.loads(Path(path).read_text()))
    except (OSError, ValueError, fastavro.schema.SchemaParseException) as exc:
        raise ValueError(f"{path}: not a valid Avro schema ({exc})") from exc


class AvroDecoder:
    """Decodes Confluent-framed Avro values a poll batch at a time."""

    def __init__(
        self,
        schema: type[BaseModel],
        max_event_bytes: int,
        schemas: SchemaSource,
        reader_schema: dict[str, Any] | None = None,
    ) -> None:
        self._validate = schema.__pydantic_validator__.validate_python
        self._max = max_event_bytes
        self._schemas = schemas
        self._reader = reader_schema
        self._reader_json = _canonical(reader_schema) if reader_schema is not None else None
        self._writers: dict[int, tuple[dict[str, Any], dict[str, Any] | None] | Rejection] = {}
        """Schema id -> (writer, reader or None when identical), or why it cannot be used."""

    def close(self) -> None:
        """Close the registry client's connections."""
        self._schemas.close()

    def decode(
        self, messages: Sequence[SourceMessage]
    ) -> tuple[list[int], list[BaseModel], list[tuple[int, Rejection]]]:
        """Return (indexes of valid messages, their records, (index, rejection) of the rest)."""
        validate, limit = self._validate, self._max
        good_idx: list[int] = []
        records: list[BaseModel] = []
        bad: list[tuple[int, Rejection]] = []
        for i, msg in enumerate(messages):
            value = msg.value()
            if value is None:
                bad.append((i, Rejection(STAGE_DECODE, "no value (tombstone)", "empty")))
                continue
            if len(value) > limit:
                bad.append((i, too_large(len(value), limit)))
                continue
            try:
                schema_id, payload = unframe(value)
            except FramingError as exc:
                bad.append((i, Rejection(STAGE_DECODE, str(exc), exc.reason_class)))
                continue
            schemas = self._writers.get(schema_id) or self._writer(schema_id)
            if isinstance(schemas, Rejection):
                bad.append((i, schemas))
                continue
            data = self._read(schema_id, payload, *schemas)
            if isinstance(data, Rejection):
                bad.append((i, data))
                continue
            try:
                records.append(validate(data))
            except ValidationError as exc:
                bad.append((i, explain_validation_error(exc)))
                continue
            good_idx.append(i)
        return good_idx, records, bad

    def _writer(self, schema_id: int) -> tuple[dict[str, Any], dict[str, Any] | None] | Rejection:
        """Fetch (blocking while the registry is down) and parse a writer schema, once."""
        found = self._schemas.get(schema_id)
        if found is None:  # not cached: the registry may learn it later
            return Rejection(
                STAGE_DECODE,
                f"unknown schema id {schema_id}: the schema registry does not know it",
                "unknown_schema_id",
            )
        if found.schema_type not in (None, "AVRO"):
            out: Any = Rejection(
                STAGE_DECODE,
                f"schema id {schema_id} is {found.schema_type}, not AVRO (pipeline.format: avro)",
                "wrong_schema_type",
            )
        else:
            try:
                writer = fastavro.parse_schema(json.loads(found.schema_str))
            except (ValueError, fastavro.schema.SchemaParseException) as exc:
                out = Rejection(
                    STAGE_DECODE,
                    _clip(f"schema id {schema_id} is not a valid Avro schema: {exc}"),
                    "bad_writer_schema",
                )
            else:
                same = self._reader is None or _canonical(writer) == self._reader_json
                out = (writer, None if same else self._reader)
        self._writers[schema_id] = out
        return out

    @staticmethod
    def _read(
        schema_id: int,
        payload: memoryview,
        writer: dict[str, Any],
        reader: dict[str, Any] | None,
    ) -> dict[str, Any] | Rejection:
        stream = io.BytesIO(payload)
        try:
            data = fastavro.schemaless_reader(stream, writer, reader)
        except EOFError:
            return Rejection(
                STAGE_DECODE,
                f"truncated: the payload ends inside the record (writer schema id {schema_id})",
                "truncated",
            )
        except SchemaResolutionError as exc:
            return Rejection(
                STAGE_DECODE,
                _clip(f"writer schema id {schema_id} cannot be read as the pipeline's: {exc}"),
                "incompatible_schema",
            )
        except Exception as exc:  # noqa: BLE001 - fastavro raises many kinds on garbage
            return Rejection(
                STAGE_DECODE,
                _clip(
                    f"payload does not match writer schema id {schema_id}: "
                    f"{type(exc).__name__}: {exc}"
                ),
                "schema_mismatch",
            )
        left = len(payload) - stream.tell()
        if left:
            return Rejection(
                STAGE_DECODE,
                f"payload does not match writer schema id {schema_id}: {left} bytes left "
                "after the record",
                "schema_mismatch",
            )
        if not isinstance(data, dict):
            return Rejection(
                STAGE_DECODE,
                f"writer schema id {schema_id} is not a record schema",
                "schema_mismatch",
            )
        return data


def _canonical(schema: dict[str, Any]) -> str:
    return json.dumps(schema, sort_keys=True)


def _clip(text: str) -> str:
    return text if len(text) <= _MAX_REASON else text[: _MAX_REASON - 1] + "…"
