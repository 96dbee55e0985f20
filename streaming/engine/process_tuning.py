"""The interpreter tuned for a worker: the GIL switch interval and the cyclic garbage collector.

Both are process-wide. The worker owns its process in production; tests and benchmarks run
several workers (and baselines) in one process, so a worker undoes both when it closes.

GIL switch interval: onnxruntime and torch release the GIL while a batch runs; to return, the
inference thread needs it back from the decoding thread and waits up to the interval (Python's
default, 5 ms, is longer than most batches take).

Collector: every event in flight is a few container objects (the validated record and its
fields dict) that live until the prediction is acknowledged, so allocations outrun frees by
tens of thousands at a time. With Python's default young-generation threshold (700) that is a
collection every few hundred events, each promoting the in-flight records, and a full
collection every few seconds that walks every object the imports and the models left behind.
Measured on the fraud pipeline: 0.3 s of collections per 150,000 events, about 15% of the
decoding thread. A high young threshold lets most records die by reference count before any
collection sees them, and freezing what exists after start-up keeps it out of every scan.
Reference counting still frees everything that is not in a cycle at once.
"""

from __future__ import annotations

import gc
import sys
import threading

_lock = threading.Lock()
_holders = 0
"""Workers of this process with their tuning applied: the settings found before the first
are put back when the last one closes, whatever order they close in."""
_found: tuple[float, tuple[int, int, int]] | None = None


class ProcessTuning:
    """Applies the switch interval and the collector settings; undoes both."""

    def __init__(self, switch_interval_ms: float | None, young_threshold: int | None) -> None:
        self._switch_s = None if switch_interval_ms is None else switch_interval_ms / 1000.0
        self._young = young_threshold
        self._applied = False

    def apply(self) -> None:
        """Call once the models are loaded and warm: what exists then lives as long as the
        process, and freezing it keeps it out of every later collection. Idempotent."""
        global _holders, _found
        if self._applied or (self._switch_s is None and self._young is None):
            return
        with _lock:
            if _holders == 0:
                _found = (sys.getswitchinterval(), gc.get_threshold())
            _holders += 1
            self._applied = True
            if self._switch_s is not None:
                sys.setswitchinterval(self._switch_s)
            if self._young is not None:
                gc.collect()
                gc.freeze()
                gc.set_threshold(self._young, *gc.get_threshold()[1:])

    def restore(self) -> None:
        """Back to the settings found, once no other worker of the process still runs."""
        global _holders, _found
        if not self._applied:
            return
        with _lock:
            self._applied = False
            _holders -= 1
            if _holders == 0 and _found is not None:
                switch, thresholds = _found
                sys.setswitchinterval(switch)
                gc.set_threshold(*thresholds)
                gc.unfreeze()
                _found = None
