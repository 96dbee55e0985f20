"""The hostile-input corpus: every class of record a broker accepts on the input topic (empty,
tombstone and huge values, values over each output limit, broken UTF-8, odd JSON, null, empty,
binary and huge keys, odd, repeated and huge headers), sent to a pipeline's input topic, and
each record's fate read back: exactly one prediction or exactly one dead letter with a stage
and a reason.

    python -m loadtests.hostile -c CONFIG [--bootstrap B] [--timeout S]

It sends and reads; the workers are yours (already running, or started after it). Records are
matched by event id (predictions) and by source partition and offset (dead letters), never by
timing. The corpus itself is ``corpus.json`` beside this file.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, Producer

from streaming.config import PipelineConfig
from streaming.kafka import settings as kafka
from streaming.pipeline import load_pipeline

CORPUS = Path(__file__).with_name("corpus.json")
PRODUCER_MAX = 10_000_000
"""The corpus's own producer takes records up to 10 MB (the input topic must, too)."""


@dataclass
class HostileRecord:
    cls: str
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes | None]]
    expect: str
    event_id: str | None
    """Set for records whose value is a valid event (their prediction carries it)."""
    partition: int = -1
    offset: int = -1
    outcomes: list[dict[str, Any]] = field(default_factory=list)


def _bytes(spec: dict[str, Any] | None, valid: bytes | None) -> bytes | None:
    if spec is None or spec.get("null"):
        return None
    if "text" in spec:
        return str(spec["text"]).encode()
    if "b64" in spec:
        return base64.b64decode(spec["b64"])
    if "repeat" in spec:
        return (str(spec["repeat"]) * int(spec["size"])).encode()[: int(spec["size"])]
    if "nest" in spec:
        n = int(spec["nest"])
        return b"[" * n + b"]" * n
    assert valid is not None
    out = valid
    if "patch_raw" in spec:  # values that json.dumps cannot write (1e400, NaN, huge ints)
        for name, raw in spec["patch_raw"].items():
            doc = json.loads(out)
            doc[name] = "__RAW__"
            out = json.dumps(doc, separators=(",", ":")).replace('"__RAW__"', raw).encode()
    if "duplicate" in spec:
        doc = json.loads(out)
        name = spec["duplicate"]
        out = out[:-1] + f',"{name}":{json.dumps(doc[name])}}}'.encode()
    out = (
        base64.b64decode(spec.get("prefix_b64", ""))
        + out
        + base64.b64decode(spec.get("suffix_b64", ""))
    )
    if "pad_to" in spec:
        out = out + b" " * max(0, int(spec["pad_to"]) - len(out))
    return out


def build(cfg: PipelineConfig, path: Path = CORPUS, seed: int = 11) -> list[HostileRecord]:
    """The corpus expanded, with fresh valid events (unique ids) where it asks for them."""
    spec = json.loads(path.read_text())
    events = (
        load_pipeline(cfg.pipeline.module)
        .make_generator(seed)
        .batch(len(spec["records"]), int(time.time() * 1000))
    )
    out = []
    for entry, event in zip(spec["records"], events, strict=True):
        vspec = entry.get("value")
        uses_event = bool(vspec) and not any(
            k in vspec for k in ("text", "b64", "null", "repeat", "nest")
        )
        headers = [(name, _bytes(v, None)) for name, v in entry.get("headers", [])]
        rep = entry.get("headers_repeat")
        if rep:
            headers += [(rep["name"], rep["value"].encode())] * int(rep["count"])
        out.append(
            HostileRecord(
                cls=entry["class"],
                key=_bytes(entry["key"], None) if "key" in entry else event.key,
                value=_bytes(vspec, event.value),
                headers=headers,
                expect=entry["expect"],
                event_id=event.event_id if uses_event else None,
            )
        )
    return out


