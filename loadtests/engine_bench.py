"""The engine benchmark: model-only ceiling, the engine in-process, and through the broker.

    python -m loadtests.engine_bench [-c CONFIG] [--events N] [--rates 2000,10000]
                                     [--device cuda] [--runtime torch] [--model-dir DIR]

Everything is measured side by side in one run and printed as ratios, because machines here are
shared and noisy: compare ratios, not absolute figures, across runs. On a GPU machine, run it
with ``-c pipelines/fraud/pipeline-gpu.yaml --no-broker`` (the heavier model, torch on cuda,
larger batches) for the GPU figures.

Sections:
1. model-only ceiling: rows/s of the runtime alone at each batch size;
2. engine in-process (no broker): decode, route, preprocess, dynamic batching, inference and
   prediction encoding, with a publisher that acknowledges at once; drain mode and fixed
   offered rates with latency percentiles (feed to acknowledgement);
3. through the embedded broker: drain throughput of the worker, the passthrough (I/O ceiling)
   and a naive per-event loop on the same backlog, and latency at an offered rate for the
   worker and the passthrough (event time to acknowledged output), with a short fetch wait.
"""

from __future__ import annotations

import argparse
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from streaming.config import ConfigError, PipelineConfig, load_config
from streaming.dev.inprocess import InMemoryMessage, InstantSink
from streaming.engine.engine import Engine
from streaming.observability.latency import LatencyRecorder
from streaming.observability.stats import WorkerStats
from streaming.pipeline import load_pipeline
from streaming.runtimes.registry import create_runtime
from streaming.worker import Worker


def model_ceiling(cfg: PipelineConfig, sizes: list[int], seconds: float = 1.0) -> dict[int, float]:
    version = cfg.model.versions[0]
    runtime = create_runtime(
        version.runtime, cfg.version_dir(version), version.device, version.threads
    )
    runtime.load()
    runtime.warm_up(tuple(sizes))
    rng = np.random.default_rng(0)
    out = {}
    for n in sizes:
        x = rng.standard_normal((n, runtime.metadata.input_dim)).astype(np.float32)
        rows, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            runtime.predict(x)
            rows += n
        out[n] = rows / (time.perf_counter() - start)
    return out


def _messages(cfg: PipelineConfig, n: int, seed: int) -> list[InMemoryMessage]:
    spec = load_pipeline(cfg.pipeline.module)
    events = spec.make_generator(seed).batch(n, int(time.time() * 1000))
    # unique keys: latency is matched per event (stickiness is not what is measured here)
    return [InMemoryMessage(e.value, b"%d" % i, i) for i, e in enumerate(events)]


def engine_in_process(
    cfg: PipelineConfig, n: int, rate: float | None, poll_batch: int
) -> tuple[float, LatencyRecorder]:
    """(events/s, latency from feed to acknowledgement) for n events fed at ``rate`` or flat out."""
    msgs = _messages(cfg, n, seed=3)
    sink = InstantSink()
    engine = Engine(cfg, sink)
    topic = cfg.topics.predictions
    engine.start()
    fed_at: dict[bytes, float] = {}
    try:
        start = time.perf_counter()
        step = poll_batch if rate is None else max(1, int(rate * 0.001))
        for i in range(0, n, step):
            if rate is not None:
                wait = start + i / rate - time.perf_counter()
                if wait > 0:
                    time.sleep(wait)
            batch = msgs[i : i + step]
            now = time.perf_counter()
            for m in batch:
                fed_at[m._key] = now
            engine.submit(batch)
        engine.offsets.wait_drained(120)
        acked = sink.acked_at.get(topic, {})
        elapsed = max(acked.values()) - start
    finally:
        engine.close()
    latency = LatencyRecorder()
    for key, t in acked.items():
        latency.record((t - fed_at[key]) * 1000)
    return n / elapsed, latency, engine.stats


def _inference_stage(
    stats: WorkerStats, ceiling: dict[int, float], runtime_ceiling: Callable[[int], float]
) -> str:
    """The inference stage inside the engine against the model alone, at the same batch size
    (the GPU target: at least 0.8)."""
    if not stats.batches or stats.inference_s <= 0:
        return "inference stage: no batches"
    mean = round(stats.batch_rows / stats.batches)
    alone = ceiling.get(mean) or runtime_ceiling(mean)
    stage = stats.batch_rows / stats.inference_s
    return (
        f"inference stage: {stage:,.0f} rows/s of model time at mean batch {mean} = "
        f"{stage / alone:.2f} x the model alone at that size ({alone:,.0f} rows/s)"
    )


