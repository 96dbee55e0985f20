"""Memory of the state stage with a million distinct cards: bounded by key expiry.

    python -m loadtests.state_soak [--cards 1000000] [--days 120] [--events-per-card 3]

One partition's state (the fraud pipeline's declaration, pipelines/fraud/state.py) takes a
stream in which every card is active for a week at a random point of ``--days`` of event
time, with its changes written to a changelog at every 20,000 events (records counted, not
sent: the writer's dirty and expired-key sets are part of what must stay bounded). Every
``--every`` events it prints the event day, the distinct cards seen so far, the keys held and
the process's RSS. The keys held level off at the cards active within the horizon (30-day
window + grace + replay margin) while the cards seen keep growing: what is held is bounded by
expiry, not by how many cards ever came. Merchant and country ids are coded in a per-process
vocabulary, pruned of the values no held key uses once it has doubled (StateStage.prune): with
``--merchants`` far above the events (an id that never repeats) it levels off too.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np

from pipelines.fraud.state import STATE
from streaming.state.changelog import StateChangelog
from streaming.state.restore import PartitionLoader
from streaming.state.stage import PRUNE_MIN, StateStage
from streaming.state.store import PartitionState

_DAY = 86_400_000


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def stream(cards: int, days: int, per_card: int, merchants: int, seed: int):  # type: ignore[no-untyped-def]
    """(card, ts, amount, country, merchant) arrays in event-time order."""
    rng = np.random.default_rng(seed)
    start = rng.integers(0, (days - 7) * _DAY, size=cards)
    card = np.repeat(np.arange(cards), per_card)
    ts = np.repeat(start, per_card) + rng.integers(0, 7 * _DAY, size=cards * per_card)
    order = np.argsort(ts, kind="stable")
    card, ts = card[order], ts[order] + 1_700_000_000_000
    n = len(ts)
    amount = np.round(rng.lognormal(3.5, 1.0, size=n), 2)
    country = rng.integers(0, 60, size=n)
    merchant = rng.integers(0, merchants, size=n)
    return card, ts, amount, country, merchant


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--cards", type=int, default=1_000_000)
    p.add_argument("--days", type=int, default=120)
    p.add_argument("--events-per-card", type=int, default=3)
    p.add_argument("--merchants", type=int, default=100_000)
    p.add_argument("--every", type=int, default=500_000, help="print a line every N events")
    p.add_argument(
        "--no-prune",
        action="store_true",
        help="never prune the vocabulary (to compare: it then grows with every value seen)",
    )
    p.add_argument("--seed", type=int, default=5)
    args = p.parse_args()
    if args.days <= 7:
        p.error("--days must be more than 7 (each card is active for a week)")

    t0 = time.perf_counter()
    card, ts, amount, country, merchant = stream(
        args.cards, args.days, args.events_per_card, args.merchants, args.seed
    )
    n = len(ts)
    print(
        f"{n:,} events of {args.cards:,} cards over {args.days} days of event time "
        f"(generated in {time.perf_counter() - t0:.1f} s); horizon "
        f"{STATE.horizon_ms / _DAY:.2f} days"
    )
    stage = StateStage(STATE, prune_min=2**62 if args.no_prune else PRUNE_MIN)
    state = stage.partition("soak", 0)
    written = 0

    def count(_topic: str, _value: object, _key: object, _part: int, done: Any) -> None:
        nonlocal written
        written += 1
        if done is not None:  # a partition record: acked at once
            done(None, None)

    changelog = StateChangelog(stage, "soak.state", count)
    print(
        f"{'events':>10} {'event day':>9} {'cards seen':>10} {'keys held':>10} "
        f"{'vocabulary':>10} {'RSS MB':>7}"
    )
    base = rss_mb()
    peak = base
    chunk = 20_000
    started = time.perf_counter()
    for lo in range(0, n, chunk):
        hi = min(n, lo + chunk)
        # the chunk as the worker's poll batch would give it: built here, dropped after
        keys = [f"card-{c:07d}".encode() for c in card[lo:hi].tolist()]
        fields = {
            "amount": amount[lo:hi].tolist(),
            "country": [f"C{c:02d}" for c in country[lo:hi].tolist()],
            "merchant_id": [f"m-{m:06d}" for m in merchant[lo:hi].tolist()],
        }
        cols = [fields[f] for f in STATE.fields]
        out: list[float] = []
        state.apply_many(keys, state.rows(ts[lo:hi].tolist(), range(lo, hi), cols), out)
        stage.maybe_prune()  # as the stage's compute does after each batch
        changelog.begin().advance()
        if hi // args.every != lo // args.every or hi == n:
            seen = len(np.unique(card[:hi])) if hi < n else args.cards
            rss = rss_mb()
            peak = max(peak, rss)
            day = (int(ts[hi - 1]) - int(ts[0])) / _DAY
            print(
                f"{hi:>10,} {day:>9.1f} {seen:>10,} {len(state):>10,} "
                f"{len(stage.codes.values):>10,} {rss:>7.0f}"
            )
    took = time.perf_counter() - started
    print(
        f"done: {n:,} events in {took:.1f} s ({took / n * 1e6:.1f} us per event, changelog "
        f"writes included); {written:,} changelog records; RSS {base:.0f} MB before the "
        f"stream, peak {peak:.0f} MB; keys held at the end {len(state):,} of "
        f"{args.cards:,} cards; vocabulary {len(stage.codes):,} values"
    )
    restore_held(stage, state)


def restore_held(stage: StateStage, state: PartitionState) -> None:
    """What a restore of this partition costs in the process (decoding, no broker): every
    held key written once, as a compacted changelog holds it, read into a new process's
    state with a vocabulary of its own."""
    log: list[tuple[bytes, bytes | None]] = []

    def keep(_topic: str, value: bytes | None, key: bytes, _part: int, done: Any) -> None:
        log.append((key, value))
        if done is not None:
            done(None, None)

    state.dirty.update(state.keys)
    changelog = StateChangelog(stage, "soak.state", keep)
    changelog._written.clear()
    assert changelog.begin().advance()
    fresh = StateStage(STATE)
    again = fresh.partition("soak", 0)
    loader = PartitionLoader(again, fresh)
    started = time.perf_counter()
    for key, value in log:
        loader.feed(key, value)
    took = time.perf_counter() - started
    assert len(again) == len(state) and again.applied == state.applied
    size = sum(len(v or b"") for _, v in log)
    print(
        f"restore of the held state: {len(again):,} keys from {len(log):,} records "
        f"({size / 1e6:.0f} MB) in {took:.1f} s ({took / len(log) * 1e6:.1f} us per record, "
        "decoding only: reading them from the broker comes on top)"
    )


if __name__ == "__main__":
    main()
