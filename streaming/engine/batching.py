"""When to run the model, and on how many rows: the dynamic batching policy.

The policy is a pure function of the queue (rows waiting, the oldest row's age, the recent
arrival rate) and the clock, so it is tested with a fake clock; ``Lane`` (streaming.engine.lane)
applies it with real time.

It is asked only when the model is idle. Its rules, in order:

1. A full batch (``max_batch_size``) is taken at once.
2. Rows older than ``deadline_ms`` are taken at once (scored or dead-lettered, by policy).
3. Once the oldest row has waited ``max_delay_ms``, everything queued is taken.
4. If enough rows wait for a preferred batch size, the largest such size is taken: runtimes
   are warmed (and, on cuda, graph-captured) at exactly those sizes.
5. Otherwise wait for company only if the recent arrival rate says the next preferred size
   (or the full batch) will fill before the delay runs out; else take what is there now.
   Under light load an event thus waits for nobody; under heavy load batches fill.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class BatchPolicy:
    max_batch_size: int
    max_delay_s: float
    preferred_sizes: tuple[int, ...] = ()
    deadline_s: float | None = None

    def __post_init__(self) -> None:
        if self.max_batch_size < 1:
            raise ValueError("max_batch_size must be >= 1")
        if self.max_delay_s < 0:
            raise ValueError("max_delay_ms must be >= 0")
        if any(p < 1 or p > self.max_batch_size for p in self.preferred_sizes):
            raise ValueError(
                f"preferred_batch_sizes must lie in 1..max_batch_size ({self.max_batch_size})"
            )
        if self.deadline_s is not None and self.deadline_s <= 0:
            raise ValueError("deadline_ms must be > 0")
        object.__setattr__(self, "preferred_sizes", tuple(sorted(set(self.preferred_sizes))))


@dataclass(frozen=True, slots=True)
class Decision:
    """Take ``take`` rows now (``take`` > 0), or wait until ``wait_until`` (clock time)."""

    take: int
    wait_until: float | None = None
    reason: str = ""


def decide(
    policy: BatchPolicy, queued: int, oldest_enqueued: float, now: float, arrival_rate: float
) -> Decision:
    """The next step for an idle model with ``queued`` rows waiting (see the module doc)."""
    if queued <= 0:
        return Decision(0, None, "empty")
    cap = policy.max_batch_size
    if queued >= cap:
        return Decision(cap, reason="full")
    waited = now - oldest_enqueued
    if policy.deadline_s is not None and waited >= policy.deadline_s:
        return Decision(queued, reason="deadline")
    if waited >= policy.max_delay_s:
        return Decision(queued, reason="delay")
    fitting = [p for p in policy.preferred_sizes if p <= queued]
    if fitting and fitting[-1] == queued:
        return Decision(queued, reason="preferred")
    target = next((p for p in policy.preferred_sizes if p > queued), cap)
    remaining = policy.max_delay_s - waited
    if arrival_rate > 0:
        needed = (target - queued) / arrival_rate
        if needed <= remaining:
            return Decision(0, now + needed, "filling")
    if fitting:
        return Decision(fitting[-1], reason="preferred")
    return Decision(queued, reason="idle")


class ArrivalRate:
    """Exponentially weighted rows/s of recent arrivals (time constant ``tau_s``)."""

    __slots__ = ("_last", "_tau", "rate")

    def __init__(self, tau_s: float = 0.05) -> None:
        self._tau = tau_s
        self._last: float | None = None
        self.rate = 0.0

    def observe(self, rows: int, now: float) -> None:
        if self._last is None:
            self._last = now
            return
        dt = max(now - self._last, 1e-6)
        self._last = now
        alpha = 1.0 - math.exp(-dt / self._tau)
        self.rate += alpha * (rows / dt - self.rate)

    def current(self, now: float) -> float:
        """The rate, decayed for the silence since the last arrival."""
        if self._last is None:
            return 0.0
        return self.rate * math.exp(-max(0.0, now - self._last) / self._tau)
