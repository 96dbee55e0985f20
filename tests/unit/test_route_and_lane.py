"""Routing by weight, sticky by key; the lane keeps order and caps batch size."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from streaming.engine.batching import BatchPolicy
from streaming.engine.lane import Lane
from streaming.engine.route import Router
from streaming.engine.types import Chunk

KEYS = [f"card-{i}".encode() for i in range(20_000)]


def test_split_follows_weights_within_binomial_tolerance() -> None:
    router = Router(["v1", "v2"], {"v1": 90, "v2": 10})
    share = float((router.route(KEYS) == 1).mean())
    # 4 standard deviations of a binomial(20000, 0.1) share
    assert abs(share - 0.10) < 4 * (0.1 * 0.9 / len(KEYS)) ** 0.5


def test_sticky_and_minimal_movement_when_a_canary_grows() -> None:
    before = Router(["v1", "v2"], {"v1": 90, "v2": 10}).route(KEYS)
    assert np.array_equal(before, Router(["v1", "v2"], {"v1": 90, "v2": 10}).route(KEYS))
    after = Router(["v1", "v2"], {"v1": 80, "v2": 20}).route(KEYS)
    moved = before != after
    assert 0.08 < moved.mean() < 0.12
    assert (after[moved] == 1).all()  # only towards the canary


def test_weights_are_checked() -> None:
    with pytest.raises(ValueError, match="unknown version"):
        Router(["v1"], {"v9": 1})
    with pytest.raises(ValueError, match="every weight is 0"):
        Router(["v1", "v2"], {"v1": 0, "v2": 0})


def chunk(start: int, n: int) -> Chunk:
    ids = [str(i) for i in range(start, start + n)]
    return Chunk(
        np.arange(start, start + n, dtype=np.float32).reshape(n, 1),
        ids,
        [0] * n,
        [None] * n,
        [b""] * n,
        [None] * n,
        [None] * n,
        list(range(n)),
        0.0,
    )  # type: ignore[list-item]


def test_lane_caps_batches_and_keeps_order() -> None:
    lane = Lane(BatchPolicy(max_batch_size=4, max_delay_s=0.0))
    lane.put(chunk(0, 3))
    lane.put(chunk(3, 3))
    first = lane.take()
    assert first is not None
    assert [i for c in first for i in c.event_ids] == ["0", "1", "2", "3"]
    assert lane.queued_rows == 2
    second = lane.take()
    assert second is not None
    assert [i for c in second for i in c.event_ids] == ["4", "5"]
    assert second[0].features[:, 0].tolist() == [4.0, 5.0]
    assert lane.take(timeout=0.01) == []
    lane.close()
    assert lane.take() is None


def test_take_returns_as_soon_as_something_is_queued() -> None:
    lane = Lane(BatchPolicy(max_batch_size=256, max_delay_s=0.0))
    got: list[list[Chunk] | None] = []
    t = threading.Thread(target=lambda: got.append(lane.take(timeout=5)))
    t.start()
    lane.put(chunk(0, 1))
    t.join(timeout=1)
    assert not t.is_alive()
    assert got and got[0] is not None and len(got[0][0]) == 1


def test_the_feeding_thread_claims_the_scoring_turn_only_when_nothing_is_ahead() -> None:
    lane = Lane(BatchPolicy(max_batch_size=8, max_delay_s=0.0))
    assert lane.claim()  # empty and idle: the feeding thread may score its chunk itself
    assert not lane.claim()  # one turn
    lane.release()
    lane.put(chunk(0, 2))
    assert not lane.claim()  # a queued chunk would be overtaken
    batch = lane.take(timeout=0)
    assert batch
    assert not lane.claim()  # the inference thread holds the turn until it releases it
    lane.release()
    assert lane.claim()
    lane.release()
    lane.close()
    assert not lane.claim()


def test_a_take_waits_for_the_feeding_threads_chunk_to_be_scored() -> None:
    lane = Lane(BatchPolicy(max_batch_size=8, max_delay_s=0.0))
    assert lane.claim()
    got: list[list[Chunk] | None] = []
    t = threading.Thread(target=lambda: got.append(lane.take(timeout=0.01)))
    t.start()
    t.join(timeout=0.3)
    assert t.is_alive() and not got  # its timeout passed, but the turn is not its yet
    lane.release()
    t.join(timeout=5)
    assert got == [[]]
    assert not lane.claim()  # the taker holds the turn now
