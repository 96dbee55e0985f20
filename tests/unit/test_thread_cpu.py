"""Per-thread CPU from /proc, as loadtests.efficiency --threads reports it."""

from __future__ import annotations

import os
import threading
import time

import pytest

from loadtests.thread_cpu import ThreadSampler, ThreadTimes, describe, medians, per_event, snapshot
from streaming.observability.threads import named_thread


def test_a_busy_named_thread_is_charged_its_cpu() -> None:
    """The thread spins until it has used 60 ms of its own CPU (however busy the machine),
    then waits, alive, to be read: its share is at least that, less one 10 ms clock tick."""
    pid = os.getpid()
    spun, release = threading.Event(), threading.Event()

    def spin() -> None:
        start = time.thread_time()
        while time.thread_time() - start < 0.06:
            pass
        spun.set()
        release.wait(30)

    before = snapshot(pid)
    t = named_thread(spin, "spin")
    t.start()
    try:
        assert spun.wait(30)
        shares = per_event(before, snapshot(pid), events=1)
    finally:
        release.set()
        t.join(10)
    assert "main" in shares
    assert shares["spin"].cpu_us >= 0.05 * 1e6


def test_threads_are_grouped_by_name_and_counted_from_zero_when_born_in_between() -> None:
    pid = 100
    before = {
        100: ThreadTimes("main", 1.0, 10, 1),
        101: ThreadTimes("rdk:broker", 0.5, 5, 0),
    }
    after = {
        100: ThreadTimes("main", 1.5, 20, 1),
        101: ThreadTimes("rdk:broker", 0.7, 9, 2),
        102: ThreadTimes("rdk:broker", 0.1, 3, 0),  # born in between
        103: ThreadTimes("delivery", 0.05, 50, 0),
    }
    shares = per_event(before, after, events=1000)
    assert list(shares) == ["main", "rdk:broker", "delivery"]  # largest CPU first
    assert shares["main"].cpu_us == pytest.approx(500.0)
    assert shares["rdk:broker"].cpu_us == pytest.approx(300.0)
    assert shares["rdk:broker"].voluntary == pytest.approx(0.007)
    assert shares["rdk:broker"].involuntary == pytest.approx(0.002)
    assert shares["delivery"].voluntary == pytest.approx(0.05)
    assert describe(shares, min_us=100) == "main 500.0 (0.01 sw), rdk:broker 300.0 (0.01 sw)"
    assert pid == 100


def test_medians_count_a_missing_thread_as_zero() -> None:
    a = per_event({}, {1: ThreadTimes("main", 3e-3, 0, 0), 2: ThreadTimes("x", 1e-3, 0, 0)}, 1)
    b = per_event({}, {1: ThreadTimes("main", 1e-3, 0, 0)}, 1)
    c = per_event({}, {1: ThreadTimes("main", 2e-3, 0, 0), 2: ThreadTimes("x", 4e-3, 0, 0)}, 1)
    assert medians([a, b, c]) == "main 2000.0, x 1000.0"


def test_the_sampler_keeps_the_last_snapshot_taken_while_every_first_thread_lived() -> None:
    """As with a passthrough that exits once done: a thread of the first snapshot ends, the
    sampler stops on its own, and its last snapshot still holds what that thread spent."""
    go, spun, release = threading.Event(), threading.Event(), threading.Event()

    def spin() -> None:
        go.wait(30)
        start = time.thread_time()
        while time.thread_time() - start < 0.06:
            pass
        spun.set()
        release.wait(30)

    t = named_thread(spin, "spin")
    t.start()
    sampler = ThreadSampler(os.getpid(), every_s=0.01)  # its first snapshot: before the spin
    sampler.start()
    go.set()
    try:
        assert spun.wait(30)
        time.sleep(0.1)  # a few snapshots after the spin
    finally:
        release.set()
        t.join(10)
    sampler.join(5)
    assert not sampler.is_alive()  # stopped by itself once "spin" was gone
    first, last = sampler.stop()
    assert t.native_id in first and t.native_id in last
    assert per_event(first, last, events=1)["spin"].cpu_us >= 0.05 * 1e6
