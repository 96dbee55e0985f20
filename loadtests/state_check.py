"""The state stage against a brute-force recomputation over the whole history, event by event.

    python -m loadtests.state_check [--events 1000000] [--seed 3]

The events are the fraud generator's history (per-card habits, bursts, out-of-order events
within the grace period and late ones past it), read as one partition in generation order.
The stage (streaming.state) computes each event's features as the worker would; the brute
force computes them again with numpy from the semantics in streaming/state/store.py, each
event against every earlier event of its card. Counts, distinct counts, maxima, last values
and times must be equal; sums and means equal to a relative 1e-9 (numpy sums in another order
than math.fsum).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Mapping

import numpy as np

from streaming.state.spec import StateSpec
from streaming.state.store import PartitionState


def brute_force(
    spec: StateSpec, keys: np.ndarray, ts: np.ndarray, fields: Mapping[str, np.ndarray]
) -> np.ndarray:
    """Each event's features (rows in offset order) from the whole history, key by key."""
    n = len(ts)
    ts = ts.astype(np.int64)
    prev_max = np.empty(n, dtype=np.int64)
    prev_max[0] = np.iinfo(np.int64).min // 2
    if n > 1:
        prev_max[1:] = np.maximum.accumulate(ts)[:-1]
    late = ts < prev_max - spec.grace_ms
    t_eff = np.where(late, prev_max, ts)
    out = np.zeros((n, len(spec.aggregates)), dtype=np.float64)
    order = np.argsort(keys, kind="stable")
    bounds = np.flatnonzero(np.diff(keys[order])) + 1
    for idx in np.split(order, bounds):
        _group(spec, idx, ts, t_eff, ~late, fields, out)
    return out


def _group(spec, idx, ts, t_eff, accepted, fields, out) -> None:  # type: ignore[no-untyped-def]
    m = len(idx)
    T, E, A = ts[idx], t_eff[idx], accepted[idx]
    earlier = np.tri(m, m, -1, dtype=bool) & A[None, :]
    rank = np.empty(m, dtype=np.int64)
    rank[np.lexsort((np.arange(m), T))] = np.arange(m)
    for slot, a in enumerate(spec.aggregates):
        M = earlier & (T[None, :] > (E - a.window_ms)[:, None]) & (T[None, :] <= E[:, None])
        count = M.sum(axis=1)
        empty = count == 0
        if a.kind == "count":
            col = count.astype(np.float64)
        elif a.kind in ("last", "since_last"):
            j = np.where(M, rank[None, :], -1).argmax(axis=1)
            if a.kind == "since_last":
                col = (E - T[j]) / 1000.0
                col[empty] = a.default if a.default != 0.0 else a.window_ms / 1000.0
            else:
                col = np.asarray(fields[a.field][idx], dtype=np.float64)[j]
                col[empty] = a.default
        elif a.kind == "distinct":
            _, codes = np.unique(fields[a.field][idx], return_inverse=True)
            onehot = np.zeros((m, codes.max() + 1), dtype=np.int64)
            onehot[np.arange(m), codes] = 1
            col = np.minimum((M.astype(np.int64) @ onehot > 0).sum(axis=1), a.cap)
            col = col.astype(np.float64)
        else:
            v = np.asarray(fields[a.field][idx], dtype=np.float64)
            if a.kind == "max":
                col = np.where(M, v[None, :], -np.inf).max(axis=1)
                col[empty] = a.default
            else:
                col = (M * v[None, :]).sum(axis=1)
                if a.kind == "mean":
                    col = np.where(empty, a.default, col / np.maximum(count, 1))
        out[idx, slot] = col


def stream(
    spec: StateSpec, keys: np.ndarray, ts: np.ndarray, fields: Mapping[str, np.ndarray]
) -> np.ndarray:
    """The same events through one PartitionState, offset = position."""
    state = PartitionState(spec)
    rows = state.rows(ts.tolist(), range(len(ts)), [fields[f].tolist() for f in spec.fields])
    out: list[float] = []
    state.apply_many(keys.tolist(), rows, out)
    return np.array(out, dtype=np.float64).reshape(len(ts), len(spec.aggregates))


def mismatches(spec: StateSpec, got: np.ndarray, want: np.ndarray) -> dict[str, int]:
    """Events whose feature differs, per aggregate (exact, but sums/means to 1e-9)."""
    out = {}
    for slot, a in enumerate(spec.aggregates):
        g, w = got[:, slot], want[:, slot]
        exact = a.kind not in ("sum", "mean")
        bad = g != w if exact else ~np.isclose(g, w, rtol=1e-9, atol=1e-9)
        out[a.name] = int(bad.sum())
    return out


def main() -> None:
    from pipelines.fraud import PIPELINE
    from pipelines.fraud.generator import FraudGenerator

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--cards", type=int, default=50_000)
    args = parser.parse_args()
    spec = PIPELINE.state
    assert spec is not None
    started = time.monotonic()
    cols, _ = FraudGenerator(args.seed, n_cards=args.cards).history_columns(args.events)
    keys, ts = cols["card"], cols["ts_ms"]
    fields = {f: cols[f] for f in spec.fields}
    prev_max = np.maximum.accumulate(ts)
    late = int((ts[1:] < prev_max[:-1] - spec.grace_ms).sum())
    ooo = int((ts[1:] < prev_max[:-1]).sum()) - late
    print(
        f"{len(ts):,} events, {len(np.unique(keys)):,} cards: {ooo:,} out of order within "
        f"grace, {late:,} late past it ({time.monotonic() - started:.1f} s)",
        flush=True,
    )
    t0 = time.monotonic()
    got = stream(spec, keys, ts, fields)
    t1 = time.monotonic()
    want = brute_force(spec, keys, ts, fields)
    t2 = time.monotonic()
    bad = mismatches(spec, got, want)
    print(
        f"stage {t1 - t0:.1f} s ({(t1 - t0) / len(ts) * 1e6:.2f} us/event), "
        f"brute force {t2 - t1:.1f} s",
        flush=True,
    )
    total = len(ts) * len(spec.aggregates)
    wrong = sum(bad.values())
    for name, k in bad.items():
        print(f"  {name}: {len(ts) - k:,}/{len(ts):,} equal")
    print(f"{'OK' if wrong == 0 else 'MISMATCH'}: {total - wrong:,}/{total:,} features equal")
    raise SystemExit(0 if wrong == 0 else 1)


if __name__ == "__main__":
    main()
