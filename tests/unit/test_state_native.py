"""The state stage's C path (streaming.state._state_c) against its Python path: the same
features to the last bit and the same state, on random histories; fsum as math.fsum."""

from __future__ import annotations

import gc
import math
from array import array
from types import SimpleNamespace

import numpy as np
import pytest
from confluent_kafka import KafkaError, Message
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streaming.state import Aggregate, PartitionState, StateSpec, StateStage
from streaming.state.changelog import Snapshot, StateChangelog
from streaming.state.codec import META_KEY, Labels, decode_rows, encode_rows
from streaming.state.store import C_STATE, Vocabulary


def test_the_c_extension_is_built() -> None:
    """setup.py builds it at install (make install); without it every other test here fails."""
    assert C_STATE is not None, "streaming.state._state_c missing: pip install -e . again"


S = 1_000
SPEC = StateSpec(
    ts_field="ts",
    grace_ms=5 * S,
    replay_margin_ms=20 * S,
    aggregates=(
        Aggregate("n_10s", "count", 10 * S),
        Aggregate("sum_60s", "sum", 60 * S, "amount"),
        Aggregate("mean_300s", "mean", 300 * S, "amount", default=-1.0),
        Aggregate("max_10s", "max", 10 * S, "amount", default=-2.0),
        Aggregate("shops_60s", "distinct", 60 * S, "shop", cap=3),
        Aggregate("amounts_60s", "distinct", 60 * S, "amount", cap=4),
        Aggregate("last_60s", "last", 60 * S, "amount", default=-3.0),
        Aggregate("since_300s", "since_last", 300 * S),
    ),
)
"""Short windows, so that small random histories fill, slide past and expire them; distinct
over a numeric field too (doubles, not vocabulary codes)."""

AMOUNTS = st.one_of(
    st.sampled_from([0.0, -0.0]),  # equal, with other bits: distinct and max ties
    st.sampled_from([1.0, 0.1, 1e300, -1e300, 1e-300, 5e-324, 1e16, -1e16, 2.5]),
    st.floats(-1e6, 1e6, allow_nan=False),
    st.floats(allow_nan=False, allow_infinity=False, min_value=-1e300, max_value=1e300),
)
_FORWARD = [0, 0, 1, 999, 1_000, 4_000, 10_000, 30_000, 60_000, 325_000, 400_000]
STEPS = st.sampled_from([*_FORWARD, -3_000, -5_000, -5_001, -10_000])
"""Event time steps: ties, in order, window lengths (an event at exactly t - window is out),
the horizon (325 s: rows exactly that old are pruned), a jump past it (keys expire); out of
order within the grace period (-3 s, exactly -5 s), late past it (-5.001 s, -10 s)."""

EVENTS = st.lists(
    st.tuples(st.integers(0, 3), STEPS, AMOUNTS, st.sampled_from(["a", "b", "c", "d", "e"])),
    min_size=1,
    max_size=120,
)
DELIVERIES = st.lists(st.tuples(st.floats(0, 1), st.floats(0, 1), st.integers(1, 40)), max_size=4)
"""Re-reads after the first pass: (rewind to this share, read to that share, in chunks of)."""


def _state_of(state: PartitionState) -> dict:
    return {
        "keys": [(k, rows.tobytes()) for k, rows in state.keys.items()],
        "applied": state.applied,
        "wm": state.wm,
        "late": state.late,
        "dirty": state.dirty,
        "gone": state.gone,
        "since_expiry": state._since_expiry,
        "codes": (list(state.codes.items()), state.codes.values),
    }


def _feed(state: PartitionState, cols: tuple, start: int, end: int, chunk: int) -> bytes:
    keys, ts, offsets, amounts, shops = cols
    coded = state.coded([amounts, shops])
    out = np.full((len(keys), len(SPEC.aggregates)), np.nan)
    for s in range(start, end, chunk):
        state.apply_columns(keys, ts, offsets, coded, s, min(end, s + chunk), out)
    return out[start:end].tobytes()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(EVENTS, st.integers(1, 50), DELIVERIES, st.booleans())
def test_the_c_path_keeps_the_python_paths_features_and_state(
    events: list, chunk: int, deliveries: list, expire: bool
) -> None:
    ts, t = [], 1_700_000_000_000
    for _key, step, _amount, _shop in events:
        t = max(t + step, 1_700_000_000_000)
        ts.append(t)
    cols = (
        [f"card-{k}".encode() for k, *_ in events],
        ts,
        list(range(len(events))),
        [a for _k, _s, a, _sh in events],
        [sh for *_, sh in events],
    )
    states = [PartitionState(SPEC, native=True), PartitionState(SPEC, native=False)]
    assert states[0].native and not states[1].native
    n = len(events)
    runs = [(0, n, chunk)] + [
        (int(a * n), max(int(a * n), int(b * n)), c) for a, b, c in deliveries
    ]  # replays of earlier offsets, and new ones past them
    for start, end, size in runs:
        got = [_feed(s, cols, start, end, size) for s in states]
        assert got[0] == got[1]
        assert _state_of(states[0]) == _state_of(states[1])
        if expire:
            assert states[0].expire() == states[1].expire()
            assert _state_of(states[0]) == _state_of(states[1])


