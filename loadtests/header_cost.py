"""What one header per record costs a producer: Producer.produce with and without a traceparent.

    python -m loadtests.header_cost [--records 100000] [--rounds 3]

One embedded broker; each round produces the same records (a prediction-sized value, a card
key) once per variant, to a fresh topic, in alternating order: no header; a traceparent as a
list of (str, bytes); as (str, str); as a dict. CPU is split three ways: the calling thread
(Python and the binding's conversion of the headers), the rest of this process (librdkafka's
threads and the delivery reports) and the broker process. It is how tracing's old default,
a new traceparent on every prediction, was found to cost more than the rest of tracing.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from loadtests.drain_ratio import process_cpu_s
from streaming.dev.broker import EmbeddedBroker

VARIANTS = ("none", "list-bytes", "list-str", "dict-bytes")
TRACEPARENT = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _headers(variant: str, n: int) -> list:
    tp = TRACEPARENT
    if variant == "none":
        return [None] * n
    if variant == "list-bytes":
        return [[("traceparent", tp)] for _ in range(n)]
    if variant == "list-str":
        return [[("traceparent", tp.decode())] for _ in range(n)]
    return [{"traceparent": tp} for _ in range(n)]


def _round(bootstrap: str, topic: str, variant: str, n: int, broker_pid: int) -> tuple:
    """(us per record: calling thread, rest of this process, broker; records/s)."""
    value = json.dumps({"event_id": "e" * 36, "score": 0.0123, "decision": "approve"}).encode()
    keys = [b"card-%06d" % (i % 5000) for i in range(n)]
    headers = _headers(variant, n)
    producer = Producer(
        {"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 5}
    )
    producer.produce(topic, b"warm", b"k")
    producer.flush(10)

    def report(err: object, msg: object) -> None:
        return None

    t0, c0, b0, w0 = time.thread_time(), process_cpu_s(), _cpu_s(broker_pid), time.perf_counter()
    produce = producer.produce
    for i in range(n):
        produce(topic, value, keys[i], headers=headers[i], on_delivery=report)
    t1 = time.thread_time()
    while len(producer):
        producer.poll(0.05)
    c1, b1, w1 = process_cpu_s(), _cpu_s(broker_pid), time.perf_counter()
    per = 1e6 / n
    return (t1 - t0) * per, ((c1 - c0) - (t1 - t0)) * per, (b1 - b0) * per, n / (w1 - w0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    results: dict[str, list[tuple]] = {v: [] for v in VARIANTS}
    with EmbeddedBroker() as broker:
        assert broker.process is not None
        topics = [f"header-cost-{k}" for k in range(args.rounds * len(VARIANTS))]
        AdminClient({"bootstrap.servers": broker.bootstrap}).create_topics(
            [NewTopic(t, 4, 1) for t in topics]
        )
        time.sleep(1.5)
        for r in range(args.rounds):
            order = VARIANTS if r % 2 == 0 else VARIANTS[::-1]
            for variant in order:
                topic = topics.pop()
                got = _round(broker.bootstrap, topic, variant, args.records, broker.process.pid)
                results[variant].append(got)
    print(f"{args.records:,} records, {args.rounds} rounds (median and range, us per record):")
    for variant, rows in results.items():
        cols = list(zip(*rows, strict=True))
        med = [statistics.median(c) for c in cols]
        total = [sum(r[:3]) for r in rows]
        print(
            f"{variant:10}  produce() {med[0]:4.2f} ({min(cols[0]):.2f}-{max(cols[0]):.2f})  "
            f"librdkafka+reports {med[1]:4.2f} ({min(cols[1]):.2f}-{max(cols[1]):.2f})  "
            f"broker {med[2]:4.2f} ({min(cols[2]):.2f}-{max(cols[2]):.2f})  "
            f"total {statistics.median(total):4.2f}  {med[3]:9,.0f} records/s"
        )


if __name__ == "__main__":
    main()