def _half_saturation(
    cfg: PipelineConfig, drain_rate: float, events: int, ceiling: dict[int, float]
) -> str:
    """The GPU latency target: at half the saturating (drain) rate, p99 within
    ``max_delay_ms`` + the compute time of the batches formed there + 2 ms."""
    offered = drain_rate / 2
    n = min(events, max(1000, int(offered * 5)))
    _got, lat, stats = engine_in_process(cfg, n, offered, cfg.worker.poll_batch)
    mean = max(1, round(stats.batch_rows / max(stats.batches, 1)))
    alone = ceiling.get(mean) or model_ceiling(cfg, [mean], seconds=0.5)[mean]
    compute_ms = mean / alone * 1000
    budget = cfg.batching.max_delay_ms + compute_ms + 2.0
    p99 = lat.percentile(99)
    return (
        f"half the drain rate, {offered:,.0f}/s: p99 {p99:.2f} ms against a budget of "
        f"{budget:.2f} ms (max_delay {cfg.batching.max_delay_ms:g} + compute of a batch of "
        f"{mean} {compute_ms:.2f} + 2) = {p99 / budget:.2f} of it"
    )


def _fmt_lat(rec: LatencyRecorder) -> str:
    return (
        f"p50 {rec.percentile(50):7.2f} ms  p99 {rec.percentile(99):7.2f} ms  "
        f"max {rec.max_ms:7.1f} ms"
    )


def _latency_run(
    name: str, cfg: PipelineConfig, rate: float, n: int, seed: int
) -> tuple[LatencyRecorder, LatencyRecorder]:
    """Start ``name`` (worker or passthrough), wait for its partitions, send n events at
    ``rate``; return its latency over all events and over those sent after the first second
    (the embedded broker's start transient, see README)."""
    from loadtests.baselines import passthrough
    from streaming.dev.produce import produce_events

    cfg = cfg.with_overrides(**{"kafka.group": f"lat-{name}"})
    out: list[tuple[LatencyRecorder, LatencyRecorder]] = []
    if name == "worker":
        worker = Worker(cfg, idle_exit_s=3.0)
        assigned = worker.assigned

        def run() -> None:
            stats = worker.run()
            out.append((stats.end_to_end_ms, stats.steady_end_to_end_ms))
    else:
        assigned = threading.Event()

        def run() -> None:
            res = passthrough(
                cfg,
                "bench.passthrough",
                n,
                assigned=assigned,
                steady_from_ms=lambda: steady_from[0],
            )
            out.append((res.end_to_end_ms, res.steady_end_to_end_ms))

    steady_from = [0]
    thread = threading.Thread(target=run)
    steady_from[0] = int(time.time() * 1000) + 10**9  # set properly once sending starts
    thread.start()
    if not assigned.wait(60):
        raise RuntimeError(f"{name} got no partitions in 60 s")
    steady_from[0] = int(time.time() * 1000) + 1000
    if name == "worker":
        worker.stats.steady_from_ms = steady_from[0]
    produce_events(cfg, n, rate=rate, seed=seed)
    thread.join(timeout=120)
    if not out:
        raise RuntimeError(f"{name} did not finish")
    return out[0]


