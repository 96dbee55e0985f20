"""``streaming produce`` in a framed format: the generator's events as Confluent-framed Avro.

The generator speaks JSON (its invalid events are JSON-level faults). Here each valid event is
encoded with the pipeline's ``.avsc``, registered under ``<input topic>-value``
(TopicNameStrategy), and each invalid kind becomes the Avro-level fault closest to it, still
carrying the event id so that tests find its dead letter.
"""

from __future__ import annotations

import io
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import fastavro
from confluent_kafka.schema_registry import Schema

from streaming.config import PipelineConfig
from streaming.formats.framing import frame
from streaming.formats.registry import registry_client
from streaming.pipeline import PipelineSpec, SyntheticEvent

UNKNOWN_SCHEMA_ID = 0x7FFF_FFF0
"""An id no registry has handed out (they count up from 1)."""
_OVERSIZED_PAD = 70_000

AVRO_INVALID = {
    # generator's kind: (kind in Avro, expected dead-letter stage)
    "malformed_json": ("truncated", "decode"),
    "non_utf8": ("invalid_utf8", "decode"),
    "oversized": ("oversized", "decode"),
    "missing_field": ("unknown_schema_id", "decode"),
    "wrong_type": ("trailing_bytes", "decode"),
    "not_an_object": ("wrong_magic", "decode"),
    "out_of_range": ("truncated", "decode"),
}


class AvroFramer:
    """Encodes generated events with one registered writer schema."""

    def __init__(self, schema_id: int, schema: dict[str, Any], spec: PipelineSpec) -> None:
        self.schema_id = schema_id
        self._parsed = fastavro.parse_schema(schema)
        # Invalid events' JSON is broken on purpose: their faults are built from a valid
        # record of the same pipeline with the event's own id.
        template = spec.make_generator(0).batch(1, 1_760_000_000_000)[0]
        self._template = json.loads(template.value)
        self._id_field = spec.id_field

    @classmethod
    def register(cls, cfg: PipelineConfig, spec: PipelineSpec) -> AvroFramer:
        """Register the pipeline's ``.avsc`` under ``<input topic>-value``; the framer for it."""
        if spec.avro_schema is None:
            raise ValueError(
                f"pipeline {spec.name} ships no Avro schema (PipelineSpec.avro_schema): "
                "it cannot produce pipeline.format: avro"
            )
        assert cfg.schema_registry is not None
        text = Path(spec.avro_schema).read_text()
        try:
            with registry_client(cfg.schema_registry, cfg.kafka.secrets_dir) as client:
                subject = f"{cfg.topics.input}-value"
                schema_id = client.register_schema(subject, Schema(text, "AVRO"))
        except Exception as exc:  # noqa: BLE001 - transport or registry refusal: same message
            raise RuntimeError(
                f"cannot register the writer schema with schema registry "
                f"{cfg.schema_registry.url}: {exc}; is it running (streaming registry)?"
            ) from None
        return cls(schema_id, json.loads(text), spec)

    def payload(self, record: dict[str, Any]) -> bytes:
        """The Avro body of one record (no framing)."""
        out = io.BytesIO()
        fastavro.schemaless_writer(out, self._parsed, record)
        return out.getvalue()

    def convert(self, events: list[SyntheticEvent]) -> list[SyntheticEvent]:
        """The same events framed as Avro; invalid ones as the matching Avro-level fault."""
        return [self._one(ev) for ev in events]

    def _one(self, ev: SyntheticEvent) -> SyntheticEvent:
        if ev.invalid_kind is None:
            return replace(ev, value=frame(self.schema_id, self.payload(json.loads(ev.value))))
        kind, stage = AVRO_INVALID.get(ev.invalid_kind, ("wrong_magic", "decode"))
        return replace(ev, value=self._fault(kind, ev), invalid_kind=kind, expected_stage=stage)

    def _fault(self, kind: str, ev: SyntheticEvent) -> bytes:
        body = self.payload({**self._template, self._id_field: ev.event_id})
        if kind == "truncated":
            # the event id is the first field: its bytes stay in
            return frame(self.schema_id, body[: len(ev.event_id) + 8])
        if kind == "invalid_utf8":
            start = body.index(ev.event_id.encode()) + len(ev.event_id)
            return frame(self.schema_id, body[:start] + b"\x08\xff\xfe\xfd\xfc" + body[start:])
        if kind == "oversized":
            return frame(self.schema_id, body + b"\x00" * _OVERSIZED_PAD)
        if kind == "unknown_schema_id":
            return frame(UNKNOWN_SCHEMA_ID, body)
        if kind == "trailing_bytes":
            return frame(self.schema_id, body + b"\x02\x04\x06")
        return b"\x01" + frame(self.schema_id, body)[1:]  # wrong_magic
