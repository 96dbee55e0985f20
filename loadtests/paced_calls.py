"""What one chunk's steps cost back to back, and after a gap as at a low rate: is a chunk's cost
at 2,000 events/s set by the code, or by the machine it runs on?

    python -m loadtests.paced_calls [-c CONFIG] [--rows 20] [--calls 200] [--gap-ms 10]

Each step of the model passthrough's chunk (loadtests.baselines: the JSON decode the
passthrough does, the schema's validation, the pipeline's preprocessing, the model call) and,
for scale, a pure Python loop and a C hash, is called ``--calls`` times on a chunk of
``--rows`` generated events in three ways: back to back; after a sleep of ``--gap-ms``; after a
busy wait of as long (the thread never leaves the core). Printed per step: the median CPU of a
call (``time.thread_time``) each way and the ratios to back to back.

If a sleep's figure and a busy wait's are alike, the slowdown does not come from sleeping
(waking, the scheduler, an idle core's power state) but from time itself: what else runs on
the machine in between (other processes, other guests on the host) takes the caches. A step
that touches more memory then pays more for each gap, which is the extra that a low rate costs
a pipeline over a bare consume-decode-produce loop.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import time
from collections.abc import Callable

from loadtests.baselines import model_parts
from streaming.config import load_config

GAPS = ("back to back", "after a sleep", "after a busy wait")


def _busy_wait(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def cpu_per_call_us(
    call: Callable[[], object], calls: int, gap_s: float, busy: bool = False
) -> float:
    """Median thread CPU of ``call`` in microseconds, with a gap of ``gap_s`` before each
    (a sleep, or a busy wait with ``busy``); 0 means back to back."""
    for _ in range(20):  # warm: first calls allocate
        call()
    times = []
    for _ in range(calls):
        if gap_s:
            _busy_wait(gap_s) if busy else time.sleep(gap_s)
        t = time.thread_time_ns()
        call()
        times.append(time.thread_time_ns() - t)
    return statistics.median(times) / 1000


def steps(config: str, rows: int) -> dict[str, Callable[[], object]]:
    """The model passthrough's steps on one chunk of ``rows`` events, and two for scale."""
    cfg = load_config(config)
    parts = model_parts(cfg)
    if parts.stage is not None:
        raise SystemExit(
            f"{config}: the pipeline has a state stage, which needs a broker to read; use a "
            "config without one (loadtests/plain_pipeline.yaml)"
        )
    events = parts.spec.make_generator(7).batch(rows, int(time.time() * 1000))
    values = [e.value for e in events]
    validate = parts.spec.schema.__pydantic_validator__.validate_json
    records = [validate(v) for v in values]
    x = parts.pre.transform(records)
    block = b"x" * 4096

    def python_loop() -> int:
        total = 0
        for i in range(300):
            total += i
        return total

    return {
        "json.loads (the passthrough's decode)": lambda: [json.loads(v) for v in values],
        "validation against the schema": lambda: [validate(v) for v in values],
        "the pipeline's preprocessing": lambda: parts.pre.transform(records),
        "the model call": lambda: parts.runtime.predict(x),
        "a Python loop of 300 adds": python_loop,
        "20 sha256 of 4 KiB (C, little memory)": lambda: [
            hashlib.sha256(block).digest() for _ in range(20)
        ],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-c", "--config", default="loadtests/plain_pipeline.yaml")
    parser.add_argument("--rows", type=int, default=20, help="events in the chunk")
    parser.add_argument("--calls", type=int, default=200, help="timed calls per step and way")
    parser.add_argument("--gap-ms", type=float, default=10.0, help="the gap before each call")
    args = parser.parse_args()
    if args.rows < 1 or args.calls < 1 or args.gap_ms <= 0:
        parser.error("--rows and --calls must be at least 1 and --gap-ms above 0")
    gap = args.gap_ms / 1000
    print(
        f"median CPU per call (us) on a chunk of {args.rows}; gap {args.gap_ms:g} ms; "
        f"{args.calls} calls each"
    )
    print(f"  {'step':40s} {GAPS[0]:>13s} {GAPS[1]:>14s} {GAPS[2]:>18s}")
    for name, call in steps(args.config, args.rows).items():
        warm = cpu_per_call_us(call, args.calls, 0.0)
        slept = cpu_per_call_us(call, args.calls, gap)
        spun = cpu_per_call_us(call, args.calls, gap, busy=True)
        print(
            f"  {name:40s} {warm:13.1f} {slept:8.1f} ({slept / warm:4.1f}x)"
            f" {spun:12.1f} ({spun / warm:4.1f}x)",
            flush=True,
        )


if __name__ == "__main__":
    main()
