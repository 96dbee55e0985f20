"""Avro against JSON, side by side in one run: decode per core, and the worker's drain.

    python -m loadtests.formats [--events 100000] [--pairs 3] [--decode-events 50000]
                                [--decode-only]

1. Decode per core (CPU time, one thread, the same events): the worker's Avro decoder
   (framing, fastavro's schemaless reader, the writer schema cached per id) against
   confluent-kafka's own ``AvroDeserializer`` on the same framed payloads, both without and
   with the pipeline's pydantic validation; the JSON decoder of the same events for scale.
2. Drain: one embedded broker and a dev registry; the same generated events as a JSON backlog
   and as an Avro backlog; each pair drains both with a fresh worker and group, the order
   alternating between pairs. Ratios from one run, side by side.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any

from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext

from streaming.config import PipelineConfig, load_config
from streaming.dev.broker import EmbeddedBroker
from streaming.dev.inprocess import InMemoryMessage
from streaming.dev.produce import produce_events
from streaming.dev.registry import DevRegistry
from streaming.engine.decode import Decoder
from streaming.formats.avro import AvroDecoder, load_avsc
from streaming.formats.produce import AvroFramer
from streaming.formats.registry import SchemaSource, registry_client
from streaming.kafka.topics import create_topics
from streaming.pipeline import load_pipeline
from streaming.worker import Worker


def _cpu_per_event(fns: dict[str, Any], n: int, rounds: int = 3) -> dict[str, float]:
    """Median CPU microseconds per event of each ``fn()``, the functions taking turns in each
    round so that a neighbour's load hits them alike."""
    out: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            c0 = time.process_time()
            fn()
            out[name].append((time.process_time() - c0) / n * 1e6)
    return {name: statistics.median(v) for name, v in out.items()}


def decode_per_core(cfg: PipelineConfig, n: int) -> None:
    spec = load_pipeline(cfg.pipeline.module)
    assert cfg.schema_registry is not None
    framer = AvroFramer.register(cfg, spec)
    events = spec.make_generator(5).batch(n, int(time.time() * 1000))
    avro = [framer.convert([e])[0].value for e in events]
    json_msgs = [InMemoryMessage(e.value, e.key, i) for i, e in enumerate(events)]
    avro_msgs = [
        InMemoryMessage(v, e.key, i) for i, (e, v) in enumerate(zip(events, avro, strict=True))
    ]
    url = cfg.schema_registry.url
    with (
        registry_client(cfg.schema_registry, None) as client,
        SchemaRegistryClient({"url": url}) as theirs,
    ):
        reader = load_avsc(spec.avro_schema or "")
        ours = AvroDecoder(spec.schema, 1 << 20, SchemaSource(client, url), reader)
        deserialize = AvroDeserializer(theirs)
        ctx = SerializationContext(cfg.topics.input, MessageField.VALUE)
        validate = spec.schema.__pydantic_validator__.validate_python
        writer = ours._writer(framer.schema_id)  # the read path alone
        assert isinstance(writer, tuple)
        read = ours._read
        unframe_read = lambda: [read(writer, 1, v, memoryview(v)[5:]) for v in avro]  # noqa: E731
        theirs_only = lambda: [deserialize(v, ctx) for v in avro]  # noqa: E731
        theirs_valid = lambda: [validate(deserialize(v, ctx)) for v in avro]  # noqa: E731
        ours_valid = lambda: ours.decode(avro_msgs)  # noqa: E731
        json_valid = lambda: Decoder(spec.schema, 1 << 20).decode(json_msgs)  # noqa: E731
        assert ours.decode(avro_msgs)[2] == [] and theirs_only()[0] == json.loads(events[0].value)
        rows = _cpu_per_event(
            {
                "ours": unframe_read,
                "theirs": theirs_only,
                "ours+pydantic": ours_valid,
                "theirs+pydantic": theirs_valid,
                "json+pydantic": json_valid,
            },
            n,
        )
    print(f"1. decode per core, {n:,} events, CPU us/event (median of 3):")
    print(
        f"   decode only:   worker Avro {rows['ours']:.2f}  confluent AvroDeserializer "
        f"{rows['theirs']:.2f}  -> worker is {rows['theirs'] / rows['ours']:.2f}x"
    )
    print(
        f"   with pydantic: worker Avro {rows['ours+pydantic']:.2f}  AvroDeserializer+pydantic "
        f"{rows['theirs+pydantic']:.2f}  -> {rows['theirs+pydantic'] / rows['ours+pydantic']:.2f}x"
        f"; JSON decoder {rows['json+pydantic']:.2f}",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-c", "--config", default="pipelines/fraud/pipeline.yaml")
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--decode-events", type=int, default=50_000)
    parser.add_argument(
        "--decode-only", action="store_true", help="only part 1 (no broker, no worker)"
    )
    args = parser.parse_args()
    registry = DevRegistry().start()
    try:
        if args.decode_only:
            decode_per_core(
                _configs(load_config(args.config), registry.url)["avro"], args.decode_events
            )
            return
        with EmbeddedBroker() as broker:
            cfgs = _configs(load_config(args.config, bootstrap=broker.bootstrap), registry.url)
            decode_per_core(cfgs["avro"], args.decode_events)
            drain_pairs(cfgs, args.events, args.pairs)
    finally:
        registry.stop()


def _configs(base: PipelineConfig, registry_url: str) -> dict[str, PipelineConfig]:
    """The same pipeline as JSON and as Avro, each with topics of its own."""
    tag = f"fmt-{int(time.time())}"
    return {
        fmt: base.with_overrides(
            **{
                "pipeline.format": fmt,
                "schema_registry": {"url": registry_url},
                "kafka.group": tag,
                **{
                    f"topics.{k}": f"{getattr(base.topics, k)}.{tag}.{fmt}"
                    for k in ("input", "predictions", "dead_letters", "telemetry", "control")
                },
            }
        )
        for fmt in ("json", "avro")
    }


def drain_pairs(cfgs: dict[str, PipelineConfig], events: int, pairs: int) -> None:
    for cfg in cfgs.values():
        create_topics(cfg)
        produce_events(cfg, events, seed=1)
    print(f"2. drain: backlogs of {events:,} events each (same seed), JSON and Avro")
    ratios = []
    for i in range(pairs):
        rates = {}
        order = ("json", "avro") if i % 2 == 0 else ("avro", "json")
        for fmt in order:
            cfg = cfgs[fmt].with_overrides(**{"kafka.group": f"{cfgs[fmt].kafka.group}-{fmt}-{i}"})
            stats = Worker(cfg, idle_exit_s=1.0).run()
            assert stats.outputs == events, (fmt, stats.outputs)
            rates[fmt] = stats.rate()
        ratios.append(rates["avro"] / rates["json"])
        print(
            f"   pair {i + 1}: json {rates['json']:>9,.0f} ev/s  avro "
            f"{rates['avro']:>9,.0f} ev/s  avro/json {ratios[-1]:.2f}",
            flush=True,
        )
    print(
        f"   avro / json drain: median {statistics.median(ratios):.2f}, "
        f"min {min(ratios):.2f}, max {max(ratios):.2f} over {len(ratios)} pairs"
    )


if __name__ == "__main__":
    main()