def test_a_replay_is_scored_as_the_first_run_on_the_c_path() -> None:
    """Late and out-of-order events, then the whole run read again: the same features, and
    nothing counted twice (the state is as after the first run)."""
    ts = [10_000, 20_000, 19_000, 40_000, 30_000, 41_000, 1_000, 42_000]  # 30_000, 1_000 late
    cols = ([b"k"] * 8, ts, list(range(8)), [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0], ["x"] * 8)
    state = PartitionState(SPEC, native=True)
    first = _feed(state, cols, 0, 8, 3)
    before = _state_of(state)
    assert set(state.late) == {4, 6}
    assert _feed(state, cols, 0, 8, 8) == first
    after = _state_of(state)
    assert after == {**before, "since_expiry": after["since_expiry"]}


def test_the_c_path_ran_and_its_arrays_are_not_tracked_by_the_collector() -> None:
    """The C path made the arrays (not the Python fallback, whose arrays are tracked)."""
    cols = ([b"a", b"b", b"a"], [5_000, 6_000, 7_000], [0, 1, 2], [1.0, 2.0, 3.0], ["x"] * 3)
    native, python = PartitionState(SPEC, native=True), PartitionState(SPEC, native=False)
    _feed(native, cols, 0, 3, 3)
    _feed(python, cols, 0, 3, 3)
    assert not any(gc.is_tracked(rows) for rows in native.keys.values())
    assert all(gc.is_tracked(rows) for rows in python.keys.values())


def test_a_run_the_c_path_does_not_answer_for_goes_to_the_python_path() -> None:
    """A time past 2**52 (not exact in a double) and a float time: the Python path answers,
    as it would alone; the C path changed nothing before handing over."""
    for ts in ([5_000, 2**53 + 1, 2**53 + 2], [5_000.0, 6_000.5, 7_000.0]):
        cols = ([b"a", b"b", b"a"], ts, [0, 1, 2], [1.0, 2.0, 3.0], ["x"] * 3)
        native, python = PartitionState(SPEC, native=True), PartitionState(SPEC, native=False)
        assert _feed(native, cols, 0, 3, 3) == _feed(python, cols, 0, 3, 3)
        assert _state_of(native) == _state_of(python)
        assert all(gc.is_tracked(rows) for rows in native.keys.values())  # Python made them


def test_the_stage_gives_the_same_matrix_on_both_paths_over_partition_runs() -> None:
    """compute() over poll batches holding runs of several partitions."""
    rng = np.random.default_rng(5)
    stages = [StateStage(SPEC, native=True), StateStage(SPEC, native=False)]
    offsets = [0, 0, 0]
    t = 1_700_000_000_000
    for _batch in range(30):
        n = int(rng.integers(1, 200))
        parts = np.sort(rng.integers(0, 3, size=n)) if rng.random() < 0.7 else np.zeros(n, int)
        msgs, records = [], []
        for p in parts.tolist():
            t += int(rng.choice([0, 500, 2_000, -3_000, -20_000]))
            msgs.append(
                Message(
                    topic="in", partition=p, offset=offsets[p], key=b"k%d" % rng.integers(0, 20)
                )
            )
            offsets[p] += 1
            amount = float(np.round(rng.lognormal(3, 1), 2))
            records.append(SimpleNamespace(ts=t, amount=amount, shop=str(rng.integers(0, 6))))
        got = [s.compute(msgs, records) for s in stages]
        assert got[0].tobytes() == got[1].tobytes()
    for tp, state in stages[0].partitions.items():
        assert _state_of(state) == _state_of(stages[1].partitions[tp])
    for stage in stages:  # the changelog reads a changed key's rows from dirty: the held ones
        for state in stage.partitions.values():
            assert state.dirty and all(rows is state.keys[k] for k, rows in state.dirty.items())


