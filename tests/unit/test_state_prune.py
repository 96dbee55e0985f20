"""The vocabulary of distinct-only fields is pruned (StateStage.prune): with values that never
repeat (a device id), its size stays bounded by what the keys still hold, as expiry bounds the
keys; no feature changes, on both paths; the changelog then writes the values, not stale codes,
and a restore from it gives back the same state."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from confluent_kafka import Message

from streaming.state import Aggregate, StateSpec, StateStage
from streaming.state.changelog import StateChangelog
from streaming.state.codec import META_KEY, decode_rows
from streaming.state.store import C_STATE, PartitionState

S = 1_000
SPEC = StateSpec(
    ts_field="ts",
    grace_ms=2 * S,
    replay_margin_ms=5 * S,
    aggregates=(
        Aggregate("devices_30s", "distinct", 30 * S, "device", cap=8),
        Aggregate("shops_10s", "distinct", 10 * S, "shop", cap=4),
        Aggregate("n_30s", "count", 30 * S),
    ),
)
"""Short windows (horizon 37 s): keys and rows age out within a few hundred events here."""


def _stream(seed: int, batches: int) -> list[tuple[list[Message], list[SimpleNamespace]]]:
    """Poll batches over 3 partitions: 300 cards, a new device id on every event (it never
    repeats), shops from a small set, time moving 80 ms an event on average (out of
    order within the grace period sometimes, late past it now and then)."""
    rng = np.random.default_rng(seed)
    offsets = [0, 0, 0]
    t = 1_700_000_000_000
    out = []
    serial = 0
    for _ in range(batches):
        cards = rng.integers(0, 300, size=int(rng.integers(1, 120)))
        msgs, records = [], []
        for card in sorted(cards.tolist(), key=lambda c: c % 3):  # runs of one partition
            p = card % 3  # a key's partition, as the producer's partitioner keeps it
            t += int(rng.choice([0, 200, 400, 800, -1_000]))
            serial += 1
            key = b"card-%d" % card
            msgs.append(Message(topic="in", partition=p, offset=offsets[p], key=key))
            offsets[p] += 1
            records.append(
                SimpleNamespace(ts=t, device=f"dev-{serial}", shop=f"shop-{rng.integers(0, 9)}")
            )
        out.append((msgs, records))
    return out


@pytest.mark.parametrize("native", [True, False])
def test_pruning_keeps_every_feature_and_bounds_the_vocabulary(native: bool) -> None:
    stream = _stream(seed=11, batches=250)
    pruned = StateStage(SPEC, native=native, prune_min=256)
    unpruned = StateStage(SPEC, native=native, prune_min=10**9)
    sizes = []
    for msgs, records in stream:
        a, b = pruned.compute(msgs, records), unpruned.compute(msgs, records)
        assert a.tobytes() == b.tobytes()
        sizes.append(len(pruned.codes.values))
    events = sum(len(m) for m, _ in stream)
    assert len(unpruned.codes.values) > events  # every device, and the shops
    assert pruned.codes.generation >= 5  # it ran, again and again
    held = _values_held(pruned)
    assert max(sizes) < max(256, 2 * len(held)) + 120  # a batch's new values on top at most
    assert set(held) <= set(pruned.codes.values)
    assert len(pruned.codes) == len(pruned.codes.values)  # the dict and the list agree
    for tp, state in pruned.partitions.items():  # the same rows, read back as values
        twin = unpruned.partitions[tp]
        assert _as_values(state, pruned) == _as_values(twin, unpruned)


def test_the_changelog_after_a_prune_writes_values_and_restores_the_same_state() -> None:
    stage = StateStage(SPEC, prune_min=256)
    records: list[tuple[int, bytes | None, bytes | None]] = []
    changelog = StateChangelog(stage, "s", lambda t, v, k, p, d: records.append((p, k, v)))
    for i, (msgs, recs) in enumerate(_stream(seed=4, batches=200)):
        stage.compute(msgs, recs)
        if i % 7 == 0:  # commits between prunes, and prunes between commits
            changelog.begin()
    changelog.begin()
    assert stage.codes.generation >= 3
    for tp, state in stage.partitions.items():
        restored = StateStage(SPEC)
        again = restored.partition(*tp)
        held: dict[bytes, bytes] = {}
        for part, key, value in records:  # in the order written, as a restore reads them
            if part != tp[1] or key == META_KEY or key is None:
                continue
            if value is None:
                held.pop(key, None)
            else:
                held[key] = value
        for key, value in held.items():
            if key in state.keys:
                again.keys[key] = decode_rows(
                    value, again.coded_columns, again.stride, restored.codes
                )
        assert set(again.keys) == set(state.keys)
        assert _as_values(again, restored) == _as_values(state, stage)


def test_rows_holding_a_code_past_the_vocabulary_are_refused_before_anything_changes() -> None:
    assert C_STATE is not None
    stage = StateStage(SPEC, prune_min=10**9)
    for msgs, records in _stream(seed=2, batches=5):
        stage.compute(msgs, records)
    state = next(iter(stage.partitions.values()))
    rows = next(iter(state.keys.values()))
    rows[state.coded_columns[0]] = float(len(stage.codes.values) + 5)
    before = list(stage.codes.values)
    with pytest.raises(ValueError, match="not one of the vocabulary"):
        stage.prune()
    assert stage.codes.values == before and stage.codes.generation == 0


def _values_held(stage: StateStage) -> list[object]:
    values = stage.codes.values
    return [
        values[int(c)]
        for s in stage.partitions.values()
        for rows in s.keys.values()
        for col in s.coded_columns
        for c in rows[col :: s.stride]
    ]


def _as_values(state: PartitionState, stage: StateStage) -> dict[object, list[object]]:
    """A partition's rows with codes read back as the values they stand for."""
    values = stage.codes.values
    out = {}
    for key, rows in state.keys.items():
        row = list(rows)
        for col in state.coded_columns:
            for i in range(col, len(row), state.stride):
                row[i] = values[int(row[i])]
        out[key] = row
    return out
