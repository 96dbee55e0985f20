"""Pick the engine's decoder once, at start, from ``pipeline.format``.

json keeps the JSON decoder (streaming.engine.decode) and imports nothing of the registry;
a framed format builds its registry client, checks the registry answers (exit 2 with the fix
if not), and imports its decoder only then.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Protocol

from pydantic import BaseModel

from streaming.config import PipelineConfig
from streaming.engine.decode import Decoder
from streaming.engine.types import Rejection, SourceMessage
from streaming.errors import StartupError
from streaming.pipeline import PipelineSpec

log = logging.getLogger("streaming.worker")


class BatchDecoder(Protocol):
    """Bytes -> records, a poll batch at a time (the JSON Decoder's contract)."""

    def decode(
        self, messages: Sequence[SourceMessage]
    ) -> tuple[list[int], list[BaseModel], list[tuple[int, Rejection]]]: ...


def make_decoder(
    config: PipelineConfig,
    pipeline: PipelineSpec,
    should_stop: Callable[[], bool] | None = None,
) -> BatchDecoder:
    """The decoder of ``config.pipeline.format`` (StartupError when it cannot work)."""
    fmt = config.pipeline.format
    limit = config.pipeline.max_event_bytes
    if fmt == "json":
        decoder = Decoder(pipeline.schema, limit)
        log.info(
            "JSON events read by %s",
            "msgspec (what it refuses: pydantic)"
            if decoder.fast
            else "pydantic (the schema has more than plain field checks, or msgspec's C "
            "loop is not built)",
        )
        return decoder
    from streaming.formats.registry import SchemaSource, check_reachable, registry_client

    registry = config.schema_registry
    assert registry is not None, "the config validator requires schema_registry"
    client = registry_client(registry, config.kafka.secrets_dir)
    check_reachable(client, registry.url)
    schemas = SchemaSource(client, registry.url, should_stop)
    if fmt == "avro":
        from streaming.formats.avro import AvroDecoder, load_avsc

        reader = None
        if pipeline.avro_schema is not None:
            try:
                reader = load_avsc(pipeline.avro_schema)
            except ValueError as exc:
                raise StartupError(f"pipeline {pipeline.name}: {exc}") from None
        return AvroDecoder(pipeline.schema, limit, schemas, reader)
    if fmt == "json-schema":
        from streaming.formats.json_schema import JsonSchemaDecoder

        return JsonSchemaDecoder(pipeline.schema, limit, schemas, config.topics.input)
    from streaming.formats.protobuf import ProtobufDecoder

    if pipeline.proto_descriptor is None or pipeline.proto_message is None:
        raise StartupError(
            f"pipeline.format: protobuf, but pipeline {pipeline.name} carries no Protobuf "
            "descriptor (PipelineSpec.proto_descriptor and proto_message); use another format"
        )
    return ProtobufDecoder(
        pipeline.schema,
        limit,
        schemas,
        pipeline.proto_descriptor,
        pipeline.proto_message,
        config.topics.input,
    )