def test_the_stage_answers_replays_and_batches_the_c_path_refuses_as_python_does() -> None:
    """compute() with batches read again (replays by offset) and a batch with a float event
    time (gather refuses it: the column path answers), on both paths."""
    stages = [StateStage(SPEC, native=True), StateStage(SPEC, native=False)]
    t, batches = 1_700_000_000_000, []
    for b in range(12):
        msgs, records = [], []
        for i in range(20):
            t += 700 if i % 7 else -4_000
            msgs.append(
                Message(topic="in", partition=i % 2, offset=b * 10 + i // 2, key=b"k%d" % (i % 5))
            )
            records.append(
                SimpleNamespace(ts=float(t) + 0.5 if b == 5 else t, amount=i * 1.5, shop=str(i % 3))
            )
        batches.append((msgs, records))
    for b, (msgs, records) in enumerate(batches):
        got = [s.compute(msgs, records) for s in stages]
        assert got[0].tobytes() == got[1].tobytes(), b
        if b % 4 == 3:  # read again, as after a crash: each event scored as the first time
            again = [s.compute(msgs, records) for s in stages]
            assert again[0].tobytes() == got[0].tobytes() == again[1].tobytes(), b
    for tp, state in stages[0].partitions.items():
        assert _state_of(state) == _state_of(stages[1].partitions[tp])


class _Shadowed:
    """A record whose ``amount`` property shadows an instance dict entry of that name, and
    whose ``shop`` comes from __getattr__: attribute rules the C gather must keep."""

    def __init__(self, ts: int, amount: float) -> None:
        self.__dict__.update(ts=ts, amount=-1.0, _amount=amount)

    @property
    def amount(self) -> float:
        return self._amount

    def __getattr__(self, name: str) -> str:
        if name == "shop":
            return f"s{int(self._amount) % 3}"
        raise AttributeError(name)


def test_the_c_gather_reads_fields_as_getattr_does() -> None:
    """Pydantic-like records are read through their instance dict; a property of the same
    name, or a field only __getattr__ answers, still give what getattr gives."""
    stages = [StateStage(SPEC, native=True), StateStage(SPEC, native=False)]
    msgs = [Message(topic="in", partition=0, offset=o, key=b"k%d" % (o % 3)) for o in range(30)]
    records = [_Shadowed(1_700_000_000_000 + 1_000 * o, float(o)) for o in range(30)]
    got = [s.compute(msgs, records) for s in stages]
    assert got[0].tobytes() == got[1].tobytes()
    assert got[0][-1, 1] == sum(range(2, 29, 3))  # sum_60s over k2: the property's amounts


ADVERSARIAL = [
    [1e-16, 1.0, 1e16],  # the half-even correction across partials
    [1e308, 1e308, -1e308],  # intermediate overflow
    [1e308, -1e308, 1e308],
    [float("inf"), 1.0, -1e308],
    [float("inf"), float("-inf")],
    [float("nan"), 1.0],
    [float("-inf"), float("-inf"), 5.0],
    [1e100, 1.0, -1e100, 1e-100] * 20,
    [0.1] * 10 + [-1.0],
    [-0.0, -0.0],
    [],
    [2.0**-1074, 2.0**-1074, 1e-300, -1e-300],
    [1.7976931348623157e308, 9.9792015476736e291],  # rounds to the largest double, no inf
    [1.7976931348623157e308, 9.9792015476736e291, -1.7976931348623157e308],
    [1e16, 1.0, 1e-16, -1e16],
]


def _outcome(fsum, values):  # type: ignore[no-untyped-def]
    try:
        r = fsum(values)
    except (OverflowError, ValueError) as exc:
        return (type(exc), str(exc))
    return ("nan",) if math.isnan(r) else (r.hex(),)


@pytest.mark.parametrize("values", ADVERSARIAL)
def test_fsum_is_math_fsum_on_adversarial_inputs(values: list[float]) -> None:
    assert _outcome(C_STATE.fsum, values) == _outcome(math.fsum, values)


@settings(max_examples=500, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.floats(allow_nan=True, allow_infinity=True),
            st.sampled_from([1e308, -1e308, 1e-308, 5e-324, 1e16, 1.0, -1.0, 0.5]),
        ),
        max_size=60,
    )
)
def test_fsum_is_math_fsum_bit_for_bit(values: list[float]) -> None:
    assert _outcome(C_STATE.fsum, values) == _outcome(math.fsum, values)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 2**40), st.floats(), st.integers(0, 11), st.integers(0, 11)),
        max_size=30,
    ),
    st.integers(-1, 2**62),
)
def test_a_changelog_record_is_the_same_bytes_from_c_and_python(
    rows_in: list, applied: int
) -> None:
    """Key records (codec.encode_rows) from both paths, with codes in two columns of plain-text
    values and of others (a JSON table, which Python writes on both paths); they decode
    alike."""
    values: list = ["DE", "m-000001", "é", "GB", "FR", "US", "a", "b", "\udcff", "x\x1fy", 7, None]
    rows = array("d")
    for i, (ts, amount, a, b) in enumerate(rows_in):
        rows.extend([float(ts), float(i), float(a), amount, float(b)])
    coded, stride = [2, 4], 5
    got = []
    for native in (True, False):
        labels = Labels(values)  # each path makes its own entries
        try:
            got.append(encode_rows(rows, coded, stride, labels, applied, native))
        except UnicodeEncodeError:  # a lone surrogate cannot be written, on either path
            got.append(None)
    assert got[0] == got[1]
    if got[0] is None:
        return
    back = [decode_rows(g, coded, stride, Vocabulary()).tobytes() for g in got]
    assert back[0] == back[1]


