"""Confluent-framed Avro -> validated records, beside the JSON decoder (same contract).

The writer schema is fetched by the id in each value (streaming.formats.registry) and parsed
once per id; fastavro's schemaless reader decodes the payload, resolved against the pipeline's
own ``.avsc`` when it ships one (Avro schema resolution: fields the writer added are skipped,
fields it dropped take the reader's default). The record is then validated by the pipeline's
pydantic schema exactly as a JSON record is: same stages, same reasons.

A writer schema that is the reader's (or any, when the pipeline ships no ``.avsc``) and is a
flat record gets readers compiled for it (streaming.formats.avro_compiled). When the
pipeline's model has plain constraints only and the writer's fields are the model's, a model
reader reads, checks and builds each record without fastavro or pydantic's validation (the
fraud event's decode measured 3.8 us against 5.3 for the next way); otherwise, and for every
value it is not certain of, a compiled reader gives fastavro's record about 1.7 times as
fast, then pydantic validates it; values that one is not certain of are read by fastavro.
Each way answers only what the next would, so every value ends as the same record or the
same dead letter.

Threads: used by the engine's feeding thread only.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any, NamedTuple

import fastavro
from confluent_kafka.schema_registry import Schema
from fastavro.read import SchemaResolutionError
from pydantic import BaseModel

from streaming.engine.decode import clip_reason
from streaming.engine.types import STAGE_DECODE, Rejection
from streaming.formats.avro_compiled import (
    CompiledReader,
    ModelReader,
    compile_model_reader,
    compile_reader,
)
from streaming.formats.framed import FramedDecoder
from streaming.formats.framing import HEADER_BYTES
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
        compiled: bool = True,
        build: bool = True,
    ) -> None:
        """``compiled=False`` reads every value with fastavro alone, ``build=False`` validates
        every record with pydantic (both for the benchmark and the tests that hold the
        compiled readers to fastavro's and pydantic's answers)."""
        super().__init__(schema, max_event_bytes, schemas)
        self._schema = schema
        self._compiled = compiled
        self._build = build
        self._reader = reader_schema
        self._reader_json = _canonical(reader_schema) if reader_schema is not None else None

    def _prepare(self, schema_id: int, found: Schema) -> _Writer | Rejection:
        """The writer schema parsed once per id, the reader only when it differs, and a
        compiled reader when fastavro would read the writer's records as they are."""
        try:
            writer = fastavro.parse_schema(json.loads(found.schema_str))
        except (ValueError, fastavro.schema.SchemaParseException) as exc:
            return Rejection(
                STAGE_DECODE,
                clip_reason(f"schema id {schema_id} is not a valid Avro schema: {exc}"),
                "bad_writer_schema",
            )
        if self._reader is None or _canonical(writer) == self._reader_json:
            if not self._compiled:
                return _Writer(writer, None, None, None)
            built = compile_model_reader(writer, self._schema) if self._build else None
            return _Writer(writer, None, compile_reader(writer), built)
        return _Writer(writer, self._reader, None, None)  # resolution: fastavro's to do

    def _model_reader(self, prepared: Any) -> ModelReader | None:
        return prepared.validated if isinstance(prepared, _Writer) else None

    def _read(self, writer: _Writer, schema_id: int, value: bytes) -> dict[str, Any] | Rejection:
        compiled = writer.compiled
        if compiled is not None:
            try:
                return compiled(value)
            except Exception:  # noqa: BLE001, S110 - not certain: fastavro reads it and says why
                pass
        stream = io.BytesIO(memoryview(value)[HEADER_BYTES:])
        try:
            data = fastavro.schemaless_reader(stream, writer.writer, writer.reader)
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
        left = len(value) - HEADER_BYTES - stream.tell()
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


class _Writer(NamedTuple):
    """What the decoder keeps per writer schema id."""

    writer: dict[str, Any]
    reader: dict[str, Any] | None
    """The pipeline's schema when it differs from the writer's (Avro resolution), else None."""
    compiled: CompiledReader | None
    """The writer's flat records read without fastavro (streaming.formats.avro_compiled)."""
    validated: ModelReader | None
    """Its records read, checked and built as the pipeline's model without pydantic's
    validation, when the model's constraints are plain (streaming.formats.model_checks)."""


def _canonical(schema: dict[str, Any]) -> str:
    return json.dumps(schema, sort_keys=True)
