"""Avro in and out end to end: the embedded broker, the dev registry (``streaming registry`` as a
child process, stopped and started mid-stream) and the worker as ``streaming run``.

Counted by event id: every valid event of both writer schemas scored once, every bad framing
dead-lettered with stage decode, its reason and its original bytes, none for a valid event
while the registry was down.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

import fastavro
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext

from pipelines.fraud import PIPELINE
from streaming.dev.produce import produce_events
from streaming.formats.framing import frame
from streaming.kafka import settings as kafka
from streaming.kafka.settings import reader_settings
from streaming.kafka.topics import create_topics
from tests.kafka_helpers import ROOT, Record, start_worker, write_config
from tests.registry_helpers import RegistryProcess, free_port, registry_url

pytestmark = pytest.mark.integration

AVSC = json.loads(Path(PIPELINE.avro_schema or "").read_text())
V2 = {**AVSC, "fields": [*AVSC["fields"], {"name": "device_id", "type": "string", "default": ""}]}
REASON_SAYS = {
    "truncated": "truncated",
    "invalid_utf8": "does not match writer schema",
    "oversized": "exceeds pipeline.max_event_bytes",
    "unknown_schema_id": "unknown schema id",
    "trailing_bytes": "bytes left after the record",
    "wrong_magic": "wrong magic byte",
}


def _read_all(cfg, topic: str, expected: int, timeout: float = 60.0) -> list[Record]:  # type: ignore[no-untyped-def]
    """A topic from the start, its partitions assigned (no group join to wait for), until
    ``expected`` records came and nothing more for half a second (duplicates are seen)."""
    consumer = Consumer(reader_settings(cfg.kafka, f"r-{uuid.uuid4().hex[:8]}"))
    consumer.assign(
        [TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(cfg.topics.partitions)]
    )
    out: list[Record] = []
    deadline = last_new = time.monotonic()
    deadline += timeout
    try:
        while time.monotonic() < deadline:
            batch = [m for m in consumer.consume(5000, timeout=0.2) if not m.error()]
            out += [
                Record(m.key(), m.value() or b"", dict(m.headers() or []), m.partition() or 0, 0)
                for m in batch
            ]
            if batch:
                last_new = time.monotonic()
            elif len(out) >= expected and time.monotonic() - last_new >= 0.5:
                break
    finally:
        consumer.close()
    return out


def _produce_v2(cfg, schema_id: int, n: int, seed: int) -> list[str]:  # type: ignore[no-untyped-def]
    """Events written by a newer producer (one more field, with a default), framed by hand."""
    parsed = fastavro.parse_schema(V2)
    producer = Producer({**kafka.producer_settings(cfg.kafka, "v2-writer"), "linger.ms": 50})
    ids = []
    for ev in PIPELINE.make_generator(seed).batch(n, 1_770_000_000_000):
        out = io.BytesIO()
        fastavro.schemaless_writer(out, parsed, {**json.loads(ev.value), "device_id": "tab-7"})
        producer.produce(cfg.topics.input, frame(schema_id, out.getvalue()), ev.key)
        ids.append(ev.event_id)
    assert producer.flush(30) == 0
    return ids


def test_avro_bad_framings_evolution_and_a_registry_restart_mid_stream(
    broker, models_built, tmp_path
):
    registry = RegistryProcess(free_port(), tmp_path / "registry.json", tmp_path / "sr.log")
    registry.start()
    try:
        path, cfg = write_config(
            tmp_path,
            broker.bootstrap,
            **{
                "pipeline.format": "avro",
                "outputs.format": "avro",
                "schema_registry": {"url": registry.url},
            },
        )
        create_topics(cfg)
        first = produce_events(cfg, 2_000, invalid_ratio=0.05, seed=21, keep=True)
        # the newer writer's schema is registered now, and first seen by the worker only
        # while the registry is down
        with SchemaRegistryClient({"url": registry.url}) as client:
            v2_id = client.register_schema(
                f"{cfg.topics.input}-value", Schema(json.dumps(V2), "AVRO")
            )
        valid = [e for e in first.events if e.invalid_kind is None]
        invalid = [e for e in first.events if e.invalid_kind is not None]
        assert set(REASON_SAYS) == {e.invalid_kind for e in invalid}

        worker = start_worker(path, tmp_path, "--idle-exit", "3")
        # mid-stream: the first backlog is scored (read back, not slept for)
        assert len(_read_all(cfg, cfg.topics.predictions, len(valid), 120)) >= len(valid)
        registry.stop()
        later = _produce_v2(cfg, v2_id, 300, seed=22)
        worker.wait_for_log("retrying in", timeout=60)
        registry.start()
        assert worker.wait(120) == 0, worker.log()
    finally:
        registry.stop()

    preds = _read_all(cfg, cfg.topics.predictions, len(valid) + len(later))
    dead = _read_all(cfg, cfg.topics.dead_letters, len(invalid))
    # predictions in Avro, read with confluent-kafka's own deserializer and no project code
    registry.start()
    with SchemaRegistryClient({"url": registry.url}) as client:
        deserialize = AvroDeserializer(client)
        ctx = SerializationContext(cfg.topics.predictions, MessageField.VALUE)
        bodies = [deserialize(r.value, ctx) for r in preds]
        subject = client.get_latest_version(f"{cfg.topics.predictions}-value")
    registry.stop()
    assert all(r.value[1:5] == subject.schema_id.to_bytes(4, "big") for r in preds)
    assert all(b["model"] == "fraud" and 0 <= b["score"] <= 1 for b in bodies)
    assert all(b["flagged"] == (b["score"] >= 0.5) and b["scored_ms"] >= b["ts_ms"] for b in bodies)
    scored = Counter(b["event_id"] for b in bodies)
    assert scored == Counter([e.event_id for e in valid] + later)  # once each, both versions
    # one dead letter per bad framing, the original bytes (framing included), the reason
    assert Counter(r.value for r in dead) == Counter(e.value for e in invalid)
    by_value = {e.value: e for e in invalid}
    for r in dead:
        event = by_value[r.value]
        assert r.headers["dead_letter.stage"] == b"decode"
        assert r.headers["dead_letter.reason_class"].decode() in (
            event.invalid_kind,
            "too_large",
            "schema_mismatch",
        )
        assert REASON_SAYS[event.invalid_kind].encode() in r.headers["dead_letter.reason"]
    assert "schema registry answered again" in worker.log()


def test_registry_unreachable_at_start_exits_2_with_the_fix(broker, tmp_path):
    path, cfg = write_config(
        tmp_path,
        broker.bootstrap,
        **{
            "pipeline.format": "avro",
            "schema_registry": {"url": f"http://127.0.0.1:{free_port()}"},
        },
    )
    create_topics(cfg)
    done = subprocess.run(
        [sys.executable, "-m", "streaming", "run", "-c", str(path), "--idle-exit", "1"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2, done.stderr[-2000:]
    assert "schema registry" in done.stderr and "unreachable" in done.stderr
    assert "streaming registry --port" in done.stderr  # the fix


def _serializer(fmt: str, client: SchemaRegistryClient):  # type: ignore[no-untyped-def]
    """confluent-kafka's own serializer of the format, as another team's producer would use."""
    if fmt == "protobuf":
        from confluent_kafka.schema_registry.protobuf import ProtobufSerializer

        from streaming.formats.proto_descriptor import message_class

        cls = message_class(Path(PIPELINE.proto_descriptor or "").read_bytes(), "fraud.Transaction")
        ser = ProtobufSerializer(cls, client, {"use.deprecated.format": False})
        return lambda record, ctx: ser(cls(**record), ctx)
    from confluent_kafka.schema_registry.json_schema import JSONSerializer

    return JSONSerializer(json.dumps(PIPELINE.schema.model_json_schema()), client)


@pytest.mark.parametrize("fmt", ["protobuf", "json-schema"])
def test_protobuf_and_json_schema_events_scored_once_each(broker, models_built, tmp_path, fmt):
    from confluent_kafka.serialization import MessageField, SerializationContext

    from streaming.worker import Worker

    with registry_url() as url:  # STREAMING_TEST_SCHEMA_REGISTRY_URL, or a dev registry
        _, cfg = write_config(
            tmp_path,
            broker.bootstrap,
            **{"pipeline.format": fmt, "schema_registry": {"url": url}},
        )
        create_topics(cfg)
        events = PIPELINE.make_generator(31).batch(300, 1_770_000_000_000)
        ctx = SerializationContext(cfg.topics.input, MessageField.VALUE)
        producer = Producer({**kafka.producer_settings(cfg.kafka, "other-team"), "linger.ms": 50})
        with SchemaRegistryClient({"url": url}) as client:
            serialize = _serializer(fmt, client)
            for ev in events:
                producer.produce(cfg.topics.input, serialize(json.loads(ev.value), ctx), ev.key)
            producer.produce(cfg.topics.input, b"\x01\x00\x00\x00\x01{}", b"bad")  # wrong magic
            assert producer.flush(30) == 0
        stats = Worker(cfg, idle_exit_s=1.0).run()
    # the worker's own count of its acknowledged outputs: one dead letter, at stage decode
    assert stats.outputs == len(events) + 1 and dict(stats.dead_letters) == {"decode": 1}
    preds = _read_all(cfg, cfg.topics.predictions, len(events))
    assert Counter(json.loads(r.value)["event_id"] for r in preds) == Counter(
        e.event_id for e in events
    )