def send(cfg: PipelineConfig, records: list[HostileRecord]) -> None:
    """Produce every record to the input topic, noting where each landed."""
    producer = Producer(
        {**kafka.producer_settings(cfg.kafka, "hostile-corpus"), "message.max.bytes": PRODUCER_MAX}
    )
    errors: list[str] = []
    for rec in records:

        def landed(err: Any, msg: Any, rec: HostileRecord = rec) -> None:
            if err is not None:
                errors.append(f"{rec.cls}: {err}")
            else:
                rec.partition, rec.offset = msg.partition(), msg.offset()

        producer.produce(
            cfg.topics.input, rec.value, rec.key, headers=rec.headers or None, on_delivery=landed
        )
        producer.poll(0)
    left = producer.flush(60)
    if left or errors:
        raise RuntimeError(f"the broker did not take the corpus: {errors or f'{left} left'}")


def collect(cfg: PipelineConfig, records: list[HostileRecord], timeout: float) -> None:
    """Read predictions and dead letters until every record has an outcome and nothing more
    comes for a while (so a second output would be seen), or the timeout."""
    by_id = {r.event_id: r for r in records if r.event_id is not None}
    by_place = {(r.partition, r.offset): r for r in records}
    consumer = Consumer(kafka.reader_settings(cfg.kafka, f"hostile-{uuid.uuid4().hex[:8]}"))
    consumer.subscribe([cfg.topics.predictions, cfg.topics.dead_letters])
    deadline = time.monotonic() + timeout
    quiet_since = time.monotonic()
    try:
        while time.monotonic() < deadline:
            batch = consumer.consume(500, timeout=0.5)
            for msg in batch:
                if msg.error():
                    continue
                outcome = _outcome(msg, cfg)
                rec = (
                    by_id.get(outcome.get("event_id"))
                    if outcome["kind"] == "prediction"
                    else by_place.get((outcome["partition"], outcome["offset"]))
                )
                if rec is not None:
                    rec.outcomes.append(outcome)
            if batch:
                quiet_since = time.monotonic()
            elif all(r.outcomes for r in records) and time.monotonic() - quiet_since > 2.0:
                return
    finally:
        consumer.close()


def _outcome(msg: Any, cfg: PipelineConfig) -> dict[str, Any]:
    headers = {k: v for k, v in (msg.headers() or [])}
    if msg.topic() == cfg.topics.predictions:
        return {
            "kind": "prediction",
            "event_id": json.loads(msg.value()).get("event_id"),
            "headers_dropped": (headers.get("streaming.headers_dropped") or b"").decode(),
            "size": len(msg.value() or b""),
        }

    def h(name: str) -> str:
        return (headers.get(f"dead_letter.{name}") or b"").decode("utf-8", "replace")

    return {
        "kind": "dead_letter",
        "partition": int(h("partition") or -1),
        "offset": int(h("offset") or -1),
        "stage": h("stage"),
        "reason_class": h("reason_class"),
        "reason": h("reason"),
        "truncated": h("truncated") == "true",
        "size": len(msg.value() or b""),
    }


def problems(records: list[HostileRecord]) -> list[str]:
    """What broke the contract: not exactly one output, or not the expected kind."""
    out = []
    for r in records:
        kinds = Counter(o["kind"] for o in r.outcomes)
        if sum(kinds.values()) != 1:
            out.append(f"{r.cls}: {sum(kinds.values())} outputs ({dict(kinds)})")
            continue
        o = r.outcomes[0]
        if r.expect != "either" and o["kind"] != r.expect:
            out.append(f"{r.cls}: a {o['kind']}, expected a {r.expect}")
        if o["kind"] == "dead_letter" and not (o["stage"] and o["reason"]):
            out.append(f"{r.cls}: a dead letter without stage or reason")
    return out


def describe(r: HostileRecord) -> str:
    if len(r.outcomes) != 1:
        return f"{len(r.outcomes)} outputs"
    o = r.outcomes[0]
    if o["kind"] == "prediction":
        dropped = f", {o['headers_dropped']} headers left off" if o["headers_dropped"] else ""
        return f"prediction{dropped}"
    cut = ", truncated" if o["truncated"] else ""
    return f"dead letter: {o['stage']} / {o['reason_class']}{cut} ({o['size']:,} bytes)"