def through_broker(
    cfg: PipelineConfig, n: int, rate: float, rate_events: int, pools: int = 0
) -> None:
    from loadtests.baselines import naive_per_event, passthrough
    from streaming.dev.broker import EmbeddedBroker
    from streaming.dev.produce import produce_events
    from streaming.kafka.topics import create_topics

    with EmbeddedBroker() as broker:
        base = cfg.with_overrides(**{"kafka.bootstrap": broker.bootstrap})
        create_topics(base)
        out_topics = {"pass": "bench.passthrough", "naive": "bench.naive"}
        from confluent_kafka.admin import AdminClient, NewTopic

        AdminClient({"bootstrap.servers": broker.bootstrap}).create_topics(
            [NewTopic(t, base.topics.partitions, 1) for t in out_topics.values()]
        )
        time.sleep(1)
        produce_events(base, n, seed=9)
        print(
            f"\n3. through the embedded broker: drain a backlog of {n:,} events "
            f"({base.topics.partitions} partitions)"
        )
        pt = passthrough(base, out_topics["pass"], n)
        print(f"   passthrough (I/O ceiling) {pt.rate:>10,.0f} events/s")
        worker_cfg = base.with_overrides(**{"kafka.group": "bench-worker"})
        w = Worker(worker_cfg, idle_exit_s=2.0)
        stats = w.run()
        print(
            f"   worker                    {stats.rate():>10,.0f} events/s   "
            f"= {stats.rate() / pt.rate:.2f} x passthrough"
        )
        naive_n = min(n, 20_000)
        nv = naive_per_event(base, out_topics["naive"], naive_n)
        print(
            f"   naive per-event loop      {nv.rate:>10,.0f} events/s   "
            f"(first {naive_n:,} events); worker = {stats.rate() / nv.rate:.1f} x naive"
        )
        if pools:
            from loadtests.pool_bench import pool_rows

            pool_rows(base, n, pools)

    # Latency on fresh topics and a short run (the broker's fetch walk: README, Latency and
    # the embedded broker).
    with EmbeddedBroker() as broker:
        live = cfg.with_overrides(**{"kafka.bootstrap": broker.bootstrap})
        create_topics(live)
        from confluent_kafka.admin import AdminClient, NewTopic

        AdminClient({"bootstrap.servers": broker.bootstrap}).create_topics(
            [NewTopic("bench.passthrough", live.topics.partitions, 1)]
        )
        time.sleep(1)
        print(
            f"\n   latency at an offered {rate:,.0f} events/s ({rate_events:,} events, "
            f"fetch.wait.max.ms={live.kafka.consumer.get('fetch.wait.max.ms', 500)}), "
            "event time to acknowledged output:"
        )
        results = {}
        for name in ("passthrough", "worker"):
            # each on its own fresh input topic: the broker's fetch walk grows with the log
            live = live.with_overrides(**{"topics.input": f"{live.topics.input}.{name}"})
            create_topics(live)
            time.sleep(1)
            whole, steady = _latency_run(name, live, rate, rate_events, seed=20 + len(results))
            results[name] = steady
            print(f"   {name:<12} all events {_fmt_lat(whole)}")
            print(f"   {'':<12} after 1 s   {_fmt_lat(steady)}")
        ratio = results["worker"].percentile(99) / results["passthrough"].percentile(99)
        print(f"   worker p99 / passthrough p99 (after the first second) = {ratio:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-c", "--config", default="pipelines/fraud/pipeline.yaml")
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--rates", default="2000,10000,30000")
    parser.add_argument("--device")
    parser.add_argument("--runtime", choices=["onnx", "torch"])
    parser.add_argument("--model-dir", help="a model version folder to use instead")
    parser.add_argument("--no-broker", action="store_true", help="skip section 3")
    parser.add_argument(
        "--processes",
        type=int,
        default=0,
        help="section 3 also drains with pools of 1..N processes (streaming run --processes)",
    )
    args = parser.parse_args()
    cfg = load_config(args.config)
    v = cfg.model.versions[0]
    changes = {}
    if args.device:
        changes["device"] = args.device
        if not args.device.startswith("cuda"):
            # graphs and float16 are cuda-only options; a GPU config run on cpu drops them
            changes.update(cuda_graphs=None, half=False)
    if args.runtime:
        changes["runtime"] = args.runtime
    if args.model_dir:
        changes["path"] = str(Path(args.model_dir))
        changes["version"] = Path(args.model_dir).name
    if changes:
        data = cfg.model_dump()
        data["model"]["versions"] = [{**v.model_dump(), **changes}]
        cfg = PipelineConfig.model_validate(data)
        v = cfg.model.versions[0]
    print(
        f"engine benchmark: model {cfg.model.name}/{v.version} ({v.runtime}, {v.device}, "
        f"{v.threads} thread(s)), max batch {cfg.batching.max_batch_size}, "
        f"max delay {cfg.batching.max_delay_ms} ms, preferred {cfg.batching.preferred_batch_sizes}"
    )

    sizes = sorted({1, *cfg.batching.preferred_batch_sizes, cfg.batching.max_batch_size})
    ceiling = model_ceiling(cfg, sizes)
    print("\n1. model-only ceiling (rows/s)")
    for n, r in ceiling.items():
        print(f"   batch {n:>5}: {r:>12,.0f}")
    top = max(ceiling.values())

    print(f"\n2. engine in-process, no broker ({args.events:,} events)")
    rate, lat, stats = engine_in_process(cfg, args.events, None, cfg.worker.poll_batch)
    print(
        f"   drain: {rate:>10,.0f} events/s = {rate / top:.2f} x the best model-only ceiling "
        f"({_fmt_lat(lat)})"
    )
    print(
        "   "
        + _inference_stage(
            stats, ceiling, runtime_ceiling=lambda b: model_ceiling(cfg, [b], seconds=0.5)[b]
        )
    )
    for r in [float(x) for x in args.rates.split(",") if x]:
        n = min(args.events, int(r * 5))
        got, lat, stats = engine_in_process(cfg, n, r, cfg.worker.poll_batch)
        print(
            f"   offered {r:>8,.0f}/s: {got:>10,.0f} events/s  {_fmt_lat(lat)}  "
            f"mean batch {stats.batch_rows / max(stats.batches, 1):.0f}"
        )
    print("   " + _half_saturation(cfg, rate, args.events, ceiling))

    if not args.no_broker:
        through_broker(cfg, args.events, 2000.0, 10_000, args.processes)


if __name__ == "__main__":
    from streaming.runtimes.base import ModelLoadError
    from streaming.worker import StartupError

    try:
        main()
    except (ModelLoadError, StartupError, ConfigError) as exc:
        raise SystemExit(f"engine_bench: error: {exc}") from None
