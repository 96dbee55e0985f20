"""The loop every Confluent-framed format shares, a poll batch at a time.

Per value: the tombstone and size checks, the Confluent header (magic byte, schema id), the
writer schema by id (fetched once and kept; an unknown id or one of another schema type is a
``decode`` rejection; an outage is waited out in streaming.formats.registry), then the format's
own read, then the pipeline's pydantic validation exactly as for JSON (same stages, same
reasons). A format supplies only ``_prepare`` (what it keeps per writer schema) and ``_read``
(one payload to a dict), and may supply ``_model_reader``: a reader that builds the validated
record itself, tried first for the values of that writer schema; a value it is not certain of
then takes the way above, so it changes how fast a valid event is decoded, never what any
event becomes.

Where the C reader is built, a poll batch goes through the model readers in one call
(``read_batch``, streaming/formats/_avro_flat.c): the Python loop's bookkeeping per message cost
about as much as the read. The values it is not certain of (any that is not a known schema's
valid record) take the loop below, which says what each is.

Threads: used by the engine's feeding thread only.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from confluent_kafka.schema_registry import Schema
from pydantic import BaseModel, ValidationError

from streaming.engine.decode import explain_validation_error, too_large, with_the_rest
from streaming.engine.types import STAGE_DECODE, Rejection, SourceMessage
from streaming.formats.avro_compiled import C_READER
from streaming.formats.framing import HEADER_BYTES, FramingError, frame, schema_id_of
from streaming.formats.registry import SchemaSource


class FramedDecoder:
    """Confluent-framed values -> validated records; subclasses read one format's payloads."""

    schema_type = ""
    """The registry's type of this format's schemas (``AVRO``, ``JSON``, ``PROTOBUF``)."""
    format_name = ""
    """Its ``pipeline.format`` value, named in rejections."""

    def __init__(
        self, schema: type[BaseModel], max_event_bytes: int, schemas: SchemaSource
    ) -> None:
        self._validate = schema.__pydantic_validator__.validate_python
        self._max = max_event_bytes
        self._schemas = schemas
        self._writers: dict[int, Any] = {}
        """Schema id -> what ``_prepare`` made of it, or the Rejection for its values."""
        self._fast: dict[bytes, Callable[[bytes], BaseModel]] = {}
        """A framed value's header (magic byte and schema id) -> the format's reader that
        builds the validated record itself (``_model_reader``), tried before all else."""
        self._fast_ids: dict[int, Callable[[bytes], BaseModel]] = {}
        """The same readers by schema id: what the C loop (``read_batch``) looks up."""
        self._batch = C_READER.read_batch if C_READER is not None else None

    def close(self) -> None:
        """Close the registry client's connections."""
        self._schemas.close()

    def decode(
        self, messages: Sequence[SourceMessage]
    ) -> tuple[list[int], list[BaseModel], list[tuple[int, Rejection]]]:
        """Return (indexes of valid messages, their records, (index, rejection) of the rest)."""
        if self._batch is None or not self._fast_ids:
            return self._each(messages, range(len(messages)))
        read = self._batch(messages, self._max, self._fast_ids)
        return with_the_rest(read, messages, self._each)

    def _each(
        self, messages: Sequence[SourceMessage], indexes: Sequence[int]
    ) -> tuple[list[int], list[BaseModel], list[tuple[int, Rejection]]]:
        """The messages at ``indexes`` one at a time, in Python: what ``decode`` returns."""
        validate, limit, writers, read = self._validate, self._max, self._writers, self._read
        fast = self._fast
        good_idx: list[int] = []
        records: list[BaseModel] = []
        bad: list[tuple[int, Rejection]] = []
        for i in indexes:
            msg = messages[i]
            value = msg.value()
            if value is not None and len(value) <= limit:
                build = fast.get(value[:HEADER_BYTES])
                if build is not None:
                    try:
                        records.append(build(value))
                    except Exception:  # noqa: BLE001, S110 - not certain: the way below says
                        pass
                    else:
                        good_idx.append(i)
                        continue
            if value is None:
                bad.append((i, Rejection(STAGE_DECODE, "no value (tombstone)", "empty")))
                continue
            if len(value) > limit:
                bad.append((i, too_large(len(value), limit)))
                continue
            try:
                schema_id = schema_id_of(value)
            except FramingError as exc:
                bad.append((i, Rejection(STAGE_DECODE, str(exc), exc.reason_class)))
                continue
            writer = writers.get(schema_id)
            if writer is None:
                writer = self._writer(schema_id)
            if isinstance(writer, Rejection):
                bad.append((i, writer))
                continue
            data = read(writer, schema_id, value)
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

    def _writer(self, schema_id: int) -> Any:
        """Fetch (blocking while the registry is down) and prepare a writer schema, once."""
        found = self._schemas.get(schema_id)
        if found is None:  # not cached: the registry may learn it later
            return Rejection(
                STAGE_DECODE,
                f"unknown schema id {schema_id}: the schema registry does not know it",
                "unknown_schema_id",
            )
        kind = found.schema_type or "AVRO"  # the registry leaves Avro's type out
        if kind != self.schema_type:
            out: Any = Rejection(
                STAGE_DECODE,
                f"schema id {schema_id} is {kind}, not {self.schema_type} "
                f"(pipeline.format: {self.format_name})",
                "wrong_schema_type",
            )
        else:
            out = self._prepare(schema_id, found)
            build = self._model_reader(out)
            if build is not None:
                self._fast[frame(schema_id, b"")] = build
                self._fast_ids[schema_id] = build
        self._writers[schema_id] = out
        return out

    def _model_reader(self, prepared: Any) -> Callable[[bytes], BaseModel] | None:
        """A reader that takes a framed value of that writer schema straight to the validated
        record, raising on any value it is not certain of (which then takes the way of
        ``_read`` and pydantic's validation); None when the format has none for it."""
        return None

    def _prepare(self, schema_id: int, found: Schema) -> Any:
        """What this format keeps per writer schema, or a Rejection for all its values."""
        raise NotImplementedError

    def _read(self, writer: Any, schema_id: int, value: bytes) -> Any:
        """One framed value (its payload starts at framing.HEADER_BYTES) -> a dict to
        validate, or a Rejection."""
        raise NotImplementedError
