"""The dynamic batching policy with a fake clock: size, delay, preferred sizes, deadlines."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from streaming.engine.batching import ArrivalRate, BatchPolicy, decide
from streaming.engine.lane import Lane
from streaming.engine.types import Chunk

POLICY = BatchPolicy(max_batch_size=256, max_delay_s=0.004, preferred_sizes=(8, 32, 128))


def test_a_full_batch_goes_at_once() -> None:
    assert decide(POLICY, 300, oldest_enqueued=10.0, now=10.0, arrival_rate=1e9).take == 256


def test_light_load_waits_for_nobody() -> None:
    # One event, arrivals slow: waiting for a batch of 8 would take longer than the delay.
    d = decide(POLICY, 1, oldest_enqueued=10.0, now=10.0, arrival_rate=100.0)
    assert d.take == 1 and d.reason == "idle"


def test_heavy_load_waits_just_long_enough_to_fill_the_next_preferred_size() -> None:
    # 20 queued at 50k rows/s: 12 more for a batch of 32 take 0.24 ms < the 4 ms delay.
    d = decide(POLICY, 20, oldest_enqueued=10.0, now=10.0, arrival_rate=50_000.0)
    assert d.take == 0 and d.wait_until == pytest.approx(10.0 + 12 / 50_000.0)


def test_when_the_next_size_cannot_fill_in_time_take_the_largest_preferred_that_fits() -> None:
    d = decide(POLICY, 40, oldest_enqueued=10.0, now=10.0, arrival_rate=1_000.0)
    assert d.take == 32 and d.reason == "preferred"


def test_an_exact_preferred_size_goes_at_once() -> None:
    assert decide(POLICY, 32, oldest_enqueued=10.0, now=10.0, arrival_rate=1e6).take == 32


def test_max_delay_bounds_the_wait_whatever_the_rate() -> None:
    d = decide(POLICY, 20, oldest_enqueued=10.0, now=10.0 + 0.0041, arrival_rate=50_000.0)
    assert d.take == 20 and d.reason == "delay"


def test_deadline_takes_old_rows_at_once() -> None:
    p = BatchPolicy(max_batch_size=256, max_delay_s=1.0, preferred_sizes=(64,), deadline_s=0.01)
    d = decide(p, 3, oldest_enqueued=10.0, now=10.02, arrival_rate=1e9)
    assert d.take == 3 and d.reason == "deadline"


def test_the_policy_refuses_nonsense() -> None:
    with pytest.raises(ValueError, match="preferred_batch_sizes"):
        BatchPolicy(max_batch_size=16, max_delay_s=0.001, preferred_sizes=(32,))
    with pytest.raises(ValueError, match="max_batch_size"):
        BatchPolicy(max_batch_size=0, max_delay_s=0.001)


def test_arrival_rate_tracks_and_decays() -> None:
    r = ArrivalRate(tau_s=0.05)
    t = 0.0
    for _ in range(200):
        t += 0.001
        r.observe(10, t)  # 10 rows per ms = 10k rows/s
    assert r.current(t) == pytest.approx(10_000, rel=0.05)
    assert r.current(t + 0.5) < 1.0  # silence: the rate fades, nobody waits for it


class FakeClock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def make_chunk(start: int, n: int, enqueued: float) -> Chunk:
    ids = [str(i) for i in range(start, start + n)]
    return Chunk(
        np.arange(start, start + n, dtype=np.float32).reshape(n, 1),
        ids,
        [0] * n,
        [f"k{i % 3}".encode() for i in range(start, start + n)],
        [b""] * n,
        [None] * n,
        [None] * n,
        list(range(start, start + n)),
        enqueued,
    )  # type: ignore[list-item]


def test_lane_splits_at_a_preferred_size_and_keeps_order_per_key() -> None:
    clock = FakeClock()
    lane = Lane(BatchPolicy(max_batch_size=64, max_delay_s=0.0, preferred_sizes=(16,)), clock=clock)
    lane.put(make_chunk(0, 20, clock.t))
    lane.put(make_chunk(20, 20, clock.t))
    sizes, ids = [], []
    while lane.queued_rows:
        batch = lane.take(timeout=0)
        assert batch
        sizes.append(sum(len(c) for c in batch))
        ids += [i for c in batch for i in c.event_ids]
    assert sizes == [40]  # delay 0: everything queued goes, up to the max
    assert ids == [str(i) for i in range(40)]  # no row lost, none duplicated, order kept

    lane2 = Lane(
        BatchPolicy(max_batch_size=64, max_delay_s=1.0, preferred_sizes=(16,)), clock=clock
    )
    lane2.put(make_chunk(0, 20, clock.t))
    first = lane2.take(timeout=0)
    assert first and sum(len(c) for c in first) == 16  # the preferred size, not 20
    rest = lane2.take(timeout=0)
    assert rest and [i for c in rest for i in c.event_ids] == [str(i) for i in range(16, 20)]


def test_lane_put_blocks_while_the_queue_is_full() -> None:
    lane = Lane(BatchPolicy(max_batch_size=8, max_delay_s=0.0), max_queued=10)
    assert lane.put(make_chunk(0, 8, 0.0))
    assert not lane.put(make_chunk(8, 8, 0.0), timeout=0.01)  # 16 > 10: refused in time
    done = threading.Event()
    t = threading.Thread(target=lambda: (lane.put(make_chunk(8, 8, 0.0)), done.set()))
    t.start()
    assert not done.wait(0.05)
    lane.take(timeout=0)  # frees room
    assert done.wait(1.0)
    t.join()


def test_closed_lane_hands_out_the_rest_without_waiting() -> None:
    clock = FakeClock()
    lane = Lane(
        BatchPolicy(max_batch_size=64, max_delay_s=10.0, preferred_sizes=(32,)), clock=clock
    )
    lane.put(make_chunk(0, 5, clock.t))
    lane.close()
    batch = lane.take(timeout=0)
    assert batch and sum(len(c) for c in batch) == 5
    assert lane.take() is None
