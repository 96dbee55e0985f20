"""When a dead child may be started again: exponential backoff and a restart budget.

Pure logic with the clock passed in, so it is tested without processes or sleeps.
"""

from __future__ import annotations

from collections import deque

MAX_BACKOFF_S = 30.0


class RestartPolicy:
    """Restarts of the whole pool within a sliding window, and the backoff of each slot.

    Owned by the supervisor's loop (its only reader and writer).
    """

    def __init__(self, budget: int, window_s: float, backoff_s: float) -> None:
        self.budget = budget
        self.window_s = window_s
        self.backoff_s = backoff_s
        self._restarts: deque[float] = deque()
        self._streak: dict[int, tuple[int, float]] = {}

    def allow(self, now: float) -> bool:
        """One more restart fits in the budget (restarts older than the window expire)."""
        while self._restarts and now - self._restarts[0] > self.window_s:
            self._restarts.popleft()
        return len(self._restarts) < self.budget

    def delay(self, slot: int, now: float) -> float:
        """Record a restart of ``slot`` and return how long to wait before it: a child that
        dies again soon after waits twice as long as before."""
        streak, last = self._streak.get(slot, (0, now))
        if now - last > self.window_s:
            streak = 0  # the slot ran a whole window since its last restart: start over
        self._streak[slot] = (streak + 1, now)
        self._restarts.append(now)
        return min(self.backoff_s * 2**streak, max(MAX_BACKOFF_S, self.backoff_s))

    def used(self, now: float) -> int:
        """Restarts counted against the budget right now."""
        self.allow(now)
        return len(self._restarts)
