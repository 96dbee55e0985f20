"""The worker's interpreter tuning takes effect and is undone (several workers share a process
in tests and benchmarks)."""

from __future__ import annotations

import gc
import sys

from streaming.engine.process_tuning import ProcessTuning


def test_apply_sets_both_knobs_and_freezes_the_heap_then_restore_undoes_it() -> None:
    thresholds, switch = gc.get_threshold(), sys.getswitchinterval()
    frozen_before = gc.get_freeze_count()
    tuning = ProcessTuning(0.2, 50_000)
    tuning.apply()
    try:
        assert gc.get_threshold() == (50_000, thresholds[1], thresholds[2])
        assert abs(sys.getswitchinterval() - 0.0002) < 1e-9
        assert gc.get_freeze_count() > frozen_before
        tuning.apply()  # a second apply must not save the tuned values as the originals
    finally:
        tuning.restore()
    assert gc.get_threshold() == thresholds
    assert sys.getswitchinterval() == switch
    assert gc.get_freeze_count() == 0


def test_none_leaves_the_interpreter_alone() -> None:
    thresholds, switch = gc.get_threshold(), sys.getswitchinterval()
    tuning = ProcessTuning(None, None)
    tuning.apply()
    assert gc.get_threshold() == thresholds
    assert sys.getswitchinterval() == switch
    assert gc.get_freeze_count() == 0
    tuning.restore()
    assert gc.get_threshold() == thresholds


def test_workers_closing_in_any_order_leave_the_settings_found() -> None:
    thresholds, switch = gc.get_threshold(), sys.getswitchinterval()
    first, second = ProcessTuning(0.2, 50_000), ProcessTuning(0.2, 50_000)
    first.apply()
    second.apply()
    first.restore()
    try:
        assert gc.get_threshold()[0] == 50_000  # the second worker still runs
        assert gc.get_freeze_count() > 0
    finally:
        second.restore()
    assert gc.get_threshold() == thresholds
    assert sys.getswitchinterval() == switch
    assert gc.get_freeze_count() == 0
