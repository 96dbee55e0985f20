"""The state stage: features equal a brute-force recomputation, replays change nothing."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from loadtests.state_check import brute_force, mismatches, stream
from streaming.state import Aggregate, PartitionState, StateSpec, StateStage, history_features
from streaming.state.changelog import StateChangelog
from streaming.state.codec import META_KEY
from streaming.state.restore import PartitionLoader

H = 3_600_000
SPEC = StateSpec(
    ts_field="ts",
    grace_ms=120_000,
    replay_margin_ms=600_000,
    aggregates=(
        Aggregate("n_1h", "count", H),
        Aggregate("sum_24h", "sum", 24 * H, "amount"),
        Aggregate("mean_30d", "mean", 30 * 24 * H, "amount", default=-1.0),
        Aggregate("max_1h", "max", H, "amount", default=-2.0),
        Aggregate("shops_24h", "distinct", 24 * H, "shop", cap=3),
        Aggregate("last_amount", "last", 24 * H, "amount", default=-3.0),
        Aggregate("since_last", "since_last", 30 * 24 * H),
    ),
)


def _events(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """A random stream: skewed keys, time ticks with ties, out-of-order events within the
    grace period, late ones past it, and gaps longer than the longest window (expiry)."""
    rng = np.random.default_rng(seed)
    keys = rng.integers(0, 4_000, size=n)
    hot = rng.random(n) < 0.1
    keys[hot] = rng.integers(0, 10, size=int(hot.sum()))  # ten busy keys, ~1,000 events each
    step = rng.choice([0, 1_000, 60_000, 600_000], size=n, p=[0.2, 0.4, 0.3, 0.1])
    step[rng.random(n) < 0.0005] = 40 * 24 * H  # the whole partition jumps past the horizon
    ts = 1_700_000_000_000 + np.cumsum(step)
    shift = rng.random(n)
    ts = ts - np.where(shift < 0.05, rng.integers(0, 120_000, size=n), 0)  # within grace
    ts = ts - np.where(shift > 0.995, rng.integers(200_000, 30 * H, size=n), 0)  # late
    fields = {
        "amount": np.round(rng.lognormal(3, 1, size=n), 2),
        "shop": rng.integers(0, 8, size=n).astype(str).astype(object),
    }
    return keys, ts, fields


def test_features_equal_a_brute_force_recomputation_for_every_event() -> None:
    keys, ts, fields = _events(100_000, seed=11)
    prev = np.maximum.accumulate(ts)[:-1]
    assert (ts[1:] < prev - SPEC.grace_ms).sum() > 300  # late events are in the test
    assert ((ts[1:] < prev) & (ts[1:] >= prev - SPEC.grace_ms)).sum() > 3_000  # out of order
    got = stream(SPEC, keys, ts, fields)
    want = brute_force(SPEC, keys, ts, fields)
    assert mismatches(SPEC, got, want) == dict.fromkeys(SPEC.names, 0)
    # the defaults, caps and expiry were exercised, not only the easy middle
    assert (got[:, 3] == -2.0).any() and (got[:, 4] == 3.0).any()
    assert (got[:, 6] == 30 * 24 * 3600.0).sum() > 5_000


def test_a_replay_is_scored_as_the_first_run_and_counted_once() -> None:
    keys, ts, fields = _events(20_000, seed=5)
    # exact while the partition's event time moved on by less than the replay margin since
    # the replayed offset: here it moved by what the stream's 3,000 events span
    moved = int(ts[:15_000].max() - ts[:12_000].max())
    spec = dataclasses.replace(SPEC, replay_margin_ms=moved + 1)
    cols = [fields[f].tolist() for f in spec.fields]
    first = stream(spec, keys, ts, fields)
    state = PartitionState(spec)
    for o in range(15_000):
        state.apply(int(keys[o]), o, int(ts[o]), [c[o] for c in cols])
    held = sum(len(rows) for rows in state.keys.values())
    # a crash: offsets from 12,000 are read again (and the ones after, for the first time)
    again = [
        state.apply(int(keys[o]), o, int(ts[o]), [c[o] for c in cols])
        for o in range(12_000, 15_000)
    ]
    assert sum(len(rows) for rows in state.keys.values()) == held  # nothing counted twice
    again += [
        state.apply(int(keys[o]), o, int(ts[o]), [c[o] for c in cols])
        for o in range(15_000, 20_000)
    ]
    assert np.array_equal(np.array(again), first[12_000:])


def test_expired_keys_leave_memory() -> None:
    state = PartitionState(SPEC)
    for k in range(3_000):
        state.apply(k, k, 1_700_000_000_000 + k, [1.0, "a"])
    assert len(state) == 3_000
    state.apply("late-comer", 3_000, 1_700_000_000_000 + 32 * 24 * H, [1.0, "a"])
    assert state.expire() == 3_000
    assert list(state.keys) == ["late-comer"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "x", "kind": "median", "window_ms": 1}, "kind 'median' is not one of"),
        ({"name": "x", "kind": "sum", "window_ms": 1}, "kind sum needs a field"),
        ({"name": "x", "kind": "count", "window_ms": 0}, "window_ms must be > 0"),
    ],
)
def test_a_wrong_aggregate_fails_with_its_name(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=f"state aggregate 'x': {message}"):
        Aggregate(**kwargs)


class _Msg:
    def __init__(self, partition: int, offset: int, key: bytes) -> None:
        self._p, self._o, self._k = partition, offset, key

    def topic(self) -> str:
        return "in"

    def partition(self) -> int:
        return self._p

    def offset(self) -> int:
        return self._o

    def key(self) -> bytes:
        return self._k


class _Rec:
    def __init__(self, ts: int, amount: float, shop: str) -> None:
        self.ts, self.amount, self.shop = ts, amount, shop


def test_the_stage_keeps_one_state_per_partition_and_forgets_a_revoked_one() -> None:
    keys, ts, fields = _events(6_000, seed=9)
    part = keys % 3  # a key always lands in one partition, as with Kafka
    recs = [
        _Rec(int(t), a, s) for t, a, s in zip(ts, fields["amount"], fields["shop"], strict=True)
    ]
    msgs, offset = [], [0, 0, 0]
    for k, p in zip(keys.tolist(), part.tolist(), strict=True):
        msgs.append(_Msg(p, offset[p], b"%d" % k))
        offset[p] += 1
    stage = StateStage(SPEC)
    # polls of runs of one partition and of mixed ones
    got = np.concatenate(
        [stage.compute(msgs[i : i + 700], recs[i : i + 700]) for i in range(0, 6_000, 700)]
    )
    for p in range(3):
        rows = np.flatnonzero(part == p)
        want = history_features(SPEC, [msgs[i].key() for i in rows], [recs[i] for i in rows])
        assert np.array_equal(got[rows], want)
    before, in_1 = stage.keys(), len(stage.partitions[("in", 1)])
    assert in_1 > 500
    stage.drop("in", 1)
    assert ("in", 1) not in stage.partitions and stage.keys() == before - in_1


def test_a_state_restored_from_its_changelog_scores_a_replay_as_the_first_run() -> None:
    """Changes written at commits, compacted to the last record per key, and half of a commit
    a crash cut short, restored into a process whose vocabulary codes differ: the events
    after the last committed offset, read again, then new ones, get the first run's features
    (the restore is exact; the cut commit's records are left out)."""
    keys, ts, fields = _events(20_000, seed=7)
    moved = int(ts[:15_000].max() - ts[:12_000].max())
    spec = dataclasses.replace(SPEC, replay_margin_ms=moved + 1)
    cols = [fields[f].tolist() for f in spec.fields]
    bkeys = [str(k).encode() for k in keys.tolist()]
    first = stream(spec, keys, ts, fields)
    compacted: dict[tuple[int, bytes], bytes | None] = {}

    def produce(topic, value, key, partition, on_delivery):  # type: ignore[no-untyped-def]
        compacted.pop((partition, key), None)  # compaction keeps a key's last record, at its place
        compacted[(partition, key)] = value
        if on_delivery is not None:  # partition records only
            on_delivery(None, None)

    stage = StateStage(spec)
    changelog = StateChangelog(stage, "in.state", produce)
    state = stage.partition("in", 0)
    for o in range(15_000):
        state.apply(bkeys[o], o, int(ts[o]), [c[o] for c in cols])
        if o % 1_000 == 999:
            assert changelog.begin().advance()
    assert any(v is None for v in compacted.values())  # expired keys went as tombstones
    # then a crash in the middle of the next commit: half of its key records landed, not its
    # partition record (produced after them, in order)
    for o in range(15_000, 16_000):
        state.apply(bkeys[o], o, int(ts[o]), [c[o] for c in cols])
    # (they are the log's newest, in its active segment, which Kafka never compacts)
    cut: list[tuple[bytes, bytes | None]] = []
    StateChangelog(stage, "in.state", lambda t, v, k, p, d: cut.append((k, v))).begin()
    assert cut[-1][0] == META_KEY and META_KEY not in {k for k, _v in cut[: len(cut) // 2]}
    log = [*((key, value) for (_part, key), value in compacted.items()), *cut[: len(cut) // 2]]

    restored = StateStage(spec)
    restored.codes["a shop the first process never saw"]  # other codes than the first's
    again = restored.partition("in", 0)
    loader = PartitionLoader(again, restored)
    for key, value in log:
        loader.feed(key, value)
    assert again.applied == 14_999
    out = [
        again.apply(bkeys[o], o, int(ts[o]), [c[o] for c in cols]) for o in range(12_000, 20_000)
    ]
    assert len(cut) > 100  # the cut commit had records to leave out
    assert np.array_equal(np.array(out), first[12_000:])


def test_only_each_partitions_record_is_acked_and_it_follows_that_partitions_keys() -> None:
    """A commit's key records and tombstones go without a delivery report (a report is a GIL
    round trip each); each partition's record goes after them with one, and the commit is
    written once those are acked: in-order, gapless producers make that ack vouch for the
    keys before it (streaming.state.changelog)."""
    sent: list[tuple[int, bytes, bool]] = []
    acks: list = []

    def produce(topic, value, key, partition, on_delivery):  # type: ignore[no-untyped-def]
        sent.append((partition, key, on_delivery is not None))
        if on_delivery is not None:
            acks.append(on_delivery)

    stage = StateStage(SPEC)
    for p in (0, 1):
        for o in range(50):
            stage.partition("in", p).apply(b"k%d" % (o % 7), o, 1_000_000 + o, [1.0, "s"])
    commit = StateChangelog(stage, "in.state", produce).begin()
    for p in (0, 1):
        mine = [(key, acked) for part, key, acked in sent if part == p]
        assert mine[-1] == (META_KEY, True)
        assert len(mine) == 8 and not any(acked for _key, acked in mine[:-1])
    assert not commit.advance()
    acks[0](None, None)
    assert not commit.advance()  # one partition's record is not acked yet
    acks[1](None, None)
    assert commit.advance()
