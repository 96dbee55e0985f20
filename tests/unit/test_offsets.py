"""The commit point moves only over offsets whose every output is acknowledged."""

from __future__ import annotations

import threading

from streaming.commit.ledger import OffsetTracker


def test_out_of_order_acks_commit_only_the_contiguous_prefix() -> None:
    tracker = OffsetTracker()
    ledger = tracker.ledger("in", 0)
    for off in (10, 11, 12, 13):
        ledger.register(off)
    ledger.ack(12)
    ledger.ack(13)
    assert tracker.commit_points() == []  # 10 and 11 still out
    ledger.ack(10)
    assert tracker.commit_points() == [("in", 0, 11)]
    ledger.committed = 11
    assert tracker.commit_points() == []  # nothing new since the last commit
    ledger.ack(11)
    assert tracker.commit_points() == [("in", 0, 14)]
    assert tracker.in_flight == 0


def test_gaps_in_offsets_are_fine() -> None:
    # Transaction markers and compaction leave holes: the commit point is the next offset
    # after the last durable one, whatever its number.
    tracker = OffsetTracker()
    ledger = tracker.ledger("in", 3)
    ledger.register(5)
    ledger.register(9)
    ledger.ack(9)
    assert tracker.commit_points() == []
    ledger.ack(5)
    assert tracker.commit_points() == [("in", 3, 10)]


def test_an_offset_with_several_outputs_waits_for_all() -> None:
    tracker = OffsetTracker()
    ledger = tracker.ledger("in", 0)
    ledger.register(0, outputs=2)  # e.g. a prediction and a second output
    ledger.ack(0)
    assert tracker.commit_points() == []
    assert tracker.in_flight == 1
    ledger.ack(0)
    assert tracker.commit_points() == [("in", 0, 1)]


def test_a_failed_delivery_blocks_the_commit_point_for_good() -> None:
    tracker = OffsetTracker()
    ledger = tracker.ledger("in", 0)
    for off in range(3):
        ledger.register(off)
    ledger.ack(0)
    ledger.fail(1)
    ledger.ack(1)  # even a later ack of another output of 1 must not unblock it
    ledger.ack(2)
    assert tracker.commit_points() == [("in", 0, 1)]
    assert ledger.blocked


def test_partitions_are_independent() -> None:
    tracker = OffsetTracker()
    a, b = tracker.ledger("in", 0), tracker.ledger("in", 1)
    a.register(0)
    b.register(0)
    b.ack(0)
    assert tracker.commit_points() == [("in", 1, 1)]


def test_registering_out_of_order_is_refused() -> None:
    tracker = OffsetTracker()
    ledger = tracker.ledger("in", 0)
    ledger.register(5)
    try:
        ledger.register(5)
    except ValueError as exc:
        assert "in order" in str(exc)
    else:
        raise AssertionError("a repeated offset was accepted")


def test_acks_after_revoke_do_not_touch_the_new_assignment() -> None:
    tracker = OffsetTracker()
    old = tracker.ledger("in", 0)
    old.register(0)
    old.register(1)
    tracker.detach({("in", 0)})
    assert tracker.in_flight == 0
    new = tracker.ledger("in", 0)
    assert new is not old
    new.register(0)
    old.ack(0)  # a late delivery report of the previous assignment
    assert tracker.in_flight == 1
    assert tracker.commit_points() == []


def test_in_flight_count_is_exact_under_concurrent_acks() -> None:
    tracker = OffsetTracker()
    ledgers = [tracker.ledger("in", p) for p in range(4)]
    for ledger in ledgers:
        for off in range(5000):
            ledger.register(off)
    assert tracker.in_flight == 20_000

    def ack_all(ledger) -> None:  # type: ignore[no-untyped-def]
        for off in reversed(range(5000)):
            ledger.ack(off)

    threads = [threading.Thread(target=ack_all, args=(lg,)) for lg in ledgers]
    for t in threads:
        t.start()
    assert tracker.wait_drained(10.0)
    for t in threads:
        t.join()
    assert tracker.in_flight == 0
    assert sorted(tracker.commit_points()) == [("in", p, 5000) for p in range(4)]


def test_wait_drained_times_out_while_outputs_are_missing() -> None:
    tracker = OffsetTracker()
    tracker.ledger("in", 0).register(0)
    tracker.ledger("in", 1).register(0)
    tracker.ledger("in", 1).ack(0)
    assert not tracker.wait_drained(0.05)
    assert tracker.wait_drained(0.05, partitions={("in", 1)})
