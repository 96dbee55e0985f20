"""The worker's collector tuning takes effect and is undone (several workers share a process
in tests and benchmarks)."""

from __future__ import annotations

import gc

from streaming.collector import CollectorTuning


def test_apply_raises_the_young_threshold_and_freezes_the_heap_then_restore_undoes_it() -> None:
    before = gc.get_threshold()
    frozen_before = gc.get_freeze_count()
    tuning = CollectorTuning(50_000)
    tuning.apply()
    try:
        assert gc.get_threshold() == (50_000, before[1], before[2])
        assert gc.get_freeze_count() > frozen_before
        tuning.apply()  # a second apply must not save the tuned values as the originals
    finally:
        tuning.restore()
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0


def test_none_leaves_the_collector_alone() -> None:
    before = gc.get_threshold()
    tuning = CollectorTuning(None)
    tuning.apply()
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0
    tuning.restore()
    assert gc.get_threshold() == before