def test_the_changelog_writes_the_same_records_through_c_as_through_python() -> None:
    """StateChangelog.begin with the producer's own produce (write_keys in C) and with the
    Python loop: the same records (each in its set's order of the changed keys); str keys
    as UTF-8, a value that is not plain text as a JSON table, a full queue (BufferError)
    waited out and tried again."""
    rng = np.random.default_rng(3)
    stage = StateStage(SPEC)
    stage.codes[7]  # a distinct-only value that is not text: its keys' tables go as JSON
    for p in (0, 1):
        state = stage.partition("in", p)
        for o in range(300):
            key = f"k{rng.integers(0, 40)}" if o % 3 else b"b%d" % rng.integers(0, 40)
            shop = 7 if o == 150 else str(rng.integers(0, 9))
            state.apply(key, o, 1_700_000_000_000 + 500 * o, [float(o), shop])
    plain: list = []
    raw: list = []
    full = {"left": 3, "waits": 0}

    def produce(topic, value, key, partition, on_delivery=None):  # type: ignore[no-untyped-def]
        if full["left"] and len(raw) % 50 == 49:
            full["left"] -= 1
            raise BufferError("queue full")
        assert on_delivery is None  # key records go without a delivery report
        raw.append((topic, value, key, partition))

    def wait() -> None:
        full["waits"] += 1

    copy = StateStage(SPEC)
    copy.codes.update(stage.codes)
    copy.codes.values[:] = stage.codes.values
    for tp, state in stage.partitions.items():
        twin = copy.partition(*tp)
        twin.keys = {k: array("d", v) for k, v in state.keys.items()}
        twin.dirty = {k: twin.keys[k] for k in state.dirty}
        twin.applied, twin.wm = state.applied, state.wm
    StateChangelog(stage, "s", lambda t, v, k, p, d: plain.append((t, v, k, p))).begin()
    order = [
        k if type(k) is bytes else k.encode() for s in copy.partitions.values() for k in s.dirty
    ]
    StateChangelog(copy, "s", lambda *a: None, raw=(produce, wait)).begin()
    assert [k for _t, _v, k, p in plain if k == META_KEY] == [META_KEY, META_KEY]
    plain = [r for r in plain if r[2] != META_KEY]  # both write those through produce
    assert full["waits"] == 3
    assert len(raw) == len(plain) > 60
    assert [k for _t, _v, k, _p in raw] == order  # as its set of changed keys goes
    assert sorted(raw) == sorted(plain)
    assert any(v[12:13] == b"J" for _t, v, _k, _p in raw)  # the JSON table went too
    assert {type(k) for _t, _v, k, _p in raw} == {bytes}


def test_an_expiry_pass_drops_the_same_keys_on_both_paths_at_the_limit() -> None:
    """Keys whose newest event is exactly the horizon behind the partition's event time go
    (at or before the limit), one a millisecond newer stays, on both paths."""
    horizon = SPEC.horizon_ms
    t = 1_700_000_000_000
    cols = (
        [b"at", b"before", b"after", b"now"],
        [t, t - 1, t + 1, t + horizon],
        [0, 1, 2, 3],
        [1.0, 2.0, 3.0, 4.0],
        ["x", "y", "x", "y"],
    )
    states = [PartitionState(SPEC, native=True), PartitionState(SPEC, native=False)]
    for state in states:
        _feed(state, cols, 0, 4, 4)
        assert state.expire() == 2
        assert set(state.keys) == {b"after", b"now"}
        assert state.gone == {b"at", b"before"}
    assert _state_of(states[0]) == _state_of(states[1])


@pytest.mark.parametrize("native", [True, False], ids=["c", "python"])
def test_a_snapshot_counts_its_delivery_reports_on_both_paths(native: bool) -> None:
    """Done once every record is acked after the seal, whichever comes last; the first
    error is kept."""
    early = Snapshot(native)
    early.records = 2
    early.on_delivery(None, None)
    early.on_delivery(None, None)
    assert not early.done  # not sealed: more records may come
    assert early.seal().done and early.error is None

    late = Snapshot(native)
    late.records = 3
    late.on_delivery(None, None)
    assert not late.seal().done
    late.on_delivery(KafkaError(KafkaError._MSG_TIMED_OUT), None)
    assert not late.done
    late.on_delivery(KafkaError(KafkaError._ALL_BROKERS_DOWN), None)
    assert late.done and late.wait(0)
    assert late.error == str(KafkaError(KafkaError._MSG_TIMED_OUT))
    assert Snapshot(native).seal().done  # no records: done at once
