"""Where the state stage's time goes, in process: CPU per event of each part of its hot path.

    python -m loadtests.state_profile [--events 200000] [--path both|python|native]

The fraud generator's live events (a new seed each run: a seed produced again replays its
cards), validated as the worker validates them, in poll batches of 2,000 split into runs of
one partition (as fetches return them; 4 partitions), through ``StateStage.compute``; every
20,000 events and at the end a changelog commit (``StateChangelog.begin``, its produce a
no-op), as the worker's 500 ms commits would at 40,000 events/s. CPU time
(``time.process_time``), not wall time; the collector's passes are timed by ``gc.callbacks``
and counted inside the other parts.
Parts of the Python path are timed each on its own, so their sum is near, not equal to, the
total. With ``both`` the Python path, the C path, then the Python path timed in parts run one
after the other, each a new stage over the same events.
"""

from __future__ import annotations

import argparse
import gc
import time
import zlib
from collections.abc import Callable
from typing import Any

import numpy as np
from confluent_kafka import Message

from pipelines.fraud import PIPELINE
from pipelines.fraud.generator import make_generator
from pipelines.fraud.schema import Transaction
from streaming.state.changelog import StateChangelog
from streaming.state.stage import StateStage
from streaming.state.store import C_STATE

_PARTITIONS = 4
_POLL = 2_000
_COMMIT_EVERY = 20_000


def make_batches(events: int, seed: int) -> list[tuple[list[Message], list[Transaction]]]:
    """Poll batches (messages, records) of the generator's live events, by partition runs."""
    gen = make_generator(seed)
    now = int(time.time() * 1000)
    out = []
    for start in range(0, events, _POLL):
        evs = gen.batch(min(_POLL, events - start), now + start)
        parts = [zlib.crc32(e.key) % _PARTITIONS for e in evs]
        order = sorted(range(len(evs)), key=parts.__getitem__)
        msgs, recs = [], []
        offsets = [start] * _PARTITIONS
        for i in order:
            p = parts[i]
            msgs.append(Message(topic="in", partition=p, offset=offsets[p], key=evs[i].key))
            offsets[p] += 1
            recs.append(Transaction.model_validate_json(evs[i].value))
        out.append((msgs, recs))
    return out


class _Clock:
    """CPU seconds per named part, and the collector's passes."""

    def __init__(self) -> None:
        self.parts: dict[str, float] = {}
        self._gc_start = 0.0
        self.gc = 0.0
        gc.callbacks.append(self._on_gc)

    def _on_gc(self, phase: str, _info: dict[str, Any]) -> None:
        if phase == "start":
            self._gc_start = time.process_time()
        else:
            self.gc += time.process_time() - self._gc_start

    def time(self, name: str, fn: Callable[[], Any]) -> Any:
        t0 = time.process_time()
        result = fn()
        self.parts[name] = self.parts.get(name, 0.0) + time.process_time() - t0
        return result

    def close(self) -> None:
        gc.callbacks.remove(self._on_gc)


def _python_parts(stage: StateStage, clock: _Clock, msgs: list[Message], recs: list[Any]) -> None:
    """The Python path's compute, part by part (the same work as StateStage.compute)."""
    ts = clock.time("columns (attrgetter)", lambda: list(map(stage._ts, recs)))
    cols = clock.time("columns (attrgetter)", lambda: [list(map(g, recs)) for g in stage._fields])
    offsets = clock.time("message offsets/keys", lambda: [m.offset() for m in msgs])
    keys = clock.time("message offsets/keys", lambda: [m.key() for m in msgs])
    parts = [m.partition() for m in msgs]
    first = stage.partition("in", parts[0])
    rows = clock.time("rows() (vocabulary)", lambda: first.rows(ts, offsets, cols))
    out: list[float] = []
    start = 0
    while start < len(parts):
        end = start
        while end < len(parts) and parts[end] == parts[start]:
            end += 1
        state = stage.partition("in", parts[start])
        k, r = keys[start:end], rows[start:end]
        clock.time("apply_many", lambda s=state, k=k, r=r: s.apply_many(k, r, out))
        start = end
    clock.time("np.array of the output", lambda: np.array(out, dtype=np.float64))


def run(path: str, batches: list, clock: _Clock) -> None:
    """One stage over the batches: compute (timed in parts on the Python path), commits."""
    assert PIPELINE.state is not None
    stage = StateStage(PIPELINE.state, native=path == "native")
    log = StateChangelog(stage, "in.state", lambda *a: None)
    done = 0
    for i, (msgs, recs) in enumerate(batches):
        if path == "python-parts":
            _python_parts(stage, clock, msgs, recs)
        else:
            clock.time(f"{path}: compute", lambda m=msgs, r=recs: stage.compute(m, r))
        done += len(msgs)
        if done % _COMMIT_EVERY < _POLL or i == len(batches) - 1:  # and one at the end
            clock.time(f"{path}: changelog at commit", lambda: log.begin().wait(0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--path", choices=("both", "python", "native"), default="both")
    parser.add_argument("--seed", type=int, default=None, help="default: from the clock")
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else time.time_ns() % 2**31
    batches = make_batches(args.events, seed)
    print(f"{args.events:,} events (seed {seed}) in {len(batches)} poll batches")
    paths = {"both": ["python", "native"], "python": ["python"], "native": ["native"]}[args.path]
    if C_STATE is None and "native" in paths:  # it would run the Python path under its name
        print("  the C extension is not built (pip install -e .): the Python path only")
        paths = ["python"]
    for path in [*paths, "python-parts"] if "python" in paths else paths:
        gc.collect()
        clock = _Clock()
        run(path, batches, clock)
        clock.close()
        for name, s in clock.parts.items():
            print(f"  {name:<34} {s / args.events * 1e6:6.2f} us/event")
        print(f"  {path + ': collector passes':<34} {clock.gc / args.events * 1e6:6.2f} us/event")


if __name__ == "__main__":
    main()
