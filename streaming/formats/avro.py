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
from pathlib import Path
from typing import Any

import fastavro
from confluent_kafka.schema_registry import Schema
from fastavro.read import SchemaResolutionError
from pydantic import BaseModel

from streaming.engine.decode import clip_reason
from streaming.engine.types import STAGE_DECODE, Rejection
from streaming.formats.framed import FramedDecoder
from streaming.formats.registry import SchemaSource


def load_avsc(path: str | Path) -> dict[str, Any]:
    """A parsed ``.avsc`` (fastavro's form), failing with the file's name."""
    try:
        return fastavro.parse_schema(json.loads(Path(path).read_text()))
    except (OSError, ValueError, fastavro.schema.SchemaParseException) as exc:
        raise ValueError(f"{path}: not a valid Avro schema ({exc})") from exc


class AvroDecoder(FramedDecoder):
    """Decodes Confluent-framed Avro values a poll batch at a time."""

    schema_type = "AVRO"
    format_name = "avro"

    def __init__(
        self,
        schema: type[BaseModel],
        max_event_bytes: int,
        schemas: SchemaSource,
        reader_schema: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(schema, max_event_bytes, schemas)
        self._reader = reader_schema
        self._reader_json = _canonical(reader_schema) if reader_schema is not None else None

    def _prepare(
        self, schema_id: int, found: Schema
    ) -> tuple[dict[str, Any], dict[str, Any] | None] | Rejection:
        """(writer, reader or None when identical), parsed once per id."""
        try:
            writer = fastavro.parse_schema(json.loads(found.schema_str))
        except (ValueError, fastavro.schema.SchemaParseException) as exc:
            return Rejection(
                STAGE_DECODE,
                clip_reason(f"schema id {schema_id} is not a valid Avro schema: {exc}"),
                "bad_writer_schema",
            )
        same = self._reader is None or _canonical(writer) == self._reader_json
        return writer, None if same else self._reader

    def _read(
        self,
        writer: tuple[dict[str, Any], dict[str, Any] | None],
        schema_id: int,
        value: bytes,
        payload: memoryview,
    ) -> dict[str, Any] | Rejection:
        stream = io.BytesIO(payload)
        try:
            data = fastavro.schemaless_reader(stream, *writer)
        except EOFError:
            return Rejection(
                STAGE_DECODE,
                f"truncated: the payload ends inside the record (writer schema id {schema_id})",
                "truncated",
            )
        except SchemaResolutionError as exc:
            return Rejection(
                STAGE_DECODE,
                clip_reason(
                    f"writer schema id {schema_id} cannot be read as the pipeline's: {exc}"
                ),
                "incompatible_schema",
            )
        except Exception as exc:  # noqa: BLE001 - fastavro raises many kinds on garbage
            return Rejection(
                STAGE_DECODE,
                clip_reason(
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
