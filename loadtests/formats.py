"""Avro against JSON, side by side in one run: decode per core, and the worker's drain.

    python -m loadtests.formats [--events 100000] [--pairs 6] [--decode-events 50000]
                                [--decode-only]

1. Decode per core (CPU time, one thread, the same events): the worker's Avro read (framing,
   the writer schema cached per id, its compiled reader; and fastavro's schemaless reader
   alone, the fallback) against confluent-kafka's own ``AvroDeserializer`` on the same
   framed payloads, without and with the pipeline's pydantic validation (the worker's
   decoder validated: its model reader checks and builds the records, beside its compiled
   read then pydantic's validation, and fastavro then pydantic); the JSON decoder of the
   same events for scale.
2. Drain: one embedded broker and a dev registry; the same generated events as a JSON backlog
   and as an Avro backlog (the same settings but ``pipeline.format``: JSON predictions for
   both); each pair drains both with a fresh worker and group, the order alternating between
   pairs (on this shared machine the drain order moved a run's median ratio by up to 0.4,
   one way in one run and the other way in the next, so an even number of pairs weighs both
   orders alike, and the medians by order are printed). Ratios from one run, side by side,
   with the worker's CPU per event of each drain.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import time
from typing import Any

from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext

from loadtests.drain_ratio import fill_backlog, process_cpu_s
from streaming.config import PipelineConfig, load_config
from streaming.dev.broker import EmbeddedBroker
from streaming.dev.inprocess import InMemoryMessage
from streaming.dev.registry import DevRegistry
from streaming.engine.decode import Decoder
from streaming.formats.avro import AvroDecoder, load_avsc
from streaming.formats.produce import AvroFramer
from streaming.formats.registry import SchemaSource, registry_client
from streaming.pipeline import load_pipeline
from streaming.worker import Worker


def _cpu_per_event(fns: dict[str, Any], n: int, rounds: int = 3) -> dict[str, float]:
    """Median CPU microseconds per event of each ``fn()``, the functions taking turns in each
    round so that a neighbour's load hits them alike."""
    out: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            gc.collect()
            gc.disable()  # as good as the worker's tuned collector (worker.gc_young_threshold)
            c0 = time.process_time()
            fn()
            out[name].append((time.process_time() - c0) / n * 1e6)
            gc.enable()
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
        fastavro_only = AvroDecoder(
            spec.schema, 1 << 20, SchemaSource(client, url), reader, compiled=False
        )
        pydantic_after = AvroDecoder(
            spec.schema, 1 << 20, SchemaSource(client, url), reader, build=False
        )
        validate = spec.schema.__pydantic_validator__.validate_python
        compiled, plain = ours._writer(framer.schema_id), fastavro_only._writer(framer.schema_id)
        assert isinstance(compiled, tuple) and isinstance(plain, tuple)
        sid = framer.schema_id
        ours_read = lambda: [ours._read(compiled, sid, v) for v in avro]  # noqa: E731
        fastavro_read = lambda: [fastavro_only._read(plain, sid, v) for v in avro]  # noqa: E731
        theirs_only = lambda: [deserialize(v, ctx) for v in avro]  # noqa: E731
        theirs_valid = lambda: [validate(deserialize(v, ctx)) for v in avro]  # noqa: E731
        ours_valid = lambda: ours.decode(avro_msgs)  # noqa: E731
        fastavro_valid = lambda: fastavro_only.decode(avro_msgs)  # noqa: E731
        read_then_pydantic = lambda: pydantic_after.decode(avro_msgs)  # noqa: E731
        json_valid = lambda: Decoder(spec.schema, 1 << 20).decode(json_msgs)  # noqa: E731
        assert ours.decode(avro_msgs) == fastavro_only.decode(avro_msgs)
        assert ours.decode(avro_msgs) == pydantic_after.decode(avro_msgs)
        assert ours._fast and not pydantic_after._fast  # the model reader is in use
        assert ours.decode(avro_msgs)[2] == [] and theirs_only()[0] == json.loads(events[0].value)
        rows = _cpu_per_event(
            {
                "ours": ours_read,
                "fastavro": fastavro_read,
                "theirs": theirs_only,
                "ours+pydantic": ours_valid,
                "read+pydantic": read_then_pydantic,
                "fastavro+pydantic": fastavro_valid,
                "theirs+pydantic": theirs_valid,
                "json+pydantic": json_valid,
            },
            n,
        )
    print(f"1. decode per core, {n:,} events, CPU us/event (median of 3):")
    print(
        f"   decode only:   worker Avro {rows['ours']:.2f} (fastavro alone "
        f"{rows['fastavro']:.2f})  confluent AvroDeserializer {rows['theirs']:.2f}  -> worker "
        f"is {rows['theirs'] / rows['ours']:.2f}x"
    )
    print(
        f"   validated:     worker Avro {rows['ours+pydantic']:.2f} (compiled read, then "
        f"pydantic {rows['read+pydantic']:.2f}; fastavro alone, then pydantic "
        f"{rows['fastavro+pydantic']:.2f})  AvroDeserializer+pydantic "
        f"{rows['theirs+pydantic']:.2f}  -> {rows['theirs+pydantic'] / rows['ours+pydantic']:.2f}x"
        f"; JSON decoder {rows['json+pydantic']:.2f}",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-c", "--config", default="pipelines/fraud/pipeline.yaml")
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--pairs", type=int, default=6)
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


def _drain(cfg: PipelineConfig, group: str, events: int) -> tuple[float, float]:
    """One fresh worker drains the backlog: (events/s, this process's CPU us per event)."""
    c0 = process_cpu_s()
    stats = Worker(cfg.with_overrides(**{"kafka.group": group}), idle_exit_s=1.0).run()
    assert stats.predictions == events, (cfg.pipeline.format, stats.outputs, stats.dead_letters)
    return stats.rate(), (process_cpu_s() - c0) / events * 1e6


def drain_pairs(cfgs: dict[str, PipelineConfig], events: int, pairs: int) -> None:
    json_cfg, avro_cfg = cfgs["json"], cfgs["avro"]
    # Only the input format differs: both write JSON predictions, with the same consumer.
    assert json_cfg.outputs == avro_cfg.outputs and avro_cfg.outputs.format == "json"
    assert json_cfg.kafka == avro_cfg.kafka and json_cfg.worker == avro_cfg.worker
    for cfg in cfgs.values():
        fill_backlog(cfg, events)
    print(f"2. drain: backlogs of {events:,} events each (same seed), JSON and Avro")
    ratios: list[float] = []
    by_order: dict[str, list[float]] = {"json first": [], "avro first": []}
    cpu: dict[str, list[float]] = {"json": [], "avro": []}
    for i in range(pairs):
        rates = {}
        order = ("json", "avro") if i % 2 == 0 else ("avro", "json")
        for fmt in order:
            rates[fmt], us = _drain(cfgs[fmt], f"{cfgs[fmt].kafka.group}-{fmt}-{i}", events)
            cpu[fmt].append(us)
        ratios.append(rates["avro"] / rates["json"])
        by_order[f"{order[0]} first"].append(ratios[-1])
        print(
            f"   pair {i + 1} ({order[0]} first): json {rates['json']:>9,.0f} ev/s "
            f"({cpu['json'][-1]:.1f} us cpu/event)  avro {rates['avro']:>9,.0f} ev/s "
            f"({cpu['avro'][-1]:.1f} us)  avro/json {ratios[-1]:.2f}",
            flush=True,
        )
    print(
        f"   avro / json drain: median {statistics.median(ratios):.2f}, "
        f"min {min(ratios):.2f}, max {max(ratios):.2f} over {len(ratios)} pairs"
    )
    for order_name, got in by_order.items():
        if got:
            print(f"   {order_name}: median {statistics.median(got):.2f} over {len(got)} pairs")
    cpu_ratio = [j / a for j, a in zip(cpu["json"], cpu["avro"], strict=True)]
    print(
        f"   worker CPU per event, json / avro: median {statistics.median(cpu_ratio):.2f}, "
        f"min {min(cpu_ratio):.2f}, max {max(cpu_ratio):.2f} (json "
        f"{statistics.median(cpu['json']):.1f} us, avro {statistics.median(cpu['avro']):.1f} us)"
    )


if __name__ == "__main__":
    main()
